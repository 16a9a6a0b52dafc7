-- The Lua twin of graft's test module `probe` (modules/probe): it answers
-- 200 "lua <path>", or with `continue` lets the request go on with the
-- request header X-Probe: lua, so a test can tell which implementation
-- served. For tests of failures: it throws on paths under `lua_error_on`,
-- returns no decision under `lua_bad_on`, and refuses to be built with
-- `lua_refuse`. With `answer` ({status, headers, body}) both sides answer
-- exactly that. With `response_header`, its response-header phase sets
-- X-Probe-Response: lua.

local error = error
local ipairs = ipairs
local setmetatable = setmetatable
local sub = string.sub

local _M = { version = "0.1.0" }
local mt = { __index = _M }

function _M.new(conf)
    if conf.lua_refuse then
        return nil, "probe refuses this configuration (lua_refuse)"
    end
    return setmetatable({ conf = conf }, mt)
end

local function under(path, prefix)
    return prefix ~= nil and sub(path, 1, #prefix) == prefix
end

function _M.on_request(self, req)
    local conf = self.conf
    local path = req.path
    if under(path, conf.lua_error_on) then
        error("probe's Lua side throws on " .. path)
    end
    if under(path, conf.lua_bad_on) then
        return "not a decision"
    end
    local answer = conf.answer
    if answer then
        local headers = {}
        for i, h in ipairs(answer.headers or {}) do
            headers[i] = { h[1], h[2] }
        end
        return { kind = "respond", status = answer.status, headers = headers, body = answer.body or "" }
    end
    if conf.continue then
        return {
            kind = "continue",
            request_headers = { { action = "set", name = "X-Probe", value = "lua" } },
        }
    end
    return {
        kind = "respond",
        status = 200,
        headers = { { "X-Graft-Impl", "lua" }, { "Content-Type", "text/plain" } },
        body = "lua " .. path .. "\n",
    }
end

function _M.on_response(self, req, resp)
    if self.conf.response_header then
        return { { action = "set", name = "X-Probe-Response", value = "lua" } }
    end
    return {}
end

return _M
