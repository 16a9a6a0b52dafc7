-- graft.request: the request as Lua twins see it (graft.contract's
-- `req`); each field is read from nginx the first time a module asks for
-- it, and kept for the later steps until a step changes the request.
local body = require "graft.body"

local ngx = ngx
local ngx_var = ngx.var
local io_open = io.open
local rawget = rawget
local error = error
local tostring = tostring
local sub = string.sub
local decode_args = ngx.decode_args
local body_kind = body.kind
local json_strings = body.json_strings
local ngx_req = ngx.req
local lower = string.lower
local rawset = rawset
local setmetatable = setmetatable
local type = type

local request_fields = {
    method = function() return ngx_req.get_method() end,
    path = function() return ngx_var.uri end,
    raw_uri = function() return ngx_var.request_uri end,
    query = function()
        local args = ngx_var.args
        if args == "" then
            return nil
        end
        return args
    end,
    host = function() return ngx_var.host end,
    client = function() return ngx_var.remote_addr end,
    -- 0: every header and argument, however many (no default limit for a
    -- payload to hide behind).
    headers = function() return ngx_req.get_headers(0) end,
    args = function() return ngx_req.get_uri_args(0) end,
    -- The body as far as the zone reads it (its max_bytes), from memory
    -- or from the file nginx wrote a longer one to; nil in a zone that
    -- reads no bodies, or without one.
    body = function(self)
        local max = rawget(self, "body_max")
        if not max then
            return nil
        end
        local data = ngx_req.get_body_data()
        if data then
            if #data > max then
                data = sub(data, 1, max)
            end
            return data
        end
        local file = ngx_req.get_body_file()
        if not file then
            return nil
        end
        local f, err = io_open(file, "rb")
        if not f then
            -- Never "no body": the step cannot decide, its policy will.
            error("graft: the request body's file cannot be read: " .. tostring(err))
        end
        local rerr
        data, rerr = f:read(max)
        f:close()
        if not data and rerr then
            error("graft: the request body's file cannot be read: " .. tostring(rerr))
        end
        return data
    end,
    body_args = function(self)
        local data = self.body
        if data and body_kind(self:header("content-type")) == "form" then
            return decode_args(data, 0)
        end
        return {}
    end,
    json = function(self)
        local data = self.body
        if data and body_kind(self:header("content-type")) == "json" then
            return json_strings(data)
        end
        return {}
    end,
}

local request_methods = {}

function request_methods.header(self, name)
    local value = self.headers[lower(name)]
    if type(value) == "table" then
        return value[1]
    end
    return value
end

local request_mt = {
    __index = function(self, key)
        local read = request_fields[key]
        if read then
            local value = read(self)
            rawset(self, key, value)
            return value
        end
        return request_methods[key]
    end,
}

return {
    -- A fresh view of the current request; `body_max`: how much of its
    -- body the zone reads (nil: none).
    new = function(body_max)
        return setmetatable({ body_max = body_max }, request_mt)
    end,
}
