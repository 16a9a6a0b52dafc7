-- The Lua twin of graft's test module `probe` (modules/probe): it always
-- answers 200 "lua <path>", so a test can tell which implementation served.

local setmetatable = setmetatable

local _M = { version = "0.1.0" }
local mt = { __index = _M }

function _M.new(conf)
    return setmetatable({ conf = conf }, mt)
end

function _M.on_request(_, req)
    return {
        kind = "respond",
        status = 200,
        headers = { { "X-Graft-Impl", "lua" } },
        body = "lua " .. req.path .. "\n",
    }
end

return _M
