-- graft.abi: the ABI between graft's Lua side and ngx_http_graft_module,
-- as shim/include/graft.h declares it: the C declarations (checked
-- against the header by tests/tests/abi.rs), the constants, the version
-- check when the Lua side loads, and the buffers texts come back in.
local ffi = require "ffi"
local base = require "resty.core.base"

local C = ffi.C
local ffi_new = ffi.new
local ffi_sizeof = ffi.sizeof
local ffi_string = ffi.string
local get_size_ptr = base.get_size_ptr
local get_string_buf = base.get_string_buf
local error = error
local pcall = pcall
local tonumber = tonumber
local tostring = tostring

local _M = {
    GRAFT_ABI_VERSION = 14,

    GRAFT_OK = 0,
    GRAFT_ERROR = -1,
    GRAFT_AGAIN = -2,
    GRAFT_DONE = -4,
    GRAFT_DECLINED = -5,
    GRAFT_PANIC = -6,
    GRAFT_NO_CONFIG = -7,
    GRAFT_USE_LUA = -8,
    GRAFT_FRAMING = -9,

    GRAFT_CONTINUE = 0,
    GRAFT_RESPOND = 1,

    GRAFT_HEADER_SET = 0,
    GRAFT_HEADER_ADD = 1,
    GRAFT_HEADER_REMOVE = 2,

    GRAFT_TARGET_REQUEST = 0,
    GRAFT_TARGET_RESPONSE = 1,
    GRAFT_TARGET_LOG = 2,

    GRAFT_IMPL_LUA = 0,
    GRAFT_IMPL_RUST = 1,

    GRAFT_COUNT_LUA = 0,
    GRAFT_COUNT_RUST = 1,
    GRAFT_COUNT_FALLBACK = 2,
    GRAFT_COUNT_SHADOW_MATCH = 3,
    GRAFT_COUNT_SHADOW_DIFF = 4,
    GRAFT_COUNT_FAILED = 8,
    GRAFT_COUNT_NATIVE = 9,
    GRAFT_COUNT_UNTOUCHED = 11,
    GRAFT_COUNT_DROPPED = 12,

    GRAFT_LOG_DECISION = 0,
    GRAFT_LOG_FAILURE = 1,
    GRAFT_LOG_DIFF = 2,
    GRAFT_LOG_DECLINE = 3,

    GRAFT_PLANS_LOADED = 0,
    GRAFT_PLANS_PENDING = 1,

    GRAFT_APPLY_CHECK = 0,
    GRAFT_APPLY_COMMIT = 1,
    GRAFT_APPLY_REFUSE = 2,

    GRAFT_SWITCH_RESET = 0,
    GRAFT_SWITCH_THROW = 1,

    GRAFT_RESUME_FRESH = 0,
    GRAFT_RESUME_FALLBACK = 1,
    GRAFT_RESUME_CLAIMED = 2,

    GRAFT_FAIL_CONTINUE = 0,

    -- One call in this many has its latency measured, on either side.
    GRAFT_SAMPLE_EVERY = 32,
}

local GRAFT_ABI_VERSION = _M.GRAFT_ABI_VERSION
local GRAFT_OK = _M.GRAFT_OK
local GRAFT_ERROR = _M.GRAFT_ERROR
local GRAFT_AGAIN = _M.GRAFT_AGAIN

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
int graft_ffi_zone(ngx_http_request_t *r, const unsigned char *scope, size_t scope_len, unsigned long long *generation);
int graft_ffi_plan(ngx_http_request_t *r, int zone, unsigned char *buf, size_t *len);
int graft_ffi_run(ngx_http_request_t *r, int zone, int step, graft_decision_t *out);
int graft_ffi_count(ngx_http_request_t *r, int zone, int step, int what);
int graft_ffi_counters(ngx_http_request_t *r, unsigned char *buf, size_t *len);
int graft_ffi_resume(ngx_http_request_t *r, int zone, int *fallback);
int graft_ffi_metrics(ngx_http_request_t *r, unsigned char *buf, size_t *len);
int graft_ffi_totals(ngx_http_request_t *r, unsigned char *buf, size_t *len);
int graft_ffi_apply(ngx_http_request_t *r, int action, const unsigned char *text, size_t text_len, unsigned char *buf, size_t *len);
int graft_ffi_kill(ngx_http_request_t *r, const unsigned char *module, size_t module_len, const unsigned char *zone, size_t zone_len, int state, unsigned char *buf, size_t *len);
int graft_ffi_fleet(ngx_http_request_t *r, const unsigned char *report, size_t report_len, unsigned char *buf, size_t *len);
int graft_ffi_observe(ngx_http_request_t *r, int zone, int step, int what, unsigned long long nanos);
int graft_ffi_fail(ngx_http_request_t *r, int zone, int step, const unsigned char *why, size_t why_len);
int graft_ffi_log(ngx_http_request_t *r, int family, const unsigned char *line, size_t line_len);
int graft_ffi_plans(ngx_http_request_t *r, int which, int zone, unsigned char *buf, size_t *len);
int graft_ffi_response_header(ngx_http_request_t *r, int action, const unsigned char *name, size_t name_len, const unsigned char *value, size_t value_len);
/* Whether a header may be in a Lua decision: GRAFT_OK, GRAFT_FRAMING, or
   GRAFT_ERROR (not a token, a control byte, too long). */
