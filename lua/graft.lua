-- graft: the Lua side of the bridge to graft's nginx module.
--
--   init_by_lua_block          { require "graft" }
--   access_by_lua_block        { require("graft").access() }
--   header_filter_by_lua_block { require("graft").header_filter() }
--
-- access() runs the zone's modules in order, each in its mode (lua, rust,
-- shadow). The Rust side is called through LuaJIT's FFI with the request
-- pointer: Rust reads the request where nginx keeps it. The C declarations
-- below mirror shim/include/graft.h; the ABI version is checked at load.

local ffi = require "ffi"
local base = require "resty.core.base"
local cjson = require "cjson.safe"
local contract = require "graft.contract"

local C = ffi.C
local ffi_new = ffi.new
local ffi_sizeof = ffi.sizeof
local ffi_string = ffi.string
local get_request = base.get_request
local get_size_ptr = base.get_size_ptr
local get_string_buf = base.get_string_buf
local new_tab = base.new_tab

local ngx = ngx
local ngx_var = ngx.var
local ngx_req = ngx.req
local ngx_log = ngx.log
local ngx_exit = ngx.exit
local ngx_print = ngx.print
local ngx_header = ngx.header
local ngx_time = ngx.time
local ERR = ngx.ERR
local WARN = ngx.WARN

local error = error
local ipairs = ipairs
local pcall = pcall
local rawset = rawset
local require = require
local setmetatable = setmetatable
local tonumber = tonumber
local tostring = tostring
local type = type
local lower = string.lower

local equal = contract.equal
local describe = contract.describe

local GRAFT_ABI_VERSION = 6

local GRAFT_OK = 0
local GRAFT_ERROR = -1
local GRAFT_AGAIN = -2
local GRAFT_DONE = -4
local GRAFT_DECLINED = -5
local GRAFT_PANIC = -6
local GRAFT_NO_CONFIG = -7
local GRAFT_USE_LUA = -8

local GRAFT_CONTINUE = 0
local GRAFT_RESPOND = 1

local GRAFT_HEADER_SET = 0
local GRAFT_HEADER_ADD = 1
local GRAFT_HEADER_REMOVE = 2

local GRAFT_TARGET_REQUEST = 0
local GRAFT_TARGET_RESPONSE = 1
local GRAFT_TARGET_LOG = 2

local GRAFT_IMPL_LUA = 0
local GRAFT_IMPL_RUST = 1

local GRAFT_COUNT_LUA = 0
local GRAFT_COUNT_RUST = 1
local GRAFT_COUNT_FALLBACK = 2
local GRAFT_COUNT_SHADOW_MATCH = 3
local GRAFT_COUNT_SHADOW_DIFF = 4

ffi.cdef[[
typedef struct {
    int action;
    int target;
    const unsigned char *name;
    size_t name_len;
    const unsigned char *value;
    size_t value_len;
} graft_header_t;

typedef struct {
    int kind;
    int status;
    const unsigned char *body;
    size_t body_len;
    const unsigned char *uri;
    size_t uri_len;
    const graft_header_t *headers;
    size_t nheaders;
    const unsigned char *err;
    size_t err_len;
} graft_decision_t;

int graft_ffi_abi_version(size_t decision_size, size_t header_size);
int graft_ffi_zone(void *r, unsigned long long *generation);
int graft_ffi_plan(void *r, int zone, unsigned char *buf, size_t *len);
int graft_ffi_run(void *r, int zone, int step, graft_decision_t *out);
int graft_ffi_count(void *r, int zone, int step, int what);
int graft_ffi_counters(void *r, unsigned char *buf, size_t *len);
int graft_ffi_resume(void *r, int *fallback);
int graft_ffi_metrics(void *r, unsigned char *buf, size_t *len);
int graft_ffi_apply(void *r, unsigned char *buf, size_t *len);
int graft_ffi_kill(void *r, const unsigned char *module, size_t module_len, const unsigned char *zone, size_t zone_len, int state, unsigned char *buf, size_t *len);
int graft_ffi_observe(void *r, int zone, int step, int what, unsigned long long nanos);
]]

