-- What one call across the bridge costs, measured inside nginx for
-- `make bench`: a loop of graft_ffi_run calls to a step whose module does
-- nothing (headers with no rules), against a loop of a plain LuaJIT FFI
-- call into the Lua module (ngx_http_lua_ffi_get_phase), both JIT-compiled.

local ffi = require "ffi"
local base = require "resty.core.base"
require "graft"

local C = ffi.C
local get_request = base.get_request
local ngx = ngx

pcall(ffi.cdef, [[ int ngx_http_lua_ffi_get_phase(void *r, char **err); ]])

local _M = {}

local N = 2000000

local function clock()
    ngx.update_time()
    return ngx.now()
end

function _M.calls()
    local r = get_request()
    local gen = ffi.new("unsigned long long[1]")
    local zone = C.graft_ffi_zone(r, nil, 0, gen)
    if zone < 0 then
        return ngx.exit(500)
    end
    local out = ffi.new("graft_decision_t[1]")
    local err = ffi.new("char *[1]")

    for _ = 1, 1000 do
        C.graft_ffi_run(r, zone, 0, out)
        C.ngx_http_lua_ffi_get_phase(r, err)
    end

    local t0 = clock()
    for _ = 1, N do
        C.graft_ffi_run(r, zone, 0, out)
    end
    local t1 = clock()
    for _ = 1, N do
        C.ngx_http_lua_ffi_get_phase(r, err)
    end
    local t2 = clock()
    ngx.say(string.format('{"bridge_ns": %.2f, "ffi_ns": %.2f, "calls": %d}',
        (t1 - t0) * 1e9 / N, (t2 - t1) * 1e9 / N, N))
end

return _M
