-- WAF, the Lua twin (the Rust one is modules/waf): rules
-- in order (block / allow / log), then signature lists, each compiled into
-- one alternation and matched with ngx.re (PCRE JIT, compiled-regex cache)
-- against the decoded path and every query argument's name and value, and
-- with inspect_body every form-body argument and every JSON-body string.
-- With decompress, a compressed body is decoded (graft.body.decode, the
-- Rust side's decoder) and read decoded, its bytes as sent matched too.

local conditions = require "graft.conditions"

local concat = table.concat
local ipairs = ipairs
local pairs = pairs
local rawset = rawset
local setmetatable = setmetatable
local sub = string.sub
local type = type
local re_find = ngx.re.find

local _M = { version = "0.1.0" }
local mt = { __index = _M }

-- Whether a condition (a table from the graft file) reads the body, as
-- graft_conditions::Condition::reads_body says on the Rust side.
local function reads_body(when)
    if type(when) ~= "table" then
        return false
    end
    local field = when.field
    if field == "body" or field == "body_args" or field == "json"
        or (type(field) == "string" and sub(field, 1, 9) == "body_arg:") then
        return true
    end
    for _, v in pairs(when) do
        if type(v) == "table" and reads_body(v) then
            return true
        end
    end
    return false
end

function _M.new(conf)
    local rules = {}
    for i, rule in ipairs(conf.rules or {}) do
        local when, err = conditions.compile(rule.when)
        if not when then
            return nil, "rules[" .. (i - 1) .. "]: " .. err
        end
        rules[i] = { id = rule.id, when = when, action = rule.action, status = rule.status or 403 }
    end
    local wants_body = conf.inspect_body == true and #(conf.signatures or {}) > 0
    for _, rule in ipairs(conf.rules or {}) do
        wants_body = wants_body or reads_body(rule.when)
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
        wants_body = wants_body,
        -- { max_bytes = N, max_ratio = R }, checked by the Rust side at load.
        decompress = conf.decompress,
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

local body = require "graft.body"
local undecidable = body.undecidable
local undecidable_type = body.undecidable_type
local decode = body.decode
local body_kind = body.kind
local json_strings = body.json_strings
local decode_args = ngx.decode_args

-- The request with its body decoded (the Rust side's Decoded): body,
-- body_args and json read from the decoded bytes, the rest from req.
local function decoded_view(req, decoded)
    local kind = body_kind(req:header("content-type"))
    return setmetatable({ body = decoded }, {
        __index = function(self, key)
            local v
            if key == "body_args" then
                v = kind == "form" and decode_args(decoded, 0) or {}
            elseif key == "json" then
                v = kind == "json" and json_strings(decoded) or {}
            else
                return req[key]
            end
            rawset(self, key, v)
            return v
        end,
    })
end

-- Form arguments, JSON strings, and the body's bytes themselves, whatever
-- its Content-Type says (a backend that reads it more leniently than
-- graft's decoders never gets a payload the signatures did not see); for
-- a decoded body, its bytes as sent too (`sent`).
local function body_hits(regex, req, sent)
    if any_arg_hits(regex, req.body_args) or any_string_hits(regex, req.json) then
        return true
    end
    local raw = req.body
    return (raw ~= nil and hit(regex, raw)) or (sent ~= nil and hit(regex, sent))
end

-- Why the body is undecidable, or the request as the rules read it (with
-- its body decoded, and the bytes as sent), as the Rust side's read_body.
local function read_body(self, req)
    local raw = req.body
    local decompress = self.decompress
    if not decompress then
        return undecidable(req.headers), req
    end
    local why = undecidable_type(req.headers)
    if why then
        return why, req
    end
    local decoded
    decoded, why = decode(req.headers, raw, decompress.max_bytes, decompress.max_ratio)
    if decoded then
        return nil, decoded_view(req, decoded), raw
    end
    return why, req
end



function _M.on_request(self, req)
    -- A body this WAF reads but cannot read as a backend may is
    -- undecidable: the step fails, and its failure policy answers.
    local sent
    if self.wants_body and req.body ~= nil then
        local why
        why, req, sent = read_body(self, req)
        if why then
            error("an undecidable body: " .. why, 0)
        end
    end
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
                or (self.inspect_body and body_hits(list.regex, req, sent)) then
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
