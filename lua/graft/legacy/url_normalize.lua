-- url_normalize, the Lua twin (the Rust one is
-- modules/url_normalize): decode the path the client sent exactly once,
-- refuse encoded NUL/CR/LF and bad encodings with 400, resolve "." and
-- "..", merge slashes, and hand the result to the modules after it.

local char = string.char
local find = string.find
local gsub = string.gsub
local sub = string.sub
local concat = table.concat
local tonumber = tonumber
local setmetatable = setmetatable

local _M = { version = "0.1.0" }
local mt = { __index = _M }

local CONTINUE = require("graft.contract").CONTINUE

local function bad(reason)
    return { kind = "respond", status = 400, headers = {}, body = "", log = { "bad path: " .. reason } }
end

function _M.new(conf)
    return setmetatable({ merge_slashes = conf.merge_slashes ~= false }, mt)
end

local function unhex(h)
    return char(tonumber(h, 16))
end

function _M.on_request(self, req)
    local raw = req.raw_uri
    local q = find(raw, "?", 1, true)
    if q then
        raw = sub(raw, 1, q - 1)
    end
    if sub(raw, 1, 1) ~= "/" then
        return CONTINUE
    end

    -- Every "%" must start a two-digit hex escape.
    local pos = find(raw, "%", 1, true)
    while pos do
        if not find(raw, "^%x%x", pos + 1) then
            return bad("invalid percent-encoding")
        end
        pos = find(raw, "%", pos + 3, true)
    end
    local decoded = gsub(raw, "%%(%x%x)", unhex)
    if find(decoded, "[%z\r\n]") then
        return bad("encoded NUL, CR or LF")
    end

    local out, n = {}, 0
    local trailing = false
    local merge = self.merge_slashes
    local start = 2
    while true do
        local slash = find(decoded, "/", start, true)
        local seg = sub(decoded, start, slash and slash - 1 or -1)
        local last = slash == nil
        if seg == "" then
            if last then
                trailing = true
            elseif not merge then
                n = n + 1
                out[n] = ""
            end
        elseif seg == "." then
            trailing = trailing or last
        elseif seg == ".." then
            if n == 0 then
                return bad("\"..\" above the root")
            end
            out[n] = nil
            n = n - 1
            trailing = trailing or last
        else
            n = n + 1
            out[n] = seg
        end
        if last then
            break
        end
        start = slash + 1
    end

    local path = "/" .. concat(out, "/", 1, n)
    if trailing and n > 0 then
        path = path .. "/"
    end
    if path == req.path then
        return CONTINUE
    end
    return { kind = "continue", uri = path }
end

return _M
