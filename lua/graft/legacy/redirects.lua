-- Redirects, the Lua twin (the Rust one is
-- modules/redirects; the two must decide alike, rule for rule):
-- exact rules win over prefix rules, the longest prefix wins, a prefix rule
-- matches whole segments only (the path is "from", or goes on past it with
-- "/", or "from" ends in "/"), a prefix rule carries the rest of the path
-- over, joined to the target's path (before its first "?" or "#") with
-- exactly one "/" (the rest's leading slashes dropped, one put back unless the
-- target's path ends in "/"), the query is kept unless the rule says "drop",
-- and what is carried over is percent-encoded. So the rest never extends the
-- target's host nor starts a new one ("//"). Prefix targets whose host would
-- not end where the path joins are refused at load, by the Rust validation
-- every configuration goes through.

local contract = require "graft.contract"

local byte = string.byte
local find = string.find
local format = string.format
local gsub = string.gsub
local sub = string.sub
local sort = table.sort
local ipairs = ipairs
local pairs = pairs
local setmetatable = setmetatable

local CONTINUE = contract.CONTINUE
local SLASH = byte("/")

local _M = { version = "0.1.0" }
local mt = { __index = _M }

-- Bytes that may not stand in a Location as they are.
local UNSAFE_IN_PATH = "[%z\1-\32\127-\255\"#%%<>%?%[\\%]%^`{|}]"
local UNSAFE_IN_QUERY = "[%z\1-\32\127-\255\"<>%[\\%]%^`{|}]"

local function hex(c)
    return format("%%%02X", byte(c))
end

function _M.new(conf)
    local exact, prefix, lengths, seen = {}, {}, {}, {}
    local bulk = conf.bulk
    if bulk then
        local status, keep = bulk.status or 301, bulk.query ~= "drop"
        for from, to in pairs(bulk.map) do
            exact[from] = {
                to = to, status = status, keep_query = keep,
                target_has_query = find(to, "?", 1, true) ~= nil,
            }
        end
    end
    for _, rule in ipairs(conf.rules or {}) do
        local to = rule.to
        -- Where a prefix rule's carried path goes: the end of the target's path.
        local path_end = find(to, "[?#]") or #to + 1
        local to_path = sub(to, 1, path_end - 1)
        local r = {
            to = to,
            status = rule.status or 301,
            keep_query = rule.query ~= "drop",
            target_has_query = find(to, "?", 1, true) ~= nil,
            to_path = to_path,
            to_tail = sub(to, path_end),
            to_path_has_slash = byte(to_path, -1) == SLASH,
        }
        local from = rule.from
        if rule.match == "prefix" then
            prefix[from] = r
            if not seen[#from] then
                seen[#from] = true
                lengths[#lengths + 1] = #from
            end
        else
            exact[from] = r
        end
    end
    sort(lengths, function(a, b) return a > b end)
    return setmetatable({ exact = exact, prefix = prefix, lengths = lengths }, mt)
end

function _M.on_request(self, req)
    local path = req.path
    local rule, rest = self.exact[path], ""
    if not rule then
        local prefix, lengths, n = self.prefix, self.lengths, #path
        for i = 1, #lengths do
            local len = lengths[i]
            -- Whole segments only: "/go" is no prefix of "/go.evil.com".
            if len <= n
                and (len == n or byte(path, len) == SLASH or byte(path, len + 1) == SLASH)
            then
                rule = prefix[sub(path, 1, len)]
                if rule then
                    rest = sub(path, len + 1)
                    break
                end
            end
        end
        if not rule then
            return CONTINUE
        end
    end

    local location = rule.to
    if rest ~= "" then
        -- The rest joins the target's path with exactly one "/", so it can
        -- neither extend the target's host nor start with "//".
        local first = find(rest, "[^/]")
        local segments = first and sub(rest, first) or ""
        location = rule.to_path .. (rule.to_path_has_slash and "" or "/")
            .. (gsub(segments, UNSAFE_IN_PATH, hex)) .. rule.to_tail
    end
    if rule.keep_query then
        local query = req.query
        if query then
            location = location .. (rule.target_has_query and "&" or "?")
                .. gsub(query, UNSAFE_IN_QUERY, hex)
        end
    end
    return { kind = "respond", status = rule.status, headers = { { "Location", location } }, body = "" }
end

return _M