-- The monotonic clock, for the sampled latency of the Lua side.
pcall(ffi.cdef, [[
struct graft_timespec { long tv_sec; long tv_nsec; };
int clock_gettime(int clk_id, struct graft_timespec *tp);
]])

local _M = { version = "0.1.0", ABI_VERSION = GRAFT_ABI_VERSION }

do
    local ok, rc = pcall(function()
        return C.graft_ffi_abi_version(ffi_sizeof("graft_decision_t"), ffi_sizeof("graft_header_t"))
    end)
    if not ok then
        error("graft: ngx_http_graft_module is not loaded (load_module it in nginx.conf): "
              .. tostring(rc), 2)
    end
    if rc == GRAFT_ERROR then
        error("graft: lua/graft.lua and ngx_http_graft_module lay out the ABI structures "
              .. "differently: install the two from the same release", 2)
    end
    if rc ~= GRAFT_ABI_VERSION then
        error("graft: lua/graft.lua speaks ABI version " .. GRAFT_ABI_VERSION
              .. " but ngx_http_graft_module speaks version " .. tostring(rc), 2)
    end
end

local ACTIONS = {
    [GRAFT_HEADER_SET] = "set",
    [GRAFT_HEADER_ADD] = "add",
    [GRAFT_HEADER_REMOVE] = "remove",
}

local out = ffi_new("graft_decision_t[1]")
local generation_ptr = ffi_new("unsigned long long[1]")
local fallback_ptr = ffi_new("int[1]")

-- The request as legacy modules see it; each field is read from nginx the
-- first time a module asks for it.
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

local function new_request()
    return setmetatable({}, request_mt)
end

