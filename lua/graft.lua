-- graft: the Lua side of the bridge to graft's nginx module.
--
--   init_by_lua_block          { require "graft" }
--   access_by_lua_block        { require("graft").access() }
--
-- access() runs the zone's modules in order, each in its mode (lua, rust,
-- shadow). The Rust side is called through LuaJIT's FFI with the request
-- pointer: Rust reads the request where nginx keeps it. The C declarations
-- below mirror shim/include/graft.h; the ABI version is checked at load.

local ffi = require "ffi"
local base = require "resty.core.base"
local cjson = require "cjson.safe"
local contract = require "graft.contract"
local declared = require "graft.legacy"

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
local collectgarbage = collectgarbage
local lower = string.lower

local equal = contract.equal
local describe = contract.describe

local GRAFT_ABI_VERSION = 7

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
local GRAFT_COUNT_FAILED = 8
local GRAFT_COUNT_NATIVE = 9

local GRAFT_LOG_DECISION = 0
local GRAFT_LOG_FAILURE = 1
local GRAFT_LOG_DIFF = 2
local GRAFT_LOG_DECLINE = 3

local GRAFT_PLANS_LOADED = 0
local GRAFT_PLANS_PENDING = 1

local GRAFT_APPLY_CHECK = 0
local GRAFT_APPLY_COMMIT = 1
local GRAFT_APPLY_REFUSE = 2

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
int graft_ffi_zone(void *r, const unsigned char *scope, size_t scope_len, unsigned long long *generation);
int graft_ffi_plan(void *r, int zone, unsigned char *buf, size_t *len);
int graft_ffi_run(void *r, int zone, int step, graft_decision_t *out);
int graft_ffi_count(void *r, int zone, int step, int what);
int graft_ffi_counters(void *r, unsigned char *buf, size_t *len);
int graft_ffi_resume(void *r, int zone, int *fallback);
int graft_ffi_metrics(void *r, unsigned char *buf, size_t *len);
int graft_ffi_apply(void *r, int stage, unsigned char *buf, size_t *len);
int graft_ffi_kill(void *r, const unsigned char *module, size_t module_len, const unsigned char *zone, size_t zone_len, int state, unsigned char *buf, size_t *len);
int graft_ffi_observe(void *r, int zone, int step, int what, unsigned long long nanos);
int graft_ffi_fail(void *r, int zone, int step, const unsigned char *why, size_t why_len);
int graft_ffi_log(void *r, int family, const unsigned char *line, size_t line_len);
int graft_ffi_plans(void *r, int which, int zone, unsigned char *buf, size_t *len);
int graft_ffi_response_header(void *r, int action, const unsigned char *name, size_t name_len, const unsigned char *value, size_t value_len);
int graft_ffi_fail_module(void *r, const unsigned char *module, size_t module_len, const unsigned char *why, size_t why_len);
int graft_ffi_note_diff(void *r, int zone, int step, const unsigned char *lua, size_t lua_len, const unsigned char *rust, size_t rust_len);
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

