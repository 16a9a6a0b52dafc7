-- graft.admin: what graft serves about itself: the counters (JSON), the
-- metrics (Prometheus' text), and the admin API (live apply, kill
-- switches) for a location on a loopback-only listener.
local base = require "resty.core.base"
local abi = require "graft.abi"
local plan = require "graft.plan"

local C = require("ffi").C
local get_request = base.get_request
local call_with_buffer = abi.call_with_buffer
local read_string = abi.read_string

local ngx = ngx
local ngx_var = ngx.var
local ngx_req = ngx.req
local ngx_log = ngx.log
local ngx_exit = ngx.exit
local ngx_print = ngx.print
local ngx_header = ngx.header
local ERR = ngx.ERR
local error = error
local tostring = tostring
local type = type
local io_open = io.open

local GRAFT_APPLY_CHECK = abi.GRAFT_APPLY_CHECK
local GRAFT_SWITCH_RESET = abi.GRAFT_SWITCH_RESET
local GRAFT_SWITCH_THROW = abi.GRAFT_SWITCH_THROW
local GRAFT_APPLY_COMMIT = abi.GRAFT_APPLY_COMMIT
local GRAFT_APPLY_REFUSE = abi.GRAFT_APPLY_REFUSE
local GRAFT_OK = abi.GRAFT_OK
local GRAFT_PLANS_PENDING = abi.GRAFT_PLANS_PENDING

local _M = {}

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
-- Prometheus' text format; with totals, only what a fleet agent's health
-- gates read (requests by path over every zone and module).
function _M.serve_metrics(totals)
    local r = get_request()
    if not r then
        error("no request found", 2)
    end
    local text, err = read_string(function(buf, size)
        if totals then
            return C.graft_ffi_totals(r, buf, size)
        end
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

-- The configuration sent with an apply, if any: nil and no error when the
-- request has no body (apply the file), nil and an error when it has one
-- that cannot be read (never the file in its place).
local function sent_text()
    local length = ngx_var.content_length
    if (length == nil or length == "0") and ngx_var.http_transfer_encoding == nil then
        return nil
    end
    ngx_req.read_body()
    local text = ngx_req.get_body_data()
    if text then
        return text
    end
    local path = ngx_req.get_body_file()
    if not path then
        return nil, "the configuration sent could not be read"
    end
    local file, err = io_open(path, "rb")
    if not file then
        return nil, "the configuration sent could not be read: " .. tostring(err)
    end
    text = file:read("*a")
    file:close()
    if not text then
        return nil, "the configuration sent could not be read"
    end
    return text
end

-- The admin API, for a location on a loopback-only listener:
--   POST .../apply                     load the graft file again, live; or
--                                      the configuration sent as the body,
--                                      validated as the file would be
--   POST .../kill?module=M[&zone=Z]    send M back to Lua (in Z, or everywhere)
--   POST .../revive?module=M[&zone=Z]  reset that kill switch
--   POST .../fleet?name=value&...      a fleet agent's report, for the metrics
--   GET  .../status                    modes and counters, as JSON
--   GET  .../metrics                   the metrics, as /graft/metrics
--   GET  .../totals                    requests by path over every zone and
--                                      module, and nginx's own counts
-- POST /graft/admin/apply: the body is a graft file, checked whole by
-- Rust, then every Lua twin it names is loaded and built, then it
-- is committed; any refusal leaves the running configuration serving.
local function apply(r)
    local text, err = sent_text()
    if err then
        return admin_reply(400, "refused, the running configuration goes on: " .. err)
    end
    local rc, message = call_with_buffer(function(buf, size)
        return C.graft_ffi_apply(r, GRAFT_APPLY_CHECK, text, text and #text or 0, buf, size)
    end)
    if rc ~= GRAFT_OK then
        return admin_reply(400, "refused, the running configuration goes on: " .. message)
    end
    -- Every Lua twin the new file names must load and build.
    local checked, why = plan.check(r, GRAFT_PLANS_PENDING)
    if not checked then
        call_with_buffer(function(buf, size)
            return C.graft_ffi_apply(r, GRAFT_APPLY_REFUSE, nil, 0, buf, size)
        end)
        return admin_reply(400, "refused, the running configuration goes on: " .. tostring(why))
    end
    rc, message = call_with_buffer(function(buf, size)
        return C.graft_ffi_apply(r, GRAFT_APPLY_COMMIT, nil, 0, buf, size)
    end)
    if rc ~= GRAFT_OK then
        return admin_reply(400, "refused, the running configuration goes on: " .. message)
    end
    return admin_reply(200, message)
end

-- POST /graft/admin/fleet?name=value&...: a fleet agent's report.
local function fleet(r)
    local report = ngx_var.args or ""
    local rc, message = call_with_buffer(function(buf, size)
        return C.graft_ffi_fleet(r, report, #report, buf, size)
    end)
    if rc == GRAFT_OK then
        return admin_reply(200, "reported")
    end
    return admin_reply(400, message)
end

-- POST /graft/admin/kill or revive ?module=<name>[&zone=<zone>].
local function switch(r, action)
    local args = ngx_req.get_uri_args(8)
    local module, zone = args.module, args.zone or ""
    if type(module) ~= "string" or type(zone) ~= "string"
       or #module > MAX_NAME or #zone > MAX_NAME then
        return admin_reply(400, "module=<name> [zone=<zone>], each at most " .. MAX_NAME .. " bytes")
    end
    local state = action == "kill" and GRAFT_SWITCH_THROW or GRAFT_SWITCH_RESET
    local rc, message = call_with_buffer(function(buf, size)
        return C.graft_ffi_kill(r, module, #module, zone, #zone, state, buf, size)
    end)
    if rc == GRAFT_OK then
        return admin_reply(200, action == "kill" and "killed" or "revived")
    end
    return admin_reply(400, message)
end

function _M.admin()
    local r = get_request()
    if not r then
        error("no request found", 2)
    end
    -- Only a call with the admin token, from no browser, to a loopback
    -- name (graft_ffi_admin_check counts and logs every refusal).
    local allowed = C.graft_ffi_admin_check(r)
    if allowed ~= GRAFT_OK then
        if allowed == 401 then
            ngx_header["WWW-Authenticate"] = 'Bearer realm="graft admin"'
        elseif allowed < 0 then
            allowed = 500
        end
        return admin_reply(allowed, "refused (see the error log)")
    end
    local action = ngx_var.uri:match("/([%a_]+)$")
    local method = ngx_req.get_method()
    if method == "GET" then
        if action == "status" then
            return _M.serve_counters()
        elseif action == "metrics" then
            return _M.serve_metrics()
        elseif action == "totals" then
            return _M.serve_metrics(true)
        end
    end
    if method ~= "POST" then
        return admin_reply(405, "use POST for " .. tostring(action))
    end
    if action == "apply" then
        return apply(r)
    elseif action == "fleet" then
        return fleet(r)
    elseif action == "kill" or action == "revive" then
        return switch(r, action)
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
