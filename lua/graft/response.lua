-- graft.response: the phases after the response starts, on the Lua side:
-- the response-header phase, the response-body phase, and the log phase
-- (at the end of this file).
--
-- The response-header phase. A zone's steps whose Lua twin has
-- on_response(req, resp) (headers' rules on the response), for the
-- responses Lua serves them (graft's header filter decided which, and ran
-- Rust's before this filter): resp.status, and resp:header(name), the
-- first value or nil. The changes are checked as a decision's are
-- (pipeline.ops_refused), then made through ngx.header; a legacy side
-- that throws or gives changes graft refuses leaves the headers as they
-- are, counted as failed and logged. In shadow, its changes are handed to
-- Rust to compare (described as shim/nginx/src/response.rs describes
-- Rust's).
--
-- The response-body phase. A zone's steps
-- whose Lua twin has on_response_body(head) (html_rewrite), for the
-- responses Lua serves them (graft's header filter in the nginx module
-- decided which, by mode, canary and kill switch; Rust rewrote the others
-- before this filter runs):
--
--   header_filter_by_lua_block { require("graft").header_filter() }
--   body_filter_by_lua_block   { require("graft").body_filter() }
--
-- A rewriter takes each chunk (ngx.arg[1]) and gives what it can write
-- so far; at the end of the body (ngx.arg[2]) finish() gives the rest. A
-- legacy side that throws is counted as failed and logged; the rest of
-- the body passes as it is.
local ffi = require "ffi"
local base = require "resty.core.base"
local abi = require "graft.abi"
local plan = require "graft.plan"

local C = ffi.C
local ffi_new = ffi.new
local get_request = base.get_request
local ngx = ngx
local ngx_log = ngx.log
local ERR = ngx.ERR
local pcall = pcall
local tonumber = tonumber
local tostring = tostring
local concat = table.concat

local GRAFT_USE_LUA = abi.GRAFT_USE_LUA
local GRAFT_COUNT_DROPPED = abi.GRAFT_COUNT_DROPPED
local io_open = io.open
local new_request = require("graft.request").new
local ops_refused = require("graft.pipeline").ops_refused
local type = type
local GRAFT_COUNT_FAILED = abi.GRAFT_COUNT_FAILED
local GRAFT_COUNT_UNTOUCHED = abi.GRAFT_COUNT_UNTOUCHED
local GRAFT_LOG_FAILURE = abi.GRAFT_LOG_FAILURE

local generation_ptr = ffi_new("unsigned long long[1]")

local _M = {}

-- Counted as failed, and logged within the budget of failure lines: the
-- response has started, so no failure policy can answer it.
local function failed(r, zone, index, module, why, consequence)
    C.graft_ffi_count(r, zone, index, GRAFT_COUNT_FAILED)
    local line = "graft: module \"" .. module .. "\" " .. tostring(why) .. ": "
                 .. (consequence or "the rest of the response body passes as it is")
    C.graft_ffi_log(r, GRAFT_LOG_FAILURE, line, #line)
end

-- The request, its zone and the zone's plan; nil where no zone serves it.
local function zone_plan()
    local r = get_request()
    if not r then
        return nil
    end
    local zone = C.graft_ffi_zone(r, nil, 0, generation_ptr)
    if zone < 0 then
        return nil
    end
    local steps = plan.for_zone(r, zone, tonumber(generation_ptr[0]))
    if not steps then
        return nil
    end
    return r, zone, steps
end

-- resp:header(name): the response header's first value now, or nil.
local function resp_header(_, name)
    local v = ngx.header[name]
    if type(v) == "table" then
        return v[1]
    end
    return v
end

local function apply_response_op(op)
    local h, name, value = ngx.header, op.name, op.value
    if op.action == "set" then
        h[name] = value
    elseif op.action == "add" then
        local cur = h[name]
        if cur == nil then
            h[name] = value
        elseif type(cur) == "table" then
            cur[#cur + 1] = value
            h[name] = cur
        else
            h[name] = { cur, value }
        end
    else
        h[name] = nil
    end
end

local function describe_ops(ops)
    local parts = {}
    for k = 1, #ops do
        local op = ops[k]
        parts[k] = op.action .. " " .. op.name .. ": " .. tostring(op.value or "")
    end
    return concat(parts, "; ")
end

local function response_headers(r, zone, steps)
    local req, resp
    for i = 1, #steps do
        local step = steps[i]
        local legacy = step.legacy
        if legacy and legacy.on_response
            and C.graft_ffi_response_step(r, zone, i - 1, nil, 0) == GRAFT_USE_LUA then
            req = req or new_request()
            resp = resp or { status = ngx.status, header = resp_header }
            local ok, ops = pcall(legacy.on_response, legacy, req, resp)
            local why
            if not ok then
                why = "its Lua side threw: " .. tostring(ops)
            elseif type(ops) ~= "table" then
                why = "its Lua side gave no list of response changes: " .. tostring(ops)
            else
                why = ops_refused(ops, "response")
                if why then
                    why = "its response-header phase " .. why
                end
            end
            if why then
                ops = nil
                failed(r, zone, i - 1, step.module, why,
                       "the response's headers are left as they are")
            else
                for k = 1, #ops do
                    apply_response_op(ops[k])
                end
            end
            if step.mode == "shadow" then
                local text = ops and describe_ops(ops) or "<failed>"
                C.graft_ffi_response_step(r, zone, i - 1, text, #text)
            end
        end
    end
end

function _M.header_filter()
    local r, zone, steps = zone_plan()
    if not r then
        return
    end
    response_headers(r, zone, steps)
    local head, rewriters
    for i = 1, #steps do
        local legacy = steps[i].legacy
        if legacy and legacy.on_response_body
            and C.graft_ffi_body_step(r, zone, i - 1) == GRAFT_USE_LUA then
            local h = ngx.header
            head = head or { status = ngx.status, content_type = h["Content-Type"],
                             content_encoding = h["Content-Encoding"] }
            local ok, rw = pcall(legacy.on_response_body, legacy, head)
            if not ok then
                failed(r, zone, i - 1, steps[i].module, "its Lua side threw: " .. tostring(rw))
            elseif rw then
                rewriters = rewriters or {}
                rewriters[#rewriters + 1] = { zone = zone, index = i - 1, rw = rw,
                                              module = steps[i].module,
                                              shadow = steps[i].mode == "shadow" and {} or nil }
            else
                C.graft_ffi_count(r, zone, i - 1, GRAFT_COUNT_UNTOUCHED)
            end
        end
    end
    if rewriters then
        ngx.header.content_length = nil
        ngx.ctx.graft_rewriters = rewriters
    end
end

function _M.body_filter()
    local rewriters = ngx.ctx.graft_rewriters
    if not rewriters then
        return
    end
    local r = get_request()
    local chunk, eof = ngx.arg[1], ngx.arg[2]
    for k = 1, #rewriters do
        local e = rewriters[k]
        if not e.dead then
            local ok, out = pcall(e.rw.write, e.rw, chunk)
            if ok and eof then
                local rest
                ok, rest = pcall(e.rw.finish, e.rw)
                if ok then
                    out = out .. rest
                else
                    out = rest
                end
            end
            if ok and e.rw.gave_up then
                -- It gave up and handed back what it held, as it came.
                chunk = out
                e.dead = true
                if r then
                    failed(r, e.zone, e.index, e.module, e.rw.gave_up)
                end
            elseif ok then
                chunk = out
                local seen = e.shadow
                if seen then
                    -- What Lua wrote, for Rust to compare at the end.
                    seen[#seen + 1] = out
                    if eof and r then
                        local body = concat(seen)
                        C.graft_ffi_body_compare(r, e.zone, e.index, body, #body)
                    end
                end
            else
                e.dead = true
                if r then
                    failed(r, e.zone, e.index, e.module, "its Lua side threw: " .. tostring(out))
                else
                    ngx_log(ERR, "graft: a body rewriter threw: ", tostring(out))
                end
            end
        end
    end
    ngx.arg[1] = chunk
end

-- The log phase: a zone's steps whose Lua twin has on_log(req, done)
-- (request_log), for the requests Lua serves them (in shadow, Lua writes
-- and Rust compares its own record):
--
--   log_by_lua_block { require("graft").log() }
--
-- Record files are opened once a worker and path, and written a line at a
-- time; one that cannot be opened or written fails the step (counted,
-- logged).
local files = {}

local function append(path, line)
    local f = files[path]
    if not f then
        local err
        f, err = io_open(path, "a")
        if not f then
            return nil, err
        end
        f:setvbuf("no")
        files[path] = f
    end
    -- One write: workers append to the same file.
    local ok, err = f:write(line .. "\n")
    if not ok then
        files[path] = nil
        return nil, err
    end
    return true
end

function _M.log()
    local r, zone, steps = zone_plan()
    if not r then
        return
    end
    local req, done
    for i = 1, #steps do
        local step = steps[i]
        local legacy = step.legacy
        if legacy and legacy.on_log
            and C.graft_ffi_log_step(r, zone, i - 1, nil, 0) == GRAFT_USE_LUA then
            req = req or new_request()
            done = done or { zone = step.zone, status = ngx.status,
                             bytes_sent = tonumber(ngx.var.bytes_sent) or 0, time = ngx.time() }
            local ok, out = pcall(legacy.on_log, legacy, req, done)
            if not ok then
                failed(r, zone, i - 1, step.module, "its Lua side threw: " .. tostring(out),
                       "no record written")
            elseif out and out.kind == "write" then
                local written, err = append(out.path, out.line)
                if not written then
                    failed(r, zone, i - 1, step.module,
                           "cannot write to " .. tostring(out.path) .. ": " .. tostring(err),
                           "no record written")
                end
            elseif out and out.kind == "dropped" then
                C.graft_ffi_count(r, zone, i - 1, GRAFT_COUNT_DROPPED)
            end
            if step.mode == "shadow" then
                local line = ok and out and out.line or ""
                C.graft_ffi_log_step(r, zone, i - 1, line, #line)
            end
        end
    end
end

return _M
