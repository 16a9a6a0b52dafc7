-- request_log, the Lua twin (the Rust one is
-- modules/request_log): one JSON line per request in the log phase, the
-- configured fields in order, sampled by an FNV-1a hash of method, target
-- and client, each text cut to max_value_bytes and written with every
-- byte outside printable ASCII as \u00XX, at most max_per_second records
-- a second in each worker. Byte for byte what the Rust side writes.
-- Plain Lua but for LuaJIT's bit library.
local bit = require "bit"

local band = bit.band
local bxor = bit.bxor
local lshift = bit.lshift
local tobit = bit.tobit
local byte = string.byte
local concat = table.concat
local format = string.format
local sub = string.sub
local lower = string.lower
local tostring = tostring
local ipairs = ipairs
local setmetatable = setmetatable

local _M = { version = "0.1.0" }
local mt = { __index = _M }

local KNOWN = {
    time = true, zone = true, host = true, method = true, path = true, query = true,
    status = true, bytes_sent = true, client = true,
}

function _M.new(conf)
    local fields = {}
    for i, name in ipairs(conf.fields or {}) do
        local header = name:match("^header:(.+)$")
        if not KNOWN[name] and not header then
            return nil, "fields[" .. (i - 1) .. "]: unknown field " .. tostring(name)
        end
        fields[i] = { name = name, header = header and lower(header) }
    end
    return setmetatable({
        path = conf.path,
        fields = fields,
        sample_ppm = math.floor((conf.sample or 1) * 1000000 + 0.5),
        -- This server's sampling key, handed over by the Rust side
        -- (graft_request_log::sample_key): no client can choose to be
        -- recorded, and both sides choose the same requests.
        sample_key = conf.sample_key or "",
        max_value_bytes = conf.max_value_bytes or 512,
        max_per_second = conf.max_per_second or 1000,
        second = 0,
        written = 0,
    }, mt)
end

-- FNV-1a, 32 bits, unsigned (graft_request_log::fnv1a).
function _M.fnv1a(s)
    local h = tobit(0x811c9dc5)
    for i = 1, #s do
        h = bxor(h, byte(s, i))
        -- h * 0x01000193 mod 2^32, as h * 0x193 + h * 2^24.
        h = tobit(band(h, 0xffffffff) % 4294967296 * 403 % 4294967296 + lshift(h, 24))
    end
    if h < 0 then
        h = h + 4294967296
    end
    return h
end

local function sampled(self, req)
    if self.sample_ppm >= 1000000 then
        return true
    end
    local key = self.sample_key .. " " .. (req.method or "") .. " " .. (req.raw_uri or "") .. " "
                .. (req.client or "")
    return _M.fnv1a(key) % 1000000 < self.sample_ppm
end

local function text(out, s, max)
    s = sub(s, 1, max)
    out[#out + 1] = '"'
    for i = 1, #s do
        local b = byte(s, i)
        if b == 34 then
            out[#out + 1] = '\\"'
        elseif b == 92 then
            out[#out + 1] = "\\\\"
        elseif b >= 32 and b <= 126 then
            out[#out + 1] = sub(s, i, i)
        else
            out[#out + 1] = format("\\u%04x", b)
        end
    end
    out[#out + 1] = '"'
end

-- The record of a request (req as graft.request gives it; done: zone,
-- status, bytes_sent, time).
function _M.record(self, req, done)
    local out = { "{" }
    local max = self.max_value_bytes
    for i, f in ipairs(self.fields) do
        if i > 1 then
            out[#out + 1] = ","
        end
        text(out, f.name, #f.name)
        out[#out + 1] = ":"
        local name = f.name
        local v
        if name == "time" or name == "status" or name == "bytes_sent" then
            out[#out + 1] = format("%d", done[name])
        else
            if f.header then
                v = req:header(f.header)
            elseif name == "zone" then
                v = done.zone
            else
                v = req[name]
            end
            if v == nil then
                out[#out + 1] = "null"
            else
                text(out, v, max)
            end
        end
    end
    out[#out + 1] = "}"
    return concat(out)
end

-- The request phase: nothing to decide.
function _M.on_request()
    return { kind = "continue" }
end

-- The log phase: nil (not sampled), or { kind = "write", path, line }, or
-- { kind = "dropped", line } over the rate.
function _M.on_log(self, req, done)
    if not sampled(self, req) then
        return nil
    end
    local line = self:record(req, done)
    if self.second ~= done.time then
        self.second = done.time
        self.written = 0
    end
    if self.written >= self.max_per_second then
        return { kind = "dropped", line = line }
    end
    self.written = self.written + 1
    return { kind = "write", path = self.path, line = line }
end

return _M
