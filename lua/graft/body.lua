-- graft.body: request bodies as Lua twins read them, the Lua twin of
-- graft_contract::body (modules/contract/src/body.rs), byte for byte: the
-- decoding a Content-Type calls for, and every string of a JSON body,
-- scanned rather than parsed (no recursion whatever the nesting; a cut or
-- broken document is read as far as it goes). Plain Lua: no ngx, so the
-- parity tests run it in LuaJIT alone; only decode, for a WAF that opts
-- in to decompression, calls the module (graft_ffi_decode), in nginx.
local byte = string.byte
local char = string.char
local find = string.find
local gmatch = string.gmatch
local lower = string.lower
local match = string.match
local sub = string.sub
local tonumber = tonumber
local tostring = tostring
local type = type
local require = require
local concat = table.concat
local floor = math.floor

local _M = {}

-- "form", "json" or "other", for a Content-Type value (or nil).
function _M.kind(content_type)
    if not content_type then
        return "other"
    end
    local media = lower(match(content_type, "^[^;]*"))
    media = match(media, "^[ \t\n\f\r]*(.-)[ \t\n\f\r]*$")
    if media == "application/x-www-form-urlencoded" then
        return "form"
    end
    if media == "application/json" or (sub(media, -5) == "+json" and find(media, "/", 1, true)) then
        return "json"
    end
    return "other"
end

local function utf8(c)
    if c < 0x80 then
        return char(c)
    elseif c < 0x800 then
        return char(0xC0 + floor(c / 0x40), 0x80 + c % 0x40)
    elseif c < 0x10000 then
        return char(0xE0 + floor(c / 0x1000), 0x80 + floor(c / 0x40) % 0x40, 0x80 + c % 0x40)
    end
    return char(0xF0 + floor(c / 0x40000), 0x80 + floor(c / 0x1000) % 0x40,
                0x80 + floor(c / 0x40) % 0x40, 0x80 + c % 0x40)
end

local function hex4(s, i)
    local h = sub(s, i, i + 3)
    if #h < 4 or not find(h, "^%x%x%x%x$") then
        return nil
    end
    return tonumber(h, 16)
end

local SIMPLE = { b = "\8", f = "\12", n = "\n", r = "\r", t = "\t" }
local FFFD = "\239\191\189"

