/*
 * graft.h: the ABI between graft's nginx module (ngx_http_graft_module.so)
 * and its Lua bridge (lua/graft.lua, lua/graft/*.lua), called through LuaJIT's FFI.
 *
 * lua/graft/abi.lua repeats the block between the abi markers in its ffi.cdef
 * and the #define values in its constants table; tests/tests/abi.rs fails when the three
 * (this header, the Lua cdef, the Rust exports) disagree.
 *
 * Conventions, as lua-resty-core's:
 * - functions are named graft_ffi_<thing> and return an int status;
 * - the caller passes buffers with a size_t * in-out length;
 * - pointers in a graft_decision_t point into the module's memory and stay
 *   valid until the next graft_ffi_run call in the same worker.
 */
#ifndef GRAFT_H
#define GRAFT_H

#include <stddef.h>

/* nginx's request, as nginx's headers (and lua-resty-core's base.lua)
 * declare it: graft's functions take the request the Lua side is serving. */
typedef struct ngx_http_request_s ngx_http_request_t;

/* One call in this many has its latency timed, on either side. */
#define GRAFT_SAMPLE_EVERY  32

/* graft_ffi_observe's `what`: the implementation timed. */
#define GRAFT_IMPL_LUA   0
#define GRAFT_IMPL_RUST  1

#define GRAFT_ABI_VERSION 14

#define GRAFT_OK          0
#define GRAFT_ERROR      -1
#define GRAFT_AGAIN      -2
#define GRAFT_DONE       -4
#define GRAFT_DECLINED   -5
#define GRAFT_PANIC      -6
#define GRAFT_NO_CONFIG  -7
#define GRAFT_USE_LUA    -8   /* graft_ffi_run: Lua serves this request */
#define GRAFT_FRAMING    -9   /* graft_ffi_check_header: a header only the server frames */

#define GRAFT_CONTINUE    0
#define GRAFT_RESPOND     1

#define GRAFT_HEADER_SET     0
#define GRAFT_HEADER_ADD     1
#define GRAFT_HEADER_REMOVE  2

#define GRAFT_TARGET_REQUEST   0
#define GRAFT_TARGET_RESPONSE  1
#define GRAFT_TARGET_LOG       2   /* value: a line for the error log */

#define GRAFT_COUNT_LUA           0
#define GRAFT_COUNT_RUST          1
#define GRAFT_COUNT_FALLBACK      2
#define GRAFT_COUNT_SHADOW_MATCH  3
#define GRAFT_COUNT_SHADOW_DIFF   4
#define GRAFT_COUNT_FAILED        8   /* counted by graft_ffi_fail */
#define GRAFT_COUNT_NATIVE        9   /* counted by the native pipeline */
#define GRAFT_COUNT_UNTOUCHED    11   /* a body-phase step left a response as it was */
#define GRAFT_COUNT_DROPPED      12   /* a log record over its module's rate */

/* graft_ffi_log's `family`: each has its own budget of lines a second. */
#define GRAFT_LOG_DECISION  0   /* lines a decision carries: warn */
#define GRAFT_LOG_FAILURE   1   /* a step that could not decide: error */
#define GRAFT_LOG_DIFF      2   /* a shadow difference: warn */
#define GRAFT_LOG_DECLINE   3   /* a Rust side that declined: info */

/* graft_ffi_plans's `which`. */
#define GRAFT_PLANS_LOADED   0  /* what the master just loaded (init_by_lua) */
#define GRAFT_PLANS_PENDING  1  /* what a live apply is checking */

/* graft_ffi_apply's `action`. */
#define GRAFT_APPLY_CHECK   0   /* read, validate, keep pending */
#define GRAFT_APPLY_COMMIT  1   /* swap the pending configuration in */
#define GRAFT_APPLY_REFUSE  2   /* drop the pending one, count the refusal */

/* graft_ffi_kill's `state`. */
#define GRAFT_SWITCH_RESET  0   /* the module serves by its mode again */
#define GRAFT_SWITCH_THROW  1   /* the module goes back to Lua */

/* graft_ffi_resume's `*fallback`. */
#define GRAFT_RESUME_FRESH     0   /* the step was not tried natively */
#define GRAFT_RESUME_FALLBACK  1   /* Rust failed on it natively: Lua serves */
#define GRAFT_RESUME_CLAIMED   2   /* or'ed in: graft.decide ran some of its steps */

/* graft_ffi_fail's and graft_ffi_fail_module's answer when the failure
 * policy continues (else the status to answer with, or an error code). */
#define GRAFT_FAIL_CONTINUE 0

/* graft:abi:begin */
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
/* graft:abi:end */

#endif /* GRAFT_H */