-- Plans (a zone's steps and their legacy module instances), built once per
-- zone and configuration generation.
local plans = {}
local plans_generation

-- Calls fetch(buf, size) with a buffer, and again with a larger one when
-- the module says it needs more; returns the code and the text written.
local function call_with_buffer(fetch)
    local size = get_size_ptr()
    size[0] = 4096
    local buf = get_string_buf(4096)
    local rc = fetch(buf, size)
    if rc == GRAFT_AGAIN then
        buf = get_string_buf(size[0])
        rc = fetch(buf, size)
    end
    return rc, ffi_string(buf, size[0])
end

local function read_string(fetch)
    local rc, text = call_with_buffer(fetch)
    if rc ~= GRAFT_OK then
        return nil, "graft: error " .. rc
    end
    return text
end

local function build_plan(r, zone)
    local json, err = read_string(function(buf, size)
        return C.graft_ffi_plan(r, zone, buf, size)
    end)
    if not json then
        return nil, err
    end
    local data, derr = cjson.decode(json)
    if not data then
        return nil, "graft: bad plan: " .. tostring(derr)
    end
    local plan = new_tab(#data.steps, 0)
    for i, step in ipairs(data.steps) do
        local ok, mod = pcall(require, "graft.legacy." .. step.module)
        if not ok then
            return nil, "graft: no Lua implementation of module \"" .. step.module .. "\": " .. mod
        end
        local inst, ierr = mod.new(step.config, data.zone)
        if not inst then
            return nil, "graft: Lua module \"" .. step.module .. "\": " .. tostring(ierr)
        end
        plan[i] = { zone = data.zone, module = step.module, mode = step.mode, legacy = inst }
    end
    return plan
end

local function plan_for(r, zone, generation)
    if generation ~= plans_generation then
        plans = {}
        plans_generation = generation
    end
    local plan = plans[zone]
    if plan == nil then
        local err
        plan, err = build_plan(r, zone)
        if not plan then
            ngx_log(ERR, err)
            plan = false
        end
        plans[zone] = plan
    end
    return plan
end

-- The response headers and log lines of a respond decision.
local function respond_lists(o, n)
    local headers = new_tab(n, 0)
    local log
    for i = 0, n - 1 do
        local h = o.headers[i]
        if h.target == GRAFT_TARGET_LOG then
            log = log or {}
            log[#log + 1] = ffi_string(h.value, h.value_len)
        else
            headers[#headers + 1] = { ffi_string(h.name, h.name_len), ffi_string(h.value, h.value_len) }
        end
    end
    return headers, log
end

-- The Rust decision in `out`, as a contract table.
local function rust_decision(o)
    local n = tonumber(o.nheaders)
    if o.kind == GRAFT_RESPOND then
        local headers, log = respond_lists(o, n)
        return {
            kind = "respond",
            status = o.status,
            headers = headers,
            body = o.body_len > 0 and ffi_string(o.body, o.body_len) or "",
            log = log,
        }
    end
    local d = { kind = "continue" }
    if o.uri ~= nil then
        d.uri = ffi_string(o.uri, o.uri_len)
    end
    for i = 0, n - 1 do
        local h = o.headers[i]
        local target = h.target
        if target == GRAFT_TARGET_LOG then
            local log = d.log or {}
            d.log = log
            log[#log + 1] = ffi_string(h.value, h.value_len)
        else
            local list_name = target == GRAFT_TARGET_REQUEST and "request_headers" or "response_headers"
            local list = d[list_name] or {}
            d[list_name] = list
            list[#list + 1] = {
                action = ACTIONS[h.action],
                name = ffi_string(h.name, h.name_len),
                value = ffi_string(h.value, h.value_len),
            }
        end
    end
    return d
end

local function rust_failure(rc, o)
    local kind = rc == GRAFT_DECLINED and "decline" or (rc == GRAFT_PANIC and "panic" or "error")
    return { kind = kind, rust = true, err = o.err_len > 0 and ffi_string(o.err, o.err_len) or nil }
end

local CLOCK_MONOTONIC = 1
local SAMPLE_EVERY = 8
local sample = 0
local ts = ffi_new("struct graft_timespec[1]")

local function now_ns()
    C.clock_gettime(CLOCK_MONOTONIC, ts)
    return tonumber(ts[0].tv_sec) * 1e9 + tonumber(ts[0].tv_nsec)
end

-- Runs a step's Lua side, timing one call in SAMPLE_EVERY as the Rust
-- side does.
local function lua_decision(step, req, r, zone, index)
    local inst = step.legacy
    sample = sample + 1
    local ok, d
    if r and sample % SAMPLE_EVERY == 0 then
        local started = now_ns()
        ok, d = pcall(inst.on_request, inst, req)
        C.graft_ffi_observe(r, zone, index, GRAFT_IMPL_LUA, now_ns() - started)
    else
        ok, d = pcall(inst.on_request, inst, req)
    end
    if ok and type(d) == "table" then
        return d
    end
    ngx_log(ERR, "graft: Lua module \"", step.module, "\" failed: ", tostring(d))
    return contract.CONTINUE
end

-- Shadow differences are logged at most DIFF_LOG_PER_SECOND times a second
-- per worker (every one is counted), so a bad rollout cannot fill the disk.
local DIFF_LOG_PER_SECOND = 10
local diff_log_second, diff_log_used, diff_log_skipped = 0, 0, 0

-- Returns nil when this difference is not to be logged, else how many
-- were skipped since the last one logged.
local function diff_log_allowance()
    local now = ngx_time()
    if now ~= diff_log_second then
        diff_log_second, diff_log_used = now, 0
    end
    if diff_log_used >= DIFF_LOG_PER_SECOND then
        diff_log_skipped = diff_log_skipped + 1
        return nil
    end
    diff_log_used = diff_log_used + 1
    local skipped = diff_log_skipped
    diff_log_skipped = 0
    return skipped
end

local function decide(r, zone, index, step, req)
    local mode = step.mode
    if mode == "lua" then
        C.graft_ffi_count(r, zone, index, GRAFT_COUNT_LUA)
        return lua_decision(step, req, r, zone, index)
    end

    -- One call: Rust resolves the mode for this request (a canary per
    -- client, a kill switch), runs its side and counts what served.
    local o = out[0]
    local rc = C.graft_ffi_run(r, zone, index, out)
    if rc == GRAFT_USE_LUA then
        return lua_decision(step, req, r, zone, index)
    end
    if mode ~= "shadow" then
        if rc == GRAFT_OK then
            return rust_decision(o)
        end
        return lua_decision(step, req, r, zone, index)
    end

    -- shadow: Lua serves, Rust is compared.
    local rust = rc == GRAFT_OK and rust_decision(o) or rust_failure(rc, o)
    local served = lua_decision(step, req, r, zone, index)
    C.graft_ffi_count(r, zone, index, GRAFT_COUNT_LUA)
    if equal(served, rust) then
        C.graft_ffi_count(r, zone, index, GRAFT_COUNT_SHADOW_MATCH)
    else
        C.graft_ffi_count(r, zone, index, GRAFT_COUNT_SHADOW_DIFF)
        local unlogged = diff_log_allowance()
        if unlogged then
            ngx_log(WARN, "graft: shadow diff: zone \"", step.zone, "\" module \"",
                    step.module, "\" request \"", ngx_var.request, "\": lua: ",
                    describe(served), " | rust: ", describe(rust),
                    unlogged > 0 and (" (" .. unlogged .. " more differences not logged)") or "")
        end
    end
    return served
end

local function respond(d)
    local headers = d.headers
    for i = 1, #headers do
        ngx_header[headers[i][1]] = headers[i][2]
    end
    local body = d.body
    if body and body ~= "" then
        ngx.status = d.status
        ngx_print(body)
        return ngx_exit(ngx.HTTP_OK)
    end
    return ngx_exit(d.status)
end

local function apply_request_header(op)
    if op.action == "remove" then
        ngx_req.clear_header(op.name)
    elseif op.action == "add" then
        local current = ngx_req.get_headers(0)[lower(op.name)]
        if current == nil then
            ngx_req.set_header(op.name, op.value)
        elseif type(current) == "table" then
            current[#current + 1] = op.value
            ngx_req.set_header(op.name, current)
        else
            ngx_req.set_header(op.name, { current, op.value })
        end
    else
        ngx_req.set_header(op.name, op.value)
    end
end

-- Applies a continue decision; returns true when the request changed.
local function apply_changes(d)
    local changed = false
    if d.uri then
        ngx_req.set_uri(d.uri)
        changed = true
    end
    local ops = d.request_headers
    if ops and #ops > 0 then
        for i = 1, #ops do
            apply_request_header(ops[i])
        end
        changed = true
    end
    ops = d.response_headers
    if ops and #ops > 0 then
        local ctx = ngx.ctx
        local pending = ctx.graft_response_headers or {}
        ctx.graft_response_headers = pending
        for i = 1, #ops do
            pending[#pending + 1] = ops[i]
        end
    end
    return changed
end

-- Runs the zone's modules for the current request. Call it from
-- access_by_lua*.
function _M.access()
    local r = get_request()
    if not r then
        error("no request found", 2)
    end
    -- Once a request: the modules ran before the internal redirect.
    if ngx_req.is_internal() then
        return
    end
    local zone = C.graft_ffi_zone(r, generation_ptr)
    if zone < 0 then
        if zone == GRAFT_NO_CONFIG then
            ngx_log(ERR, "graft: no graft_config in this http block")
        elseif zone ~= GRAFT_DECLINED then
            ngx_log(ERR, "graft: zone lookup failed: ", zone)
        end
        return
    end
    -- The native pipeline (graft_native on) may have run the first steps.
    local first = C.graft_ffi_resume(r, fallback_ptr)
    if first == GRAFT_DONE then
        return
    end
    if first < 0 then
        ngx_log(ERR, "graft: resume failed: ", first)
        return
    end
    local plan = plan_for(r, zone, tonumber(generation_ptr[0]))
    if not plan then
        return
    end
    local req = new_request()
    local native_fallback = fallback_ptr[0] == 1
    for i = first + 1, #plan do
        local step = plan[i]
        local d
        if native_fallback and i == first + 1 then
            -- Rust already declined or failed on it natively (and counted it).
            d = lua_decision(step, req, r, zone, i - 1)
        else
            d = decide(r, zone, i - 1, step, req)
        end
        local log = d.log
        if log then
            for j = 1, #log do
                ngx_log(WARN, "graft: zone \"", step.zone, "\" module \"", step.module, "\": ", log[j])
            end
        end
        local kind = d.kind
        if kind == "respond" then
            return respond(d)
        end
        if kind == "continue" and apply_changes(d) then
            req = new_request()
        end
    end
end

-- Applies the response-header changes modules asked for. Call it from
-- header_filter_by_lua*.
function _M.header_filter()
    local pending = ngx.ctx.graft_response_headers
    if not pending then
        return
    end
    for i = 1, #pending do
        local op = pending[i]
        if op.action == "remove" then
            ngx_header[op.name] = nil
        elseif op.action == "add" then
            local current = ngx_header[op.name]
            if current == nil then
                ngx_header[op.name] = op.value
            elseif type(current) == "table" then
                current[#current + 1] = op.value
                ngx_header[op.name] = current
            else
                ngx_header[op.name] = { current, op.value }
            end
        else
            ngx_header[op.name] = op.value
        end
    end
end

-- The counters of every zone and module (every worker's, summed), as JSON text.
function _M.counters()
    local r = get_request()
    if not r then
        error("no request found", 2)
    end
    return read_string(function(buf, size)
        return C.graft_ffi_counters(r, buf, size)
    end)
end

-- A content handler serving the metrics (every worker's, summed) in
-- Prometheus' text format.
function _M.serve_metrics()
    local r = get_request()
    if not r then
        error("no request found", 2)
    end
    local text, err = read_string(function(buf, size)
        return C.graft_ffi_metrics(r, buf, size)
    end)
    if not text then
        ngx_log(ERR, err)
        return ngx_exit(500)
    end
    ngx_header["Content-Type"] = "text/plain; version=0.0.4"
    ngx_print(text)
end

local function admin_reply(status, body)
    ngx.status = status
    ngx_header["Content-Type"] = "text/plain"
    ngx_print(body, "\n")
    return ngx_exit(status)
end

-- The admin API, for a location on a loopback-only listener:
--   POST .../apply                     load the graft file again, live
--   POST .../kill?module=M[&zone=Z]    send M back to Lua (in Z, or everywhere)
--   POST .../revive?module=M[&zone=Z]  reset that kill switch
--   GET  .../status                    modes and counters, as JSON
function _M.admin()
    local r = get_request()
    if not r then
        error("no request found", 2)
    end
    local action = ngx_var.uri:match("/([%a_]+)$")
    local method = ngx_req.get_method()
    if action == "status" and method == "GET" then
        return _M.serve_counters()
    end
    if method ~= "POST" then
        return admin_reply(405, "use POST for " .. tostring(action))
    end
    if action == "apply" then
        local rc, message = call_with_buffer(function(buf, size)
            return C.graft_ffi_apply(r, buf, size)
        end)
        if rc == GRAFT_OK then
            return admin_reply(200, message)
        end
        return admin_reply(400, "refused, the running configuration goes on: " .. message)
    end
    if action == "kill" or action == "revive" then
        local args = ngx_req.get_uri_args()
        local module, zone = args.module, args.zone or ""
        if type(module) ~= "string" or type(zone) ~= "string" then
            return admin_reply(400, "module=<name> [zone=<zone>]")
        end
        local state = action == "kill" and 1 or 0
        local rc, message = call_with_buffer(function(buf, size)
            return C.graft_ffi_kill(r, module, #module, zone, #zone, state, buf, size)
        end)
        if rc == GRAFT_OK then
            return admin_reply(200, action == "kill" and "killed" or "revived")
        end
        return admin_reply(400, message)
    end
    return admin_reply(404, "no such admin action")
end

-- A content handler serving the counters.
function _M.serve_counters()
    local json, err = _M.counters()
    if not json then
        ngx_log(ERR, err)
        return ngx_exit(500)
    end
    ngx_header["Content-Type"] = "application/json"
    ngx_print(json)
end

return _M
