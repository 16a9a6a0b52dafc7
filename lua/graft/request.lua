-- graft.request: the request as legacy modules see it (graft.contract's
-- `req`); each field is read from nginx the first time a module asks for
-- it, and kept for the later steps until a step changes the request.
local ngx = ngx
local ngx_var = ngx.var
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
            local value = read()
            rawset(self, key, value)
            return value
        end
        return request_methods[key]
    end,
}

return {
    -- A fresh view of the current request.
    new = function()
        return setmetatable({}, request_mt)
    end,
}
