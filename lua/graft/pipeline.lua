-- graft.pipeline: a zone's steps for the current request, each in its
-- mode (lua, rust, shadow, canary), with fallback, shadow comparison and
-- failure policy; and graft.decide/graft.apply for a team's own handler.
-- The hot path of graft's Lua side: every function here stays
-- JIT-compiled (tests/tests/jit.rs).
local ffi = require "ffi"
local base = require "resty.core.base"
local abi = require "graft.abi"
local contract = require "graft.contract"
local plan = require "graft.plan"
local request = require "graft.request"

local C = ffi.C
local ffi_new = ffi.new
local ffi_string = ffi.string
local get_request = base.get_request
local new_tab = base.new_tab
local new_request = request.new
local now_ns = abi.now_ns
local equal = contract.equal
local describe = contract.describe

local ngx = ngx
local ngx_var = ngx.var
local ngx_req = ngx.req
local ngx_log = ngx.log
local ngx_exit = ngx.exit
local ngx_print = ngx.print
local ngx_header = ngx.header
local ERR = ngx.ERR
local error = error
local pcall = pcall
local tonumber = tonumber
local tostring = tostring
local type = type
local lower = string.lower

local GRAFT_COUNT_LUA = abi.GRAFT_COUNT_LUA
local GRAFT_COUNT_SHADOW_DIFF = abi.GRAFT_COUNT_SHADOW_DIFF
local GRAFT_COUNT_SHADOW_MATCH = abi.GRAFT_COUNT_SHADOW_MATCH
local GRAFT_DECLINED = abi.GRAFT_DECLINED
local GRAFT_DONE = abi.GRAFT_DONE
local GRAFT_ERROR = abi.GRAFT_ERROR
local GRAFT_FAIL_CONTINUE = abi.GRAFT_FAIL_CONTINUE
local GRAFT_FRAMING = abi.GRAFT_FRAMING
local GRAFT_RESUME_CLAIMED = abi.GRAFT_RESUME_CLAIMED
local GRAFT_RESUME_FALLBACK = abi.GRAFT_RESUME_FALLBACK
local GRAFT_HEADER_ADD = abi.GRAFT_HEADER_ADD
local GRAFT_HEADER_REMOVE = abi.GRAFT_HEADER_REMOVE
local GRAFT_HEADER_SET = abi.GRAFT_HEADER_SET
local GRAFT_IMPL_LUA = abi.GRAFT_IMPL_LUA
local GRAFT_LOG_DECISION = abi.GRAFT_LOG_DECISION
local GRAFT_LOG_DIFF = abi.GRAFT_LOG_DIFF
local GRAFT_NO_CONFIG = abi.GRAFT_NO_CONFIG
local GRAFT_OK = abi.GRAFT_OK
local GRAFT_PANIC = abi.GRAFT_PANIC
local GRAFT_RESPOND = abi.GRAFT_RESPOND
local GRAFT_SAMPLE_EVERY = abi.GRAFT_SAMPLE_EVERY
local GRAFT_TARGET_LOG = abi.GRAFT_TARGET_LOG
local GRAFT_TARGET_REQUEST = abi.GRAFT_TARGET_REQUEST
local GRAFT_USE_LUA = abi.GRAFT_USE_LUA
local read_body = ngx_req.read_body

local _M = {}

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
local sample = 0

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

