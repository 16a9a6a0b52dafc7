-- Conditions over request fields, the Lua twin of modules/conditions:
-- compile(cond) turns the JSON condition into a tree of closures, once.
--
-- req fields used: method, path, host, query, client, args (as
-- ngx.req.get_uri_args(0) gives them), headers (as ngx.req.get_headers(0));
-- in zones that read bodies, body (the bytes as far as the zone reads
-- them), body_args (a form body's arguments, as ngx.decode_args(body, 0)
-- gives them) and json (every string of a JSON body, graft.body).

local ip = require "graft.ip"

local find = string.find
local lower = string.lower
local sub = string.sub
local ipairs = ipairs
local pairs = pairs
local tostring = tostring
local type = type

local re_find = ngx and ngx.re and ngx.re.find

local _M = {}

-- Calls test(v) for each value of a header or argument entry (a string,
-- true for an argument without value, or a list of those).
local function any_value(entry, test)
    if entry == nil then
        return false
    end
    if type(entry) == "table" then
        for i = 1, #entry do
            local v = entry[i]
            if test(v == true and "" or v) then
                return true
            end
        end
        return false
    end
    return test(entry == true and "" or entry)
end

-- Whether test holds for any argument's name or value (a table as
-- ngx.req.get_uri_args(0) or ngx.decode_args(body, 0) gives it).
local function any_arg(args, test)
    for name, entry in pairs(args) do
        if test(name) or any_value(entry, test) then
            return true
        end
    end
    return false
end

local function make_op(cond)
    local op = cond.op
    local value = cond.value
    if op == "equals" then
        return function(v) return v == value end
    elseif op == "prefix" then
        local n = #value
        return function(v) return sub(v, 1, n) == value end
    elseif op == "contains" then
        return function(v) return find(v, value, 1, true) ~= nil end
    elseif op == "regex" then
        if not re_find then
            return nil, "regex needs ngx.re"
        end
        return function(v)
            local from, _, err = re_find(v, value, "jo")
            if err then
                -- PCRE gave up (a match or stack limit): the step cannot
                -- decide, and its failure policy will; never "no match".
                error("regex " .. value .. ": " .. err)
            end
            return from ~= nil
        end
    elseif op == "in" then
        local set = {}
        for _, s in ipairs(cond.values) do
            set[s] = true
        end
        return function(v) return set[v] == true end
    elseif op == "in_prefix" then
        local set, err = ip.prefix_set(cond.values)
        if not set then
            return nil, err
        end
        return function(v)
            local bin = ip.parse(v)
            return bin ~= nil and ip.lookup(set, bin) == true
        end
    end
    return nil, "unknown operator " .. tostring(op)
end

local function make_test(cond)
    local test, err = make_op(cond)
    if not test then
        return nil, err
    end
    local field = cond.field
    if field == "method" or field == "path" or field == "host" or field == "client" then
        return function(req)
            local v = req[field]
            return v ~= nil and test(v)
        end
    elseif field == "query" then
        return function(req) return test(req.query or "") end
    elseif field == "args" then
        return function(req) return any_arg(req.args, test) end
    elseif field == "body" then
        return function(req)
            local v = req.body
            return v ~= nil and test(v)
        end
    elseif field == "body_args" then
        return function(req) return any_arg(req.body_args, test) end
    elseif field == "json" then
        return function(req)
            local strings = req.json
            for i = 1, #strings do
                if test(strings[i]) then
                    return true
                end
            end
            return false
        end
    elseif field == "headers" then
        return function(req)
            for _, entry in pairs(req.headers) do
                if any_value(entry, test) then
                    return true
                end
            end
            return false
        end
    end
    local kind, name = field:match("^([%a_]+):(.+)$")
    if kind == "arg" then
        return function(req) return any_value(req.args[name], test) end
    elseif kind == "body_arg" then
        return function(req) return any_value(req.body_args[name], test) end
    elseif kind == "header" then
        name = lower(name)
        return function(req) return any_value(req.headers[name], test) end
    end
    return nil, "unknown field " .. tostring(field)
end

-- Returns a function(req) -> boolean, or nil and an error.
function _M.compile(cond)
    if cond.all or cond.any then
        local list = cond.all or cond.any
        local parts = {}
        for i, c in ipairs(list) do
            local f, err = _M.compile(c)
            if not f then
                return nil, err
            end
            parts[i] = f
        end
        local n = #parts
        if cond.all then
            return function(req)
                for i = 1, n do
                    if not parts[i](req) then
                        return false
                    end
                end
                return true
            end
        end
        return function(req)
            for i = 1, n do
                if parts[i](req) then
                    return true
                end
            end
            return false
        end
    end
    if cond["not"] then
        local inner, err = _M.compile(cond["not"])
        if not inner then
            return nil, err
        end
        return function(req) return not inner(req) end
    end
    return make_test(cond)
end

return _M
