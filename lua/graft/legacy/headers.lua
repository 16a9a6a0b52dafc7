-- headers, the Lua twin (the Rust one is modules/headers):
-- the header changes of every rule whose condition holds, in order; a rule
-- with on_response acts on the response instead (on_response(req, resp)),
-- when its status is one of the rule's (any, without a list), it lacks the
-- header `lacks` names and has the one `has` names.

local conditions = require "graft.conditions"

local ipairs = ipairs
local setmetatable = setmetatable

local _M = { version = "0.1.0" }
local mt = { __index = _M }

local function ops(list)
    local out = {}
    for i, op in ipairs(list or {}) do
        if op.set then
            out[i] = { action = "set", name = op.set, value = op.value }
        elseif op.add then
            out[i] = { action = "add", name = op.add, value = op.value }
        else
            out[i] = { action = "remove", name = op.remove, value = "" }
        end
    end
    return out
end

function _M.new(conf)
    local rules = {}
    for i, rule in ipairs(conf.rules) do
        local when
        if rule.when then
            local err
            when, err = conditions.compile(rule.when)
            if not when then
                return nil, err
            end
        end
        local on = rule.on_response
        if on then
            local status
            if on.status and #on.status > 0 then
                status = {}
                for _, code in ipairs(on.status) do
                    status[code] = true
                end
            end
            on = { status = status, lacks = on.lacks, has = on.has }
        end
        rules[i] = { when = when, request = ops(rule.request), response = ops(rule.response),
                     on_response = on }
    end
    return setmetatable({ rules = rules }, mt)
end

local function append(dst, src)
    for i = 1, #src do
        dst[#dst + 1] = src[i]
    end
end

function _M.on_request(self, req)
    local request, response = {}, {}
    local rules = self.rules
    for i = 1, #rules do
        local rule = rules[i]
        if not rule.on_response and (not rule.when or rule.when(req)) then
            append(request, rule.request)
            append(response, rule.response)
        end
    end
    return { kind = "continue", request_headers = request, response_headers = response }
end

-- resp: resp.status, and resp:header(name), the first value or nil.
function _M.on_response(self, req, resp)
    local out = {}
    local rules = self.rules
    for i = 1, #rules do
        local rule = rules[i]
        local on = rule.on_response
        if on and (not on.status or on.status[resp.status])
            and (not on.lacks or resp:header(on.lacks) == nil)
            and (not on.has or resp:header(on.has) ~= nil)
            and (not rule.when or rule.when(req)) then
            append(out, rule.response)
        end
    end
    return out
end

return _M
