-- graft.response: the response-body phase on the Lua side. A zone's steps
-- whose legacy module has on_response_body(head) (html_rewrite), for the
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

local GRAFT_USE_LUA = abi.GRAFT_USE_LUA
local GRAFT_COUNT_FAILED = abi.GRAFT_COUNT_FAILED
local GRAFT_COUNT_UNTOUCHED = abi.GRAFT_COUNT_UNTOUCHED
local GRAFT_LOG_FAILURE = abi.GRAFT_LOG_FAILURE

local generation_ptr = ffi_new("unsigned long long[1]")

local _M = {}

-- Counted as failed, and logged within the budget of failure lines: the
-- response has started, so no failure policy can answer it.
local function failed(r, zone, index, module, why)
    C.graft_ffi_count(r, zone, index, GRAFT_COUNT_FAILED)
    local line = "graft: module \"" .. module .. "\" " .. tostring(why)
                 .. ": the rest of the response body passes as it is"
    C.graft_ffi_log(r, GRAFT_LOG_FAILURE, line, #line)
end

function _M.header_filter()
    local r = get_request()
    if not r then
        return
    end
    local zone = C.graft_ffi_zone(r, nil, 0, generation_ptr)
    if zone < 0 then
        return
    end
    local steps = plan.for_zone(r, zone, tonumber(generation_ptr[0]))
    if not steps then
        return
    end
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
                                              module = steps[i].module }
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
            if ok then
                chunk = out
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

return _M
