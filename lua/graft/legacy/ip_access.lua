-- ip_access, the Lua twin (the Rust one is
-- modules/ip_access): the most specific allow or deny prefix that holds
-- the client's address decides; else the default.

local ip = require "graft.ip"

local ipairs = ipairs
local setmetatable = setmetatable

local _M = { version = "0.1.0" }
local mt = { __index = _M }

local CONTINUE = require("graft.contract").CONTINUE

function _M.new(conf)
    local entries = {}
    for _, p in ipairs(conf.allow or {}) do
        entries[#entries + 1] = { p, "allow" }
    end
    for _, p in ipairs(conf.deny or {}) do
        entries[#entries + 1] = { p, "deny" }
    end
    local map, err = ip.prefix_map(entries)
    if not map then
        return nil, err
    end
    return setmetatable({ map = map, default = conf.default or "allow", status = conf.status or 403 }, mt)
end

function _M.on_request(self, req)
    local access
    local bin = ip.parse(req.client)
    if bin then
        access = ip.lookup(self.map, bin)
    end
    if (access or self.default) == "deny" then
        return { kind = "respond", status = self.status, headers = {}, body = "" }
    end
    return CONTINUE
end

return _M