int graft_ffi_check_header(const unsigned char *name, size_t name_len, const unsigned char *value, size_t value_len);
/* A step runs once a request: GRAFT_OK (now the caller's), or GRAFT_DONE. */
int graft_ffi_claim(ngx_http_request_t *r, int zone, int step);
/* Whether a handler's graft.decide ran the step first: GRAFT_DONE, or GRAFT_OK. */
int graft_ffi_claimed(ngx_http_request_t *r, int zone, int step);
/* Whether an admin call may be served: GRAFT_OK, or the status to refuse
   it with (counted and logged). */
int graft_ffi_admin_check(ngx_http_request_t *r);
int graft_ffi_fail_module(ngx_http_request_t *r, const unsigned char *module, size_t module_len, const unsigned char *why, size_t why_len);
int graft_ffi_note_diff(ngx_http_request_t *r, int zone, int step, const unsigned char *lua, size_t lua_len, const unsigned char *rust, size_t rust_len);
/* After ngx.req.read_body() in a zone whose plan has a body: 0 to go on,
   or the status to answer with (the body over the zone's max_bytes with
   "over": { "respond" }, or a body graft cannot read). */
int graft_ffi_body(ngx_http_request_t *r, int zone);
/* The response-body phase: whether the Lua side serves step `step` of
   the zone for this response (GRAFT_USE_LUA) or Rust does (GRAFT_OK),
   as graft's header filter decided. */
int graft_ffi_body_step(ngx_http_request_t *r, int zone, int step);
/* The log phase: with line NULL, whether the Lua side serves step `step`
   of the zone for this request (GRAFT_USE_LUA: it writes the record; in
   shadow it then passes the record it wrote, in line, for Rust to compare)
   or Rust does (GRAFT_OK). */
int graft_ffi_log_step(ngx_http_request_t *r, int zone, int step, const unsigned char *line, size_t line_len);
/* The response-header phase: with ops NULL, whether the Lua side serves
   step `step` of the zone for this response (GRAFT_USE_LUA: it makes the
   step's header changes) or Rust did (GRAFT_OK), as graft's header filter
   decided (GRAFT_DECLINED: it decided nothing for this response); in
   shadow the Lua side then passes its changes, described, in ops, for
   Rust to compare. */
int graft_ffi_response_step(ngx_http_request_t *r, int zone, int step, const unsigned char *ops, size_t ops_len);
/* The response-body phase in shadow: the body the Lua side wrote for step
   `step`, at its end, for Rust to compare with its own. */
int graft_ffi_body_compare(ngx_http_request_t *r, int zone, int step, const unsigned char *body, size_t body_len);
/* Decodes a request body's Content-Encoding (coding: every such header
   joined by ", ") within max_bytes and max_ratio, with the Rust side's
   decoder: GRAFT_OK (the decoded bytes in buf, *len of them),
   GRAFT_DECLINED (no coding: identity), GRAFT_ERROR (undecidable: why in
   buf), GRAFT_AGAIN (*len: the size needed), GRAFT_PANIC. */
int graft_ffi_decode(const unsigned char *coding, size_t coding_len, const unsigned char *body, size_t body_len, size_t max_bytes, size_t max_ratio, unsigned char *buf, size_t *len);
]]

-- The monotonic clock, for the sampled latency of the Lua side.
pcall(ffi.cdef, [[
struct graft_timespec { long tv_sec; long tv_nsec; };
int clock_gettime(int clk_id, struct graft_timespec *tp);
]])

do
    local ok, rc = pcall(function()
        return C.graft_ffi_abi_version(ffi_sizeof("graft_decision_t"), ffi_sizeof("graft_header_t"))
    end)
    if not ok then
        error("graft: ngx_http_graft_module is not loaded (load_module it in nginx.conf): "
              .. tostring(rc), 2)
    end
    if rc == GRAFT_ERROR then
        error("graft: its Lua side and ngx_http_graft_module lay out the ABI structures "
              .. "differently: install the two from the same release", 2)
    end
    if rc ~= GRAFT_ABI_VERSION then
        error("graft: graft's Lua side (graft/abi.lua) speaks ABI version " .. GRAFT_ABI_VERSION
              .. " but ngx_http_graft_module speaks version " .. tostring(rc), 2)
    end
end


-- Calls fetch(buf, size) with a buffer, and again with a larger one when
-- the module says it needs more (a text can grow between two calls, so a
-- few times); returns the code and the text written. Never reads more
-- than the buffer holds, whatever the module wrote in *size.
function _M.call_with_buffer(fetch)
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

function _M.read_string(fetch)
    local rc, text = _M.call_with_buffer(fetch)
    if rc ~= GRAFT_OK then
        return nil, "graft: error " .. rc
    end
    return text
end

-- The monotonic clock, in nanoseconds, for the sampled latency of the Lua side.
local CLOCK_MONOTONIC = 1
local ts = ffi_new("struct graft_timespec[1]")

function _M.now_ns()
    C.clock_gettime(CLOCK_MONOTONIC, ts)
    return tonumber(ts[0].tv_sec) * 1e9 + tonumber(ts[0].tv_nsec)
end

return _M
