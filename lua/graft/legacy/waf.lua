-- WAF, the legacy Lua implementation (the Rust one is modules/waf): rules
-- in order (block / allow / log), then signature lists, each compiled into
-- one alternation and matched with ngx.re (PCRE JIT, compiled-regex cache)
-- against the decoded path and every query argument's name and value, and
-- with inspect_body every form-body argument and every JSON-body string.

local conditions = require "graft.conditions"

local concat = table.concat
local ipairs = ipairs
local pairs = pairs
local setmetatable = setmetatable
local type = type
local re_find = ngx.re.find

local _M = { version = "0.1.0" }
local mt = { __index = _M }

function _M.new(conf)
    local rules = {}
    for i, rule in ipairs(conf.rules or {}) do
        local when, err = conditions.compile(rule.when)
        if not when then
            return nil, "rules[" .. (i - 1) .. "]: " .. err
        end
        rules[i] = { id = rule.id, when = when, action = rule.action, status = rule.status or 403 }
    end
    -- The Rust side hands over each list with its patterns.
    local lists = {}
    for i, list in ipairs(conf.signatures or {}) do
        local alternatives = {}
        for j, p in ipairs(list.patterns) do
            alternatives[j] = "(?:" .. p .. ")"
        end
        lists[i] = { name = list.name, regex = concat(alternatives, "|") }
    end
    return setmetatable({
        rules = rules,
        lists = lists,
        signature_action = conf.signature_action or "block",
        signature_status = conf.signature_status or 403,
        inspect_body = conf.inspect_body == true,
    }, mt)
end

local function hit(regex, v)
    local from, _, err = re_find(v, regex, "jo")
    if err then
        -- PCRE gave up (a match or stack limit): the step cannot decide,
        -- and its failure policy will; never "no match".
        error("signature regex: " .. err)
    end
    return from ~= nil
end

local function any_arg_hits(regex, args)
    for name, value in pairs(args) do
        if hit(regex, name) then
            return true
        end
        if type(value) == "table" then
            for i = 1, #value do
                local v = value[i]
                if v ~= true and hit(regex, v) then
                    return true
                end
            end
        elseif value ~= true and hit(regex, value) then
            return true
        end
    end
    return false
end

local function any_string_hits(regex, strings)
    for i = 1, #strings do
        if hit(regex, strings[i]) then
            return true
        end
    end
    return false
end

local body_kind = require("graft.body").kind

-- Form arguments, JSON strings, and any other body's bytes.
local function body_hits(regex, req)
    if any_arg_hits(regex, req.body_args) or any_string_hits(regex, req.json) then
        return true
    end
    local raw = req.body
    return raw ~= nil and body_kind(req:header("content-type")) == "other" and hit(regex, raw)
end

function _M.on_request(self, req)
    local log
    local rules = self.rules
    for i = 1, #rules do
        local rule = rules[i]
        if rule.when(req) then
            local action = rule.action
            if action == "block" then
                return {
                    kind = "respond", status = rule.status, headers = {}, body = "",
                    log = { "rule \"" .. rule.id .. "\" blocked the request" },
                }
            elseif action == "allow" then
                return { kind = "continue", log = log }
            end
            log = log or {}
            log[#log + 1] = "rule \"" .. rule.id .. "\" matched"
        end
    end

    local lists = self.lists
    if #lists > 0 then
        local path, args = req.path, req.args
        for i = 1, #lists do
            local list = lists[i]
            if hit(list.regex, path) or any_arg_hits(list.regex, args)
                or (self.inspect_body and body_hits(list.regex, req)) then
                if self.signature_action == "block" then
                    return {
                        kind = "respond", status = self.signature_status, headers = {}, body = "",
                        log = { "signature \"" .. list.name .. "\" blocked the request" },
                    }
                end
                log = log or {}
                log[#log + 1] = "signature \"" .. list.name .. "\" matched"
                break
            end
        end
    end
    return { kind = "continue", log = log }
end

return _M
