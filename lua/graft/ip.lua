-- Addresses and prefixes for the legacy Lua modules: parses IPv4 and IPv6
-- text into 4- or 16-byte strings and answers longest-prefix questions with
-- one table per prefix length.

local byte = string.byte
local ipairs = ipairs
local pairs = pairs
local char = string.char
local concat = table.concat
local find = string.find
local floor = math.floor
local gsub = string.gsub
local match = string.match
local sort = table.sort
local sub = string.sub
local tonumber = tonumber

local _M = {}

local function parse_v4(s)
    local a, b, c, d = match(s, "^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
    if not a then
        return nil
    end
    local parts = { a, b, c, d }
    for i = 1, 4 do
        local p = parts[i]
        if #p > 3 or (#p > 1 and sub(p, 1, 1) == "0") then
            return nil
        end
        local n = tonumber(p)
        if n > 255 then
            return nil
        end
        parts[i] = n
    end
    return char(parts[1], parts[2], parts[3], parts[4])
end

local function groups(s, out)
    if s == "" then
        return true
    end
    for g in (s .. ":"):gmatch("([^:]*):") do
        if not match(g, "^%x%x?%x?%x?$") then
            return nil
        end
        local n = tonumber(g, 16)
        out[#out + 1] = char(floor(n / 256), n % 256)
    end
    return true
end

local function parse_v6(s)
    local tail_v4
    local head = match(s, "^(.*:)%d+%.%d+%.%d+%.%d+$")
    if head then
        tail_v4 = parse_v4(sub(s, #head + 1))
        if not tail_v4 then
            return nil
        end
        s = sub(head, 1, -2)
        if sub(s, -1) == ":" then
            s = s .. ":"
        end
        if s == "::" then
            s = "::"
        end
    end
    local left, right = s, nil
    local dbl = find(s, "::", 1, true)
    if dbl then
        left, right = sub(s, 1, dbl - 1), sub(s, dbl + 2)
        if find(right, "::", 1, true) then
            return nil
        end
    end
    local l, r = {}, {}
    if not groups(left, l) then
        return nil
    end
    if right and not groups(right, r) then
        return nil
    end
    local want = tail_v4 and 6 or 8
    local have = #l + #r
    if (right and have >= want) or (not right and have ~= want) then
        return nil
    end
    local out = l
    for _ = 1, want - have do
        out[#out + 1] = "\0\0"
    end
    for i = 1, #r do
        out[#out + 1] = r[i]
    end
    if tail_v4 then
        out[#out + 1] = tail_v4
    end
    return concat(out)
end

-- The address as a 4- or 16-byte string, or nil.
function _M.parse(s)
    if not s then
        return nil
    end
    s = gsub(s, "^%s+", "")
    s = gsub(s, "%s+$", "")
    if find(s, ":", 1, true) then
        return parse_v6(s)
    end
    return parse_v4(s)
end

-- The first `len` bits of `bin`, as a string of whole bytes.
local function masked(bin, len)
    local full = floor(len / 8)
    local rest = len % 8
    if rest == 0 then
        return sub(bin, 1, full)
    end
    local b = byte(bin, full + 1)
    return sub(bin, 1, full) .. char(b - b % (2 ^ (8 - rest)))
end

-- A map from prefixes ("10.0.0.0/8", "2001:db8::/32", or bare addresses)
-- to values: entries is a list of { text, value }. Returns nil and an error
-- for a bad prefix.
function _M.prefix_map(entries)
    local map = { [4] = { lengths = {} }, [16] = { lengths = {} } }
    for _, entry in ipairs(entries) do
        local text, value = entry[1], entry[2]
        local addr, len = match(text, "^([^/]+)/(%d+)$")
        if not addr then
            addr = text
        end
        local bin = _M.parse(addr)
        if not bin then
            return nil, "\"" .. text .. "\" is not an IP prefix"
        end
        local bits = #bin * 8
        len = len and tonumber(len) or bits
        if len > bits then
            return nil, "\"" .. text .. "\" is not an IP prefix"
        end
        local family = map[#bin]
        local by_len = family[len]
        if not by_len then
            by_len = {}
            family[len] = by_len
            family.lengths[#family.lengths + 1] = len
        end
        by_len[masked(bin, len)] = value
    end
    for _, family in pairs(map) do
        sort(family.lengths, function(a, b) return a > b end)
    end
    return map
end

-- The value of the longest prefix that holds the address (a 4- or 16-byte
-- string), or nil.
function _M.lookup(map, bin)
    local family = map[#bin]
    if not family then
        return nil
    end
    local lengths = family.lengths
    for i = 1, #lengths do
        local len = lengths[i]
        local value = family[len][masked(bin, len)]
        if value ~= nil then
            return value
        end
    end
    return nil
end

-- A set of prefixes: a map whose values are all true.
function _M.prefix_set(list)
    local entries = {}
    for i, text in ipairs(list) do
        entries[i] = { text, true }
    end
    return _M.prefix_map(entries)
end

return _M