local ACTION_CODES = {
    set = GRAFT_HEADER_SET,
    add = GRAFT_HEADER_ADD,
    remove = GRAFT_HEADER_REMOVE,
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
-- the module says it needs more (a text can grow between two calls, so a
-- few times); returns the code and the text written. Never reads more
-- than the buffer holds, whatever the module wrote in *size.
local function call_with_buffer(fetch)
    local size = get_size_ptr()
    local capacity = 4096
    for _ = 1, 4 do
        local buf = get_string_buf(capacity)
        size[0] = capacity
        local rc = fetch(buf, size)
        if rc ~= GRAFT_AGAIN then
            local n = tonumber(size[0])
            if n > capacity then
                n = capacity
            end
            return rc, ffi_string(buf, n)
        end
        capacity = tonumber(size[0]) + 4096
    end
    return GRAFT_AGAIN, "graft: the text kept growing"
end

local function read_string(fetch)
    local rc, text = call_with_buffer(fetch)
    if rc ~= GRAFT_OK then
        return nil, "graft: error " .. rc
    end
    return text
end

-- A zone's plan from its JSON: one entry a step, with the step's legacy
-- instance, or the reason there is none (the step then fails by its
-- policy; a checked configuration never gets here without one).
local function plan_from(data)
    local steps = data.steps
    local plan = new_tab(#steps, 0)
    for i = 1, #steps do
        local step = steps[i]
        local entry = { zone = data.zone, module = step.module, mode = step.mode }
        -- A team's own function declared for the module comes first.
        local ok, mod = true, declared.find(step.module)
        if not mod then
            ok, mod = pcall(require, "graft.legacy." .. step.module)
        end
        if not ok then
            entry.missing = "no Lua implementation of module \"" .. step.module .. "\": " .. tostring(mod)
        else
            local built, inst, ierr = pcall(mod.new, step.config, data.zone)
            if not built then
                entry.missing = "Lua module \"" .. step.module .. "\" failed to build: " .. tostring(inst)
            elseif not inst then
                entry.missing = "Lua module \"" .. step.module .. "\" refused its configuration: "
                                .. tostring(ierr)
            else
                entry.legacy = inst
            end
        end
        plan[i] = entry
    end
    return plan
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
    return plan_from(data)
end

-- Loads and builds every zone's plan of a configuration (`which`: the one
-- the master just loaded, or the one a live apply checks), one zone at a
-- time, and drops them: a worker builds a zone's plan when the zone first
-- serves. Returns true, or nil and an error naming the zone and module of
-- the first legacy module that cannot be loaded or built (nil and nil:
-- no graft_config in this http block).
local function check_plans(r, which)
    local zone = 0
    while true do
        local rc, json = call_with_buffer(function(buf, size)
            return C.graft_ffi_plans(r, which, zone, buf, size)
        end)
        if rc == GRAFT_DONE then
            return true
        end
        if rc == GRAFT_NO_CONFIG then
            return nil
        end
        if rc ~= GRAFT_OK then
            return nil, "graft: cannot read the plans: error " .. rc
        end
        local data, derr = cjson.decode(json)
        if not data then
            return nil, "graft: bad plan: " .. tostring(derr)
        end
        local plan = plan_from(data)
        for i = 1, #plan do
            if plan[i].missing then
                return nil, "graft: zone \"" .. plan[i].zone .. "\": module #" .. (i - 1)
                            .. " \"" .. plan[i].module .. "\": " .. plan[i].missing
            end
        end
        zone = zone + 1
        if zone % 256 == 0 then
            collectgarbage("collect")
        end
    end
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
            return nil, err
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
local GRAFT_SAMPLE_EVERY = 8
local sample = 0
local ts = ffi_new("struct graft_timespec[1]")

local function now_ns()
    C.clock_gettime(CLOCK_MONOTONIC, ts)
    return tonumber(ts[0].tv_sec) * 1e9 + tonumber(ts[0].tv_nsec)
end

-- Runs a step's Lua side, timing one call in GRAFT_SAMPLE_EVERY as the Rust
-- side does.
local function lua_decision(step, req, r, zone, index)
    local inst = step.legacy
    if not inst then
        return nil, step.missing
    end
    sample = sample + 1
    local ok, d
    if r and sample % GRAFT_SAMPLE_EVERY == 0 then
        local started = now_ns()
        ok, d = pcall(inst.on_request, inst, req)
        C.graft_ffi_observe(r, zone, index, GRAFT_IMPL_LUA, now_ns() - started)
    else
        ok, d = pcall(inst.on_request, inst, req)
    end
    if ok and type(d) == "table" then
        return d
    end
    if ok then
        return nil, "its Lua side returned " .. tostring(d) .. ", not a decision"
    end
    return nil, "its Lua side threw: " .. tostring(d)
end

-- A step no implementation could decide: Rust counts it, logs it within
-- the budget of failure lines, and says what its failure policy serves.
local function failed(r, zone, index, why)
    why = tostring(why)
    local status = C.graft_ffi_fail(r, zone, index, why, #why)
    if status > 0 then
        return { kind = "respond", status = status, headers = {}, body = "" }
    end
    if status < 0 then
        -- Not even the failure could be recorded: let nothing through.
        ngx_log(ERR, "graft: the failure of step ", index, " could not be recorded: ", status)
        return { kind = "respond", status = 500, headers = {}, body = "" }
    end
    return contract.CONTINUE
end

-- Serves the step from Lua, or by its failure policy when Lua cannot.
local function lua_or_fail(step, req, r, zone, index)
    local d, err = lua_decision(step, req, r, zone, index)
    if d then
        return d
    end
    return failed(r, zone, index, err)
end

-- Writes a line within its family's budget a second (Rust keeps it).
local function log_line(r, family, line)
    C.graft_ffi_log(r, family, line, #line)
end

local function decide(r, zone, index, step, req)
    local mode = step.mode
    if mode == "lua" then
        C.graft_ffi_count(r, zone, index, GRAFT_COUNT_LUA)
        return lua_or_fail(step, req, r, zone, index)
    end

    -- One call: Rust resolves the mode for this request (a canary per
    -- client, a kill switch), runs its side and counts what served.
    local o = out[0]
    local rc = C.graft_ffi_run(r, zone, index, out)
    if rc == GRAFT_USE_LUA then
        return lua_or_fail(step, req, r, zone, index)
    end
    if mode ~= "shadow" then
        if rc == GRAFT_OK then
            return rust_decision(o)
        end
        return lua_or_fail(step, req, r, zone, index)
    end

    -- shadow: Lua serves, Rust is compared.
    local rust = rc == GRAFT_OK and rust_decision(o) or rust_failure(rc, o)
    local served, err = lua_decision(step, req, r, zone, index)
    C.graft_ffi_count(r, zone, index, GRAFT_COUNT_LUA)
    if not served then
        return failed(r, zone, index, err)
    end
    if equal(served, rust) then
        C.graft_ffi_count(r, zone, index, GRAFT_COUNT_SHADOW_MATCH)
    else
        C.graft_ffi_count(r, zone, index, GRAFT_COUNT_SHADOW_DIFF)
        local lua_text, rust_text = describe(served), describe(rust)
        C.graft_ffi_note_diff(r, zone, index, lua_text, #lua_text, rust_text, #rust_text)
        log_line(r, GRAFT_LOG_DIFF, "graft: shadow diff: zone \"" .. step.zone .. "\" module \""
                 .. step.module .. "\" request \"" .. tostring(ngx_var.request) .. "\": lua: "
                 .. lua_text .. " | rust: " .. rust_text)
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

-- Applies a continue decision; returns true when the request changed, or
-- nil and why when a response-header change cannot be kept.
local function apply_changes(r, d)
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
    -- Response-header changes are kept in the request's record in Rust,
    -- applied by graft's header filter to the main response (as the native
    -- pipeline's are), and outlive an internal redirect.
    ops = d.response_headers
    if ops then
        for i = 1, #ops do
            local op = ops[i]
            local name, value = tostring(op.name), tostring(op.value or "")
            local code = ACTION_CODES[op.action] or -1
            local rc = C.graft_ffi_response_header(r, code, name, #name, value, #value)
            if rc == GRAFT_ERROR then
                return nil, "a response-header change graft refuses: " .. tostring(op.action)
                            .. " \"" .. name .. "\""
            end
        end
    end
    return changed
end

-- One step's decision for the request: decided in its mode (or by Lua
-- alone when Rust already failed on it natively), its log lines written
-- within their budget, and a decision of no known kind turned into the
-- step's failure.
local function step_decision(r, zone, index, step, req, lua_only)
    local d
    if lua_only then
        d = lua_or_fail(step, req, r, zone, index)
    else
        d = decide(r, zone, index, step, req)
    end
    local log = d.log
    if log then
        for j = 1, #log do
            log_line(r, GRAFT_LOG_DECISION, "graft: zone \"" .. step.zone .. "\" module \""
                     .. step.module .. "\": " .. tostring(log[j]))
        end
    end
    local kind = d.kind
    if kind ~= "respond" and kind ~= "continue" then
        d = failed(r, zone, index, "its decision has no kind graft knows: " .. tostring(kind))
    elseif kind == "respond" and not (type(d.status) == "number" and d.status >= 200
                                       and d.status <= 599 and d.status % 1 == 0) then
        -- ngx.exit(0) would let the request through.
        d = failed(r, zone, index, "it answers with no status graft sends: " .. tostring(d.status))
    end
    return d
end

-- Runs the zone's modules for the current request. Call it from
-- access_by_lua*.
function _M.access()
    local r = get_request()
    if not r then
        error("no request found", 2)
    end
    local zone = C.graft_ffi_zone(r, nil, 0, generation_ptr)
    if zone < 0 then
        if zone == GRAFT_DECLINED then
            return -- no zone serves this host
        end
        if zone == GRAFT_NO_CONFIG then
            ngx_log(ERR, "graft: no graft_config in this http block")
            return
        end
        -- graft cannot tell which steps apply: it lets nothing through.
        ngx_log(ERR, "graft: zone lookup failed: ", zone)
        return ngx_exit(500)
    end
    -- Once a main request, wherever it first reaches a graft location (an
    -- internal redirect into another one finds it run; a subrequest never
    -- runs it); the native pipeline (graft_native on) may have run the
    -- first steps.
    local first = C.graft_ffi_resume(r, zone, fallback_ptr)
    if first == GRAFT_DONE then
        return
    end
    if first < 0 then
        ngx_log(ERR, "graft: resume failed: ", first)
        return ngx_exit(500)
    end
    local plan, err = plan_for(r, zone, tonumber(generation_ptr[0]))
    if not plan then
        -- Without its plan no step can be told apart: graft itself failed.
        ngx_log(ERR, "graft: no plan for the request's zone: ", err)
        return ngx_exit(500)
    end
    local req = new_request()
    local native_fallback = fallback_ptr[0] == 1
    for i = first + 1, #plan do
        -- Rust already declined or failed on the first step natively (and
        -- counted it): Lua serves it without asking Rust again.
        local d = step_decision(r, zone, i - 1, plan[i], req, native_fallback and i == first + 1)
        if d.kind == "respond" then
            return respond(d)
        end
        local changed, aerr = apply_changes(r, d)
        if changed == nil then
            d = failed(r, zone, i - 1, aerr)
            if d.kind == "respond" then
                return respond(d)
            end
        elseif changed then
            req = new_request()
        end
    end
end

-- What decide serves when no step of the module can be found for the
-- request: the module's own failure policy (logged by Rust).
local function module_failed(r, module, why)
    local status = C.graft_ffi_fail_module(r, module, #module, why, #why)
    if status == GRAFT_ERROR then
        error("graft.decide: no module \"" .. module .. "\"", 3)
    end
    if status > 0 then
        return { kind = "respond", status = status, headers = {}, body = "" }
    end
    return contract.CONTINUE
end

-- Runs one module of the request's zone (or of the zone named `scope`)
-- from a team's own handler, where it used to call its own function, with
-- the same modes, fallback, shadow comparison, canary, failure policy and
-- counters as the pipeline (the zone's first step of that module); returns
-- the decision as a table of graft.contract, for graft.apply (or the
-- handler) to carry out. When no step of the module serves the request (no
-- zone for it, or its zone has none), the module's own failure policy
-- decides (access controls answer 503), logged. For handlers that do not
-- also run graft.access() over the same zone.
function _M.decide(module, scope)
    if type(module) ~= "string" or (scope ~= nil and type(scope) ~= "string") then
        error("graft.decide(module [, scope])", 2)
    end
    local r = get_request()
    if not r then
        error("no request found", 2)
    end
    local zone
    if scope then
        zone = C.graft_ffi_zone(r, scope, #scope, generation_ptr)
    else
        zone = C.graft_ffi_zone(r, nil, 0, generation_ptr)
    end
    if zone < 0 then
        return module_failed(r, module, "no zone " .. (scope and ("named \"" .. scope .. "\"")
                                                       or "serves this request"))
    end
    local plan, err = plan_for(r, zone, tonumber(generation_ptr[0]))
    if not plan then
        return module_failed(r, module, tostring(err))
    end
    for i = 1, #plan do
        if plan[i].module == module then
            return step_decision(r, zone, i - 1, plan[i], new_request(), false)
        end
    end
    return module_failed(r, module, "the request's zone has no step of it")
end

-- Carries out a decision graft.decide returned: a respond answers now (and
-- ends the request), a continue applies its changes.
function _M.apply(d)
    if type(d) ~= "table" or (d.kind ~= "respond" and d.kind ~= "continue") then
        error("graft.apply(decision): not a decision: " .. tostring(d and d.kind or d), 2)
    end
    local r = get_request()
    if not r then
        error("no request found", 2)
    end
    if d.kind == "respond" then
        return respond(d)
    end
    local changed, err = apply_changes(r, d)
    if changed == nil then
        ngx_log(ERR, "graft: ", err)
        return ngx_exit(500)
    end
end

-- Kept for configurations that call it from header_filter_by_lua*: the
-- response-header changes of every step are now applied by graft's own
-- header filter in the nginx module, whichever side decided them.
function _M.header_filter()
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

-- The longest module or zone name the admin API takes (a host name is at
-- most 253 bytes).
local MAX_NAME = 253

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
            return C.graft_ffi_apply(r, GRAFT_APPLY_CHECK, buf, size)
        end)
        if rc ~= GRAFT_OK then
            return admin_reply(400, "refused, the running configuration goes on: " .. message)
        end
        -- Every legacy module the new file names must load and build.
        local checked, err = check_plans(r, GRAFT_PLANS_PENDING)
        if not checked then
            call_with_buffer(function(buf, size)
                return C.graft_ffi_apply(r, GRAFT_APPLY_REFUSE, buf, size)
            end)
            return admin_reply(400, "refused, the running configuration goes on: " .. tostring(err))
        end
        rc, message = call_with_buffer(function(buf, size)
            return C.graft_ffi_apply(r, GRAFT_APPLY_COMMIT, buf, size)
        end)
        if rc ~= GRAFT_OK then
            return admin_reply(400, "refused, the running configuration goes on: " .. message)
        end
        return admin_reply(200, message)
    end
    if action == "kill" or action == "revive" then
        local args = ngx_req.get_uri_args(8)
        local module, zone = args.module, args.zone or ""
        if type(module) ~= "string" or type(zone) ~= "string"
           or #module > MAX_NAME or #zone > MAX_NAME then
            return admin_reply(400, "module=<name> [zone=<zone>], each at most " .. MAX_NAME .. " bytes")
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

-- Started from init_by_lua (at start and on each reload): every legacy
-- module the configuration names must load and build now, or nginx refuses
-- the configuration, naming the zone and module. The instances are
-- dropped as they are checked: a configuration of 10,000 zones would
-- otherwise hold every zone's Lua tables in every worker, the native
-- pipeline's too.
if ngx.get_phase() == "init" then
    declared.seal()
    local ok, err = check_plans(nil, GRAFT_PLANS_LOADED)
    if not ok and err then
        error(err, 0)
    end
    collectgarbage("collect")
end

return _M
