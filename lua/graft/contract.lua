-- graft.contract: the product-module contract on the Lua side, field for
-- field the Rust one (modules/contract):
--
--   local mod = require "graft.legacy.<name>"
--   local inst, err = mod.new(config, zone)
--   local decision = inst:on_request(req)
--   local changes = inst:on_response(req, resp)   -- optional
--
-- on_response, the response-header phase: resp.status and
-- resp:header(name) (the first value, or nil) before the response's
-- headers are sent; returns a list of header changes
-- ({ action=, name=, value= }), checked as a decision's are.
--
-- new(config, zone): config is the step's configuration from the graft
-- file (the module's "config" object, as the Rust factory hands it to Lua:
-- regular expressions in PCRE's reading of the same meaning); zone is the
-- zone's name. Return the instance, or nil and why to refuse the
-- configuration (graft then refuses to start, reload or apply, naming the
-- zone and module). Called once per zone and configuration, in every
-- worker, and once at start-up to check it.
--
-- req, read from nginx the first time a field is used:
--   req.method   "GET", ...                   (ngx.req.get_method())
--   req.path     the decoded path, as $uri     ("/a b", no query)
--   req.raw_uri  the target as sent, $request_uri ("/a%20b?x=1")
--   req.query    the query string, nil when empty ($args)
--   req.host     the host, as $host (lower case, no port)
--   req.client   the client address as a string ($remote_addr)
--   req.headers  every request header, ngx.req.get_headers(0): names in
--                lower case; a header sent twice is a list of its values
--   req.args     every query argument, ngx.req.get_uri_args(0): a name
--                sent twice is a list; a name with no "=" is true
--   req:header(name)  one header's (first) value, any case, or nil
--
-- A decision is one of
--   { kind = "continue", uri = <string|nil>, log = { "line", ... },
--     request_headers = { {action=, name=, value=}, ... },
--     response_headers = { ... } }          -- action: "set"|"add"|"remove"
--   { kind = "respond", status = <int>, headers = { {name, value}, ... },
--     body = <string>, log = { "line", ... } }
--   { kind = "decline" }                    -- Rust side only: not mine
-- Anything else, or an error thrown, is the step's failure: its
-- on_failure decides (see the README's "When something fails"). So is a
-- decision graft would not put on the wire as it is, checked whole before
-- any of it is applied, as Rust's are (Decision::check_framing): a framing
-- header (Content-Length, Transfer-Encoding, Connection, Keep-Alive,
-- Upgrade, TE, Trailer; an answer's Content-Length equal to its body's
-- length is dropped), a body in a 204 or 304, a header name that is not a
-- token or a value with a control byte.
--
-- This file has no ngx dependency, so graft's parity tests load it, and
-- the Lua twins, in a plain LuaJIT.

local type = type
local tostring = tostring
local concat = table.concat

local _M = { version = "0.1.0" }

_M.CONTINUE = { kind = "continue" }

local function same_list(a, b, same_item)
    a, b = a or {}, b or {}
    if #a ~= #b then
        return false
    end
    for i = 1, #a do
        if not same_item(a[i], b[i]) then
            return false
        end
    end
    return true
end

local function same_pair(x, y)
    return x[1] == y[1] and x[2] == y[2]
end

local function same_string(x, y)
    return x == y
end

local function same_op(x, y)
    return x.action == y.action and x.name == y.name and (x.value or "") == (y.value or "")
end

-- Lua twins never decline: a "decline" from them means "nothing
-- to do", the same as continuing unchanged.
local function kind_of(d)
    if d.kind == "decline" and not d.rust then
        return "continue"
    end
    return d.kind
end

function _M.equal(a, b)
    local kind = kind_of(a)
    if kind ~= kind_of(b) then
        return false
    end
    if kind == "respond" then
        return a.status == b.status and (a.body or "") == (b.body or "")
            and same_list(a.headers, b.headers, same_pair)
            and same_list(a.log, b.log, same_string)
    end
    if kind == "continue" then
        return a.uri == b.uri
            and same_list(a.log, b.log, same_string)
            and same_list(a.request_headers, b.request_headers, same_op)
            and same_list(a.response_headers, b.response_headers, same_op)
    end
    return false
end

local function describe_ops(out, label, ops)
    if ops and #ops > 0 then
        out[#out + 1] = label
        for i = 1, #ops do
            local op = ops[i]
            out[#out + 1] = op.action .. " " .. op.name .. ": " .. (op.value or "")
        end
    end
end

local function describe_log(out, log)
    if log then
        for i = 1, #log do
            out[#out + 1] = "log \"" .. log[i] .. "\""
        end
    end
end

-- A one-line description for logs and diff reports.
function _M.describe(d)
    local kind = d.kind
    if kind == "respond" then
        local out = { "respond " .. tostring(d.status) }
        local headers = d.headers or {}
        for i = 1, #headers do
            out[#out + 1] = headers[i][1] .. ": " .. headers[i][2]
        end
        if d.body and #d.body > 0 then
            out[#out + 1] = "body " .. #d.body .. " bytes"
        end
        describe_log(out, d.log)
        return concat(out, "; ")
    end
    if kind == "continue" then
        local out = { "continue" }
        if d.uri then
            out[#out + 1] = "uri " .. d.uri
        end
        describe_ops(out, "request headers", d.request_headers)
        describe_ops(out, "response headers", d.response_headers)
        describe_log(out, d.log)
        return concat(out, "; ")
    end
    if d.err then
        return kind .. " (" .. d.err .. ")"
    end
    return type(kind) == "string" and kind or "?"
end

return _M