-- Why one header of a Lua decision cannot go on the wire, or nil: checked
-- by Rust's own rules (HeaderName, HeaderValue, the framing headers).
local function header_refused(name, value)
    if type(name) ~= "string" then
        return "name that is not a string: " .. tostring(name), false
    end
    if value == nil then
        value = ""
    elseif type(value) == "number" then
        value = tostring(value)
    elseif type(value) ~= "string" then
        return "\"" .. name .. "\" with a value that is not a string", false
    end
    local rc = C.graft_ffi_check_header(name, #name, value, #value)
    if rc == GRAFT_OK then
        return nil
    end
    if rc == GRAFT_FRAMING then
        return "\"" .. name .. ": " .. value .. "\", which only the server frames", true
    end
    return "\"" .. name .. "\", which graft refuses (a control byte, a name that is"
           .. " not a token, or over its length)", false
end

-- An answer's headers without a Content-Length equal to its body's length
-- (graft sets it from the body, as Rust's Decision::check_framing drops it).
local function without_length(headers, body)
    local kept = {}
    for i = 1, #headers do
        local h = headers[i]
        if not (lower(h[1]) == "content-length" and tostring(h[2]) == tostring(#body)) then
            kept[#kept + 1] = h
        end
    end
    return kept
end

local function ops_refused(ops, which)
    if ops == nil then
        return nil
    end
    for i = 1, #ops do
        local op = ops[i]
        if type(op) ~= "table" or ACTION_CODES[op.action] == nil then
            return "changes a " .. which .. " header with no action graft knows: "
                   .. tostring(type(op) == "table" and op.action or op)
        end
        local why = header_refused(op.name, op.value)
        if why then
            return "changes the " .. which .. " header " .. why
        end
    end
    return nil
end

-- The response-header phase checks its changes by the same rules.
_M.ops_refused = ops_refused

-- A Lua decision checked whole before any of it is applied, by the rules
-- Rust's decisions are checked by (Decision::check_framing): the decision
-- (an answer's matching Content-Length dropped), or nil and why.
local function checked(d)
    local kind = d.kind
    if kind == "respond" then
        local body = d.body or ""
        if type(body) ~= "string" then
            return nil, "answers with a body that is not a string"
        end
        local status = d.status
        if not (type(status) == "number" and status >= 200 and status <= 599
                and status % 1 == 0) then
            return nil, "answers with status " .. tostring(status) .. ", not one from 200 to 599"
        end
        if (status == 204 or status == 304) and body ~= "" then
            return nil, "answers " .. status .. " with a body of " .. #body
                        .. " bytes, which that status cannot carry"
        end
        local headers = d.headers
        if headers == nil then
            d.headers = {}
            return d
        end
        if type(headers) ~= "table" then
            return nil, "answers with headers that are not a list"
        end
        local length
        for i = 1, #headers do
            local h = headers[i]
            if type(h) ~= "table" then
                return nil, "answers with a header that is not a {name, value} pair"
            end
            local why, framing = header_refused(h[1], h[2])
            if why then
                if not (framing and lower(h[1]) == "content-length"
                        and tostring(h[2]) == tostring(#body)) then
                    return nil, "answers with the header " .. why .. " (its body is " .. #body
                                .. " bytes)"
                end
                length = true
            end
        end
        if length then
            d.headers = without_length(headers, body)
        end
        return d
    end
    if kind == "continue" then
        if d.uri ~= nil and type(d.uri) ~= "string" then
            return nil, "changes the URI to something that is not a string"
        end
        local why = ops_refused(d.request_headers, "request")
                    or ops_refused(d.response_headers, "response")
        if why then
            return nil, why
        end
    end
    return d
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
        local c, why = checked(d)
        if c then
            return c
        end
        return nil, "its Lua side's decision " .. why
    end
    if ok then
        return nil, "its Lua side returned " .. tostring(d) .. ", not a decision"
    end
    return nil, "its Lua side threw: " .. tostring(d)
end

-- A step no implementation could decide: Rust counts it, logs it within
-- the budget of failure lines, and says what its failure policy serves.
-- The decision a failure policy's answer stands for (graft_ffi_fail,
-- graft_ffi_fail_module): continue, or respond with its status; an error
-- code means not even the failure could be recorded: nothing gets through.
local function policy_decision(status, kind, name)
    if status == GRAFT_FAIL_CONTINUE then
        return contract.CONTINUE
    end
    if status < 0 then
        ngx_log(ERR, "graft: the failure of ", kind, " ", name, " could not be recorded: ", status)
        status = 500
    end
    return { kind = "respond", status = status, headers = {}, body = "" }
end

local function failed(r, zone, index, why)
    why = tostring(why)
    return policy_decision(C.graft_ffi_fail(r, zone, index, why, #why), "step", index)
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
    if rc == GRAFT_DECLINED then -- luacheck: ignore 542
        -- A decline is an outcome of its own (Rust counted it, and logged
        -- it at info), not a difference: a module may leave a request to
        -- Lua on purpose.
    elseif equal(served, rust) then
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

-- Sends an answer as the native pipeline does (respond in
-- shim/nginx/src/native.rs), byte for byte: nginx's own page for a status
-- of 300 or more without a body; else the status, Content-Length from the
-- body (so an HTTP/1.1 answer is never chunked) and the body, if any. A
-- header named twice is sent twice.
local function respond(d)
    local headers = d.headers
    for i = 1, #headers do
        local name, value = headers[i][1], headers[i][2]
        local prev = ngx_header[name]
        if prev == nil then
            ngx_header[name] = value
        elseif type(prev) == "table" then
            prev[#prev + 1] = value
            ngx_header[name] = prev
        else
            ngx_header[name] = { prev, value }
        end
    end
    local body = d.body or ""
    local status = d.status
    if body == "" and status >= 300 then
        return ngx_exit(status)
    end
    ngx.status = status
    if status ~= 204 then -- a 204 has no body, and no length (RFC 9110, 8.6)
        ngx_header["Content-Length"] = #body
    end
    if body ~= "" then
        ngx_print(body)
    end
    return ngx_exit(ngx.HTTP_OK)
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

-- Applies a continue decision, checked whole before (checked, or Rust's
-- Decision::check_framing): the response-header changes are handed to
-- Rust first, then the URI and request headers change. Returns true when
-- the request changed, or nil and why when a response-header change
-- cannot be kept (graft could not keep it in the request's record).
local function apply_changes(r, d)
    -- Response-header changes are kept in the request's record in Rust,
    -- applied by graft's header filter to the main response (as the native
    -- pipeline's are), and outlive an internal redirect.
    local ops = d.response_headers
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
    local changed = false
    if d.uri then
        ngx_req.set_uri(d.uri)
        changed = true
    end
    ops = d.request_headers
    if ops and #ops > 0 then
        for i = 1, #ops do
            apply_request_header(ops[i])
        end
        changed = true
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

-- One step of the pipeline, its decision carried out: an answer to send,
-- or nil and whether the request changed.
local function carry_out(r, zone, index, step, req, lua_only)
    local d = step_decision(r, zone, index, step, req, lua_only)
    if d.kind == "respond" then
        return d
    end
    local changed, err = apply_changes(r, d)
    if changed ~= nil then
        return nil, changed
    end
    d = failed(r, zone, index, err)
    if d.kind == "respond" then
        return d
    end
    return nil, false
end

-- A zone whose modules read request bodies: nginx reads the body (at
-- most client_max_body_size; into a file past client_body_buffer_size),
-- then graft says whether the request goes on (nil) or the status it is
-- answered with (a body over the zone's max_bytes it answers, or one that
-- cannot be read). How much each request object reads: `max_bytes`.
local function zone_body(r, zone, body)
    if not body then
        return nil, nil
    end
    read_body()
    local status = C.graft_ffi_body(r, zone)
    if status ~= GRAFT_OK then
        return body.max_bytes, status > 0 and status or 500
    end
    return body.max_bytes, nil
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
    local plan, err = plan.for_zone(r, zone, tonumber(generation_ptr[0]))
    if not plan then
        -- Without its plan no step can be told apart: graft itself failed.
        ngx_log(ERR, "graft: no plan for the request's zone: ", err)
        return ngx_exit(500)
    end
    local body_max, refused = zone_body(r, zone, plan.body)
    if refused then
        return ngx_exit(refused)
    end
    local req = new_request(body_max)
    local flags = fallback_ptr[0]
    local claimed = flags >= GRAFT_RESUME_CLAIMED
    local native_fallback = flags % GRAFT_RESUME_CLAIMED == GRAFT_RESUME_FALLBACK
    for i = first + 1, #plan do
        -- A step runs once a request: one a team's handler ran first
        -- (graft.decide) is passed.
        if not (claimed and C.graft_ffi_claimed(r, zone, i - 1) == GRAFT_DONE) then
            -- Rust already declined or failed on the first step natively
            -- (and counted it): Lua serves it without asking Rust again.
            local answer, changed = carry_out(r, zone, i - 1, plan[i], req,
                                              native_fallback and i == first + 1)
            if answer then
                return respond(answer)
            end
            if changed then
                req = new_request(body_max)
            end
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
    return policy_decision(status, "module", module)
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
    local plan, err = plan.for_zone(r, zone, tonumber(generation_ptr[0]))
    if not plan then
        return module_failed(r, module, tostring(err))
    end
    for i = 1, #plan do
        if plan[i].module == module then
            -- A step runs once a request: one the zone's pipeline (native
            -- or the bridge) or an earlier graft.decide ran has applied
            -- what it decided, and changes nothing more.
            local claim = C.graft_ffi_claim(r, zone, i - 1)
            if claim == GRAFT_DONE then
                return contract.CONTINUE
            elseif claim ~= GRAFT_OK then
                return module_failed(r, module, "graft could not record that it runs")
            end
            local body_max, refused = zone_body(r, zone, plan.body)
            if refused then
                return policy_decision(refused, "body", module)
            end
            return step_decision(r, zone, i - 1, plan[i], new_request(body_max), false)
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
    local c, why = checked(d)
    if not c then
        ngx_log(ERR, "graft: graft.apply: the decision ", why)
        return ngx_exit(500)
    end
    if c.kind == "respond" then
        return respond(c)
    end
    local changed, err = apply_changes(r, c)
    if changed == nil then
        ngx_log(ERR, "graft: ", err)
        return ngx_exit(500)
    end
end

return _M
