-- graft: the Lua side of the bridge to graft's nginx module.
--
--   init_by_lua_block          { require "graft" }
--   access_by_lua_block        { require("graft").access() }
--
-- access() runs the zone's modules in order, each in its mode (lua, rust,
-- shadow, canary). The Rust side is called through LuaJIT's FFI with the
-- request pointer: Rust reads the request where nginx keeps it. One file
-- per concern, as lua-resty-core splits its own:
--
--   graft/abi.lua       the C declarations (shim/include/graft.h), constants,
--                       the ABI check at load, text buffers, the clock
--   graft/request.lua   the request as Lua twins see it
--   graft/plan.lua      a zone's plan, and the check of every Lua twin
--   graft/pipeline.lua  the steps of a request, decide and apply (hot path)
--   graft/admin.lua     counters, metrics and the admin API
--   graft/response.lua  the response-body phase (header and body filters)
local abi = require "graft.abi"
local pipeline = require "graft.pipeline"
local admin = require "graft.admin"
local plan = require "graft.plan"
local response = require "graft.response"

local _M = {
    version = "0.1.0",
    ABI_VERSION = abi.GRAFT_ABI_VERSION,
    access = pipeline.access,
    decide = pipeline.decide,
    apply = pipeline.apply,
    counters = admin.counters,
    serve_metrics = admin.serve_metrics,
    serve_counters = admin.serve_counters,
    admin = admin.admin,
    -- The response-body phase's Lua side (response-header changes are
    -- applied by graft's own header filter, whichever side decided them).
    header_filter = response.header_filter,
    body_filter = response.body_filter,
    log = response.log,
}

-- Started from init_by_lua (at start and on each reload): every legacy
-- module the configuration names must load and build now, or nginx refuses
-- the configuration, naming the zone and module. The instances are
-- dropped as they are checked: a configuration of 10,000 zones would
-- otherwise hold every zone's Lua tables in every worker, the native
-- pipeline's too.
if ngx.get_phase() == "init" then
    require("graft.legacy").seal()
    local ok, err = plan.check(nil, abi.GRAFT_PLANS_LOADED)
    if not ok and err then
        error(err, 0)
    end
    collectgarbage("collect")
end

return _M
