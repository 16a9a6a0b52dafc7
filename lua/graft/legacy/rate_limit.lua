-- rate_limit, the Lua twin (the Rust one is
-- modules/rate_limit): fixed windows counted in the lua_shared_dict
-- "graft_rate_limit", shared by every worker.

local conditions = require "graft.conditions"

local floor = math.floor
local ipairs = ipairs
local setmetatable = setmetatable
local tostring = tostring
local ngx = ngx

local _M = { version = "0.1.0" }
local mt = { __index = _M }

local CONTINUE = require("graft.contract").CONTINUE

function _M.new(conf, zone)
    local dict = ngx.shared.graft_rate_limit
    if not dict then
        return nil, "rate_limit needs `lua_shared_dict graft_rate_limit 10m;` in nginx.conf"
    end
    local limits = {}
    for i, l in ipairs(conf.limits) do
        local when
        if l.when then
            local err
            when, err = conditions.compile(l.when)
            if not when then
                return nil, err
            end
        end
        local header = l.key:match("^header:(.+)$")
        limits[i] = {
            prefix = zone .. "\0" .. l.name .. "\0",
            name = l.name,
            header = header,
            limit = l.limit,
            window = l.window,
            when = when,
            status = l.status or 429,
        }
    end
    return setmetatable({ limits = limits, dict = dict }, mt)
end

function _M.on_request(self, req)
    local now = floor(ngx.now())
    local limits = self.limits
    for i = 1, #limits do
        local l = limits[i]
        if not l.when or l.when(req) then
            local key
            if l.header then
                key = req:header(l.header)
            else
                key = req.client
            end
            if key then
                local window = l.window
                local index = floor(now / window)
                local count, err = self.dict:incr(l.prefix .. key .. "\0" .. index, 1, 0, window)
                if not count then
                    ngx.log(ngx.ERR, "graft: rate_limit: ", err)
                elseif count > l.limit then
                    return {
                        kind = "respond", status = l.status, body = "",
                        headers = { { "Retry-After", tostring(window - now % window) } },
                        log = { "limit \"" .. l.name .. "\" exceeded" },
                    }
                end
            end
        end
    end
    return CONTINUE
end

return _M
