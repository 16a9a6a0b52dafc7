-- Redirects, the legacy Lua implementation (the Rust one is
-- modules/redirects; the two must decide alike, rule for rule):
-- exact rules win over prefix rules, the longest prefix wins, a prefix rule
-- carries the rest of the path over, the query is kept unless the rule says
-- "drop", and what is carried over is percent-encoded.

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
        local r = {
            to = rule.to,
            status = rule.status or 301,
            keep_query = rule.query ~= "drop",
            target_has_query = find(rule.to, "?", 1, true) ~= nil,
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
            if len <= n then
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
        location = location .. gsub(rest, UNSAFE_IN_PATH, hex)
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
