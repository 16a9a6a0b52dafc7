-- graft.body: request bodies as legacy modules read them, the Lua twin of
-- graft_contract::body (modules/contract/src/body.rs), byte for byte: the
-- decoding a Content-Type calls for, and every string of a JSON body,
-- scanned rather than parsed (no recursion whatever the nesting; a cut or
-- broken document is read as far as it goes). Plain Lua: no ngx, so the
-- parity tests run it in LuaJIT alone.
local byte = string.byte
local char = string.char
local find = string.find
local lower = string.lower
local match = string.match
local sub = string.sub
local tonumber = tonumber
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

return _M