-- Every string of a JSON document, decoded, in order (a list).
function _M.json_strings(s)
    local out = {}
    local n = #s
    local i = 1
    while true do
        local q = find(s, '"', i, true)
        if not q then
            break
        end
        i = q + 1
        local parts = {}
        while i <= n do
            local stop = find(s, '["\\]', i)
            if not stop then
                parts[#parts + 1] = sub(s, i)
                i = n + 1
                break
            end
            parts[#parts + 1] = sub(s, i, stop - 1)
            i = stop
            if byte(s, i) == 34 then -- '"'
                i = i + 1
                break
            end
            -- a backslash
            if i + 1 > n then
                i = i + 1 -- a lone `\` at the very end of a cut document
                break
            end
            local e = sub(s, i + 1, i + 1)
            i = i + 2
            if SIMPLE[e] then
                parts[#parts + 1] = SIMPLE[e]
            elseif e == "u" then
                local c = hex4(s, i)
                if c == nil then
                    parts[#parts + 1] = "u"
                elseif c >= 0xD800 and c <= 0xDBFF then
                    i = i + 4
                    local lo
                    if sub(s, i, i + 1) == "\\u" then
                        lo = hex4(s, i + 2)
                        if lo and (lo < 0xDC00 or lo > 0xDFFF) then
                            lo = nil
                        end
                    end
                    if lo then
                        i = i + 6
                        parts[#parts + 1] = utf8(0x10000 + (c - 0xD800) * 0x400 + (lo - 0xDC00))
                    else
                        parts[#parts + 1] = FFFD
                    end
                else
                    i = i + 4
                    if c >= 0xDC00 and c <= 0xDFFF then
                        parts[#parts + 1] = FFFD
                    else
                        parts[#parts + 1] = utf8(c)
                    end
                end
            else
                parts[#parts + 1] = e
            end
        end
        out[#out + 1] = concat(parts)
    end
    return out
end

local function trim(v)
    return match(v, "^[ \t]*(.-)[ \t]*$")
end

local function is_token(v)
    return v ~= "" and not find(v, "[^%w!#$%%&'*+%-.^_`|~]")
end

-- Charsets whose bytes below 0x80 are ASCII (graft_contract's
-- ascii_compatible).
local function ascii_compatible(c)
    c = lower(c)
    if c == "utf-8" or c == "utf8" or c == "us-ascii" or c == "ascii" or c == "latin1"
        or c == "iso-8859-1" then
        return true
    end
    return find(c, "^iso%-8859%-%d%d?$") ~= nil or find(c, "^windows%-125%d$") ~= nil
end

local function content_type_undecidable(ct)
    local media = trim(match(ct, "^[^;]*"))
    local slash = find(media, "/", 1, true)
    if not (slash and is_token(sub(media, 1, slash - 1)) and is_token(sub(media, slash + 1))) then
        return "its Content-Type \"" .. ct .. "\" is not one media type"
    end
    local names = {}
    local rest = sub(ct, #match(ct, "^[^;]*") + 1)
    for param in gmatch(rest, "[^;]*") do
        param = trim(param)
        if param ~= "" then
            local eq = find(param, "=", 1, true)
            if not eq then
                return "its Content-Type \"" .. ct .. "\" has a parameter with no value"
            end
            local name = lower(trim(sub(param, 1, eq - 1)))
            local raw = trim(sub(param, eq + 1))
            local value
            if sub(raw, 1, 1) == "\"" then
                local inner = sub(raw, 2, -2)
                if #raw < 2 or sub(raw, -1) ~= "\"" or find(inner, "[\"\\]") then
                    return "its Content-Type \"" .. ct
                           .. "\" has a quoted parameter graft does not read alike"
                end
                value = inner
            elseif is_token(raw) then
                value = raw
            else
                return "its Content-Type \"" .. ct .. "\" has a parameter value that is not a token"
            end
            if not is_token(name) or names[name] then
                return "its Content-Type \"" .. ct
                       .. "\" names a parameter twice, or one that is not a token"
            end
            if name == "charset" and not ascii_compatible(value) then
                return "its charset \"" .. value .. "\" is not ASCII-compatible"
            end
            names[name] = true
        end
    end
    return nil
end

-- Why graft cannot read a request's body the way a common backend may,
-- or nil (graft_contract::body::undecidable, the same rules): a
-- Content-Encoding other than identity, more than one Content-Type or one
-- that is not a single media type with name=value parameters named once,
-- a charset that is not ASCII-compatible. `headers` as
-- ngx.req.get_headers(0) gives them (lower-case names, a list when sent
-- twice).
local undecidable_type

function _M.undecidable(headers)
    local encoding = headers["content-encoding"]
    if type(encoding) == "table" then
        for i = 1, #encoding do
            local e = trim(encoding[i])
            if e ~= "" and lower(e) ~= "identity" then
                encoding = e
                break
            end
        end
        if type(encoding) == "table" then
            encoding = nil
        end
    elseif encoding then
        encoding = trim(encoding)
        if encoding == "" or lower(encoding) == "identity" then
            encoding = nil
        end
    end
    if encoding then
        return "its Content-Encoding is \"" .. encoding .. "\": graft reads no compressed body"
    end
    return undecidable_type(headers)
end

-- undecidable's rules on the Content-Type and its charset only, for a body
-- decode decodes (graft_contract::body::undecidable_type).
undecidable_type = function(headers)
    local ct = headers["content-type"]
    if type(ct) == "table" then
        if #ct > 1 then
            return "it has " .. #ct .. " Content-Type headers"
        end
        ct = ct[1]
    end
    ct = ct and trim(ct)
    -- An empty one says no more than none: the raw bytes are read.
    if ct == nil or ct == "" then
        return nil
    end
    return content_type_undecidable(ct)
end

_M.undecidable_type = undecidable_type

-- The FFI, on first use: in nginx only.
local ffi_string, get_string_buf, get_size_ptr, C, abi

-- The body decoded by its Content-Encoding within max_bytes out and
-- max_ratio out per byte in, by the Rust side's decoder
-- (graft_contract::body::decode, through graft_ffi_decode): the decoded
-- bytes; nil when it names no coding (identity); or nil and why it is
-- undecidable (past a limit, corrupt, cut short, stacked or unknown
-- codings). Every Content-Encoding header is passed, joined by ", ".
function _M.decode(headers, body, max_bytes, max_ratio)
    local coding = headers["content-encoding"]
    if coding == nil then
        return nil
    end
    if type(coding) == "table" then
        coding = concat(coding, ", ")
    end
    if not C then
        local ffi = require "ffi"
        local base = require "resty.core.base"
        abi = require "graft.abi"
        ffi_string, get_string_buf, get_size_ptr = ffi.string, base.get_string_buf,
            base.get_size_ptr
        C = ffi.C
    end
    -- Room for the most it may decode to, and for a reason.
    local room = max_ratio * #body
    if room > max_bytes then
        room = max_bytes
    end
    if room < 512 then
        room = 512
    end
    local buf = get_string_buf(room)
    local size = get_size_ptr()
    size[0] = room
    local rc = C.graft_ffi_decode(coding, #coding, body, #body, max_bytes, max_ratio, buf, size)
    if rc == abi.GRAFT_OK then
        return ffi_string(buf, size[0])
    elseif rc == abi.GRAFT_DECLINED then
        return nil
    elseif rc == abi.GRAFT_ERROR then
        local n = tonumber(size[0])
        return nil, ffi_string(buf, n < room and n or room)
    end
    return nil, "graft: the body's decoder failed (" .. tostring(rc) .. ")"
end

return _M
