//! The functions the Lua bridge (`lua/graft.lua`) calls through LuaJIT's
//! FFI, declared in `shim/include/graft.h`.
//!
//! The per-request calls take the `ngx_http_request_t *` that
//! `resty.core.base.get_request()` gives and read the request where nginx
//! keeps it. Return codes follow lua-resty-core's conventions.
use std::cell::RefCell;
use std::ffi::{c_int, c_uchar, c_ulonglong, c_void};
use std::mem::size_of;
use std::ptr::null;
use std::sync::Arc;

use graft_contract::{Decision, FailurePolicy, HeaderAction, HeaderName, HeaderOp, HeaderValue};
use graft_engine::protocol::{HandOver, Legacy, Served};
use graft_engine::{Config, Count, Impl, Kill, Mode, Outcome, Step};
use ngx::ffi::{ngx_http_request_t, ngx_time, NGX_LOG_WARN};
use ngx::ngx_log_error;

use crate::ctx::{self, Pipeline};
use crate::guard::guarded;
use crate::live::shared_windows;
use crate::location::zone_for;
use crate::request::NgxRequest;
use crate::steps::{fail_step, log_limited, protocol, record, zone_body, LogFamily, NgxServer};

pub const GRAFT_ABI_VERSION: c_int = 14;

pub const GRAFT_OK: c_int = 0;
pub const GRAFT_ERROR: c_int = -1;
pub const GRAFT_AGAIN: c_int = -2;
pub const GRAFT_DONE: c_int = -4;
pub const GRAFT_DECLINED: c_int = -5;
pub const GRAFT_PANIC: c_int = -6;
pub const GRAFT_NO_CONFIG: c_int = -7;
pub const GRAFT_USE_LUA: c_int = -8;
pub const GRAFT_FRAMING: c_int = -9;

const GRAFT_PLANS_LOADED: c_int = 0;
const GRAFT_PLANS_PENDING: c_int = 1;
const GRAFT_APPLY_CHECK: c_int = 0;
const GRAFT_APPLY_COMMIT: c_int = 1;
const GRAFT_APPLY_REFUSE: c_int = 2;
const GRAFT_SWITCH_RESET: c_int = 0;
const GRAFT_SWITCH_THROW: c_int = 1;
const GRAFT_RESUME_FRESH: c_int = 0;
const GRAFT_RESUME_FALLBACK: c_int = 1;
/// Or'ed into the resume flags: a handler ran some of the zone's steps
/// through `graft.decide` (`graft_ffi_claim` tells which).
const GRAFT_RESUME_CLAIMED: c_int = 2;
const GRAFT_FAIL_CONTINUE: c_int = 0;

const GRAFT_CONTINUE: c_int = 0;
const GRAFT_RESPOND: c_int = 1;
const GRAFT_HEADER_SET: c_int = 0;
const GRAFT_HEADER_ADD: c_int = 1;
const GRAFT_HEADER_REMOVE: c_int = 2;
const GRAFT_TARGET_REQUEST: c_int = 0;
const GRAFT_TARGET_RESPONSE: c_int = 1;
const GRAFT_TARGET_LOG: c_int = 2;

#[repr(C)]
#[allow(non_camel_case_types)]
pub struct graft_header_t {
    action: c_int,
    target: c_int,
    name: *const c_uchar,
    name_len: usize,
    value: *const c_uchar,
    value_len: usize,
}

#[repr(C)]
#[allow(non_camel_case_types)]
pub struct graft_decision_t {
    kind: c_int,
    status: c_int,
    body: *const c_uchar,
    body_len: usize,
    uri: *const c_uchar,
    uri_len: usize,
    headers: *const graft_header_t,
    nheaders: usize,
    err: *const c_uchar,
    err_len: usize,
}

/// The last decision handed to Lua, kept alive until the next run: the
/// pointers in a `graft_decision_t` point into it. An nginx worker is one
/// thread and Lua reads the decision before it can yield, so one buffer per
/// thread suffices.
#[derive(Default)]
struct DecisionOut {
    decision: Option<Decision>,
    headers: Vec<graft_header_t>,
    message: String,
}

thread_local! {
    static OUT: RefCell<DecisionOut> = RefCell::default();
}

fn action_code(a: HeaderAction) -> c_int {
    match a {
        HeaderAction::Set => GRAFT_HEADER_SET,
        HeaderAction::Add => GRAFT_HEADER_ADD,
        HeaderAction::Remove => GRAFT_HEADER_REMOVE,
    }
}

fn header(action: c_int, target: c_int, name: &str, value: &[u8]) -> graft_header_t {
    graft_header_t {
        action,
        target,
        name: name.as_ptr(),
        name_len: name.len(),
        value: value.as_ptr(),
        value_len: value.len(),
    }
}

fn push_log(headers: &mut Vec<graft_header_t>, lines: &[String]) {
    headers.extend(
        lines
            .iter()
            .map(|line| header(GRAFT_HEADER_SET, GRAFT_TARGET_LOG, "log", line.as_bytes())),
    );
}

impl DecisionOut {
    /// Keeps `decision` and describes it in `out`.
    fn fill(&mut self, decision: Decision, out: &mut graft_decision_t) {
        self.headers.clear();
        self.message.clear();
        let d = self.decision.insert(decision);
        *out = empty_decision();
        match d {
            Decision::Respond(resp) => {
                out.kind = GRAFT_RESPOND;
                out.status = c_int::from(resp.status);
                out.body = resp.body.as_ptr();
                out.body_len = resp.body.len();
                self.headers.extend(resp.headers.iter().map(|(n, v)| {
                    header(
                        GRAFT_HEADER_SET,
                        GRAFT_TARGET_RESPONSE,
                        n.as_str(),
                        v.as_bytes(),
                    )
                }));
                push_log(&mut self.headers, &resp.log);
            }
            Decision::Continue(changes) => {
                out.kind = GRAFT_CONTINUE;
                if let Some(uri) = &changes.uri {
                    out.uri = uri.as_ptr();
                    out.uri_len = uri.len();
                }
                let ops = changes
                    .request_headers
                    .iter()
                    .map(|op| (GRAFT_TARGET_REQUEST, op))
                    .chain(
                        changes
                            .response_headers
                            .iter()
                            .map(|op| (GRAFT_TARGET_RESPONSE, op)),
                    );
                self.headers.extend(ops.map(|(target, op)| {
                    header(
                        action_code(op.action),
                        target,
                        op.name.as_str(),
                        op.value.as_bytes(),
                    )
                }));
                push_log(&mut self.headers, &changes.log);
            }
            Decision::Decline => {}
        }
        out.headers = self.headers.as_ptr();
        out.nheaders = self.headers.len();
    }

    fn fail(&mut self, message: String, out: &mut graft_decision_t) {
        self.decision = None;
        self.headers.clear();
        self.message = message;
        *out = empty_decision();
        out.err = self.message.as_ptr();
        out.err_len = self.message.len();
    }
}

fn empty_decision() -> graft_decision_t {
    graft_decision_t {
        kind: GRAFT_CONTINUE,
        status: 0,
        body: null(),
        body_len: 0,
        uri: null(),
        uri_len: 0,
        headers: null(),
        nheaders: 0,
        err: null(),
        err_len: 0,
    }
}

/// # Safety
/// `r` must be null or the live request `get_request()` gave.
unsafe fn request<'r>(r: *mut c_void) -> Option<&'r ngx_http_request_t> {
    // SAFETY: the caller's contract: `r` is null or a live request, which outlives the borrow.
    unsafe { (r as *const ngx_http_request_t).as_ref() }
}

/// The current request and one step of the configuration it is served
/// with, or the code to return: `GRAFT_ERROR` without a request or for an
/// index out of range, `GRAFT_NO_CONFIG` without a configuration.
///
/// # Safety
/// `r` must be null or the live request `get_request()` gave.
unsafe fn request_step<'r>(
    r: *mut c_void,
    zone: c_int,
    step_index: c_int,
) -> Result<(&'r ngx_http_request_t, &'r str, &'r Step), c_int> {
    // SAFETY: `r` is null or the live request the Lua side passed (# Safety).
    let r = unsafe { request(r) }.ok_or(GRAFT_ERROR)?;
    let config = ctx::config(r).ok_or(GRAFT_NO_CONFIG)?;
    let (zone_name, step) = step(config, zone, step_index).ok_or(GRAFT_ERROR)?;
    Ok((r, zone_name, step))
}

fn step(config: &Config, zone: c_int, step: c_int) -> Option<(&str, &Step)> {
    let zone = config.zones.get(usize::try_from(zone).ok()?)?;
    Some((&zone.name, zone.steps.get(usize::try_from(step).ok()?)?))
}

/// Writes a text made from the request's configuration into the caller's
/// buffer (see `copy_out`).
///
/// # Safety
/// `r` is null or the current request; `buf` is writable for `*len` bytes.
unsafe fn export_text(
    r: *mut c_void,
    buf: *mut c_uchar,
    len: *mut usize,
    text: impl FnOnce(&Arc<Config>) -> String,
) -> c_int {
    guarded(GRAFT_ERROR, || {
        // SAFETY: `r` is null or the live request the Lua side passed (# Safety).
        let Some(config) = (unsafe { request(r) }).and_then(ctx::config) else {
            return GRAFT_NO_CONFIG;
        };
        // SAFETY: `buf` is writable for `*len` bytes (# Safety).
        unsafe { copy_out(text(config).as_bytes(), buf, len) }
    })
}

/// Copies `src` into the caller's buffer; when it is too small, says how
/// large it must be and returns `GRAFT_AGAIN`.
///
/// # Safety
/// `buf` must be writable for `*len` bytes and `len` valid.
unsafe fn copy_out(src: &[u8], buf: *mut c_uchar, len: *mut usize) -> c_int {
    // SAFETY: `len` is valid and `buf` null or writable for `*len` bytes
    // (# Safety); at most that many are written.
    unsafe {
        if buf.is_null() || *len < src.len() {
            *len = src.len();
            return GRAFT_AGAIN;
        }
        std::ptr::copy_nonoverlapping(src.as_ptr(), buf, src.len());
        *len = src.len();
    }
    GRAFT_OK
}

/// Copies a message into the caller's buffer, cut to fit: for replies that
/// must not ask for a second call (the action already happened). `*len`
/// is what was written, never more than the buffer holds.
///
/// # Safety
/// `buf` is null or writable for `*len` bytes; `len` is valid.
unsafe fn copy_message(message: &str, buf: *mut c_uchar, len: *mut usize) {
    // SAFETY: `len` is valid (# Safety).
    let room = if buf.is_null() { 0 } else { unsafe { *len } };
    let cut = &message.as_bytes()[..message.len().min(room)];
    // SAFETY: `cut` fits the buffer, so copy_out writes and never asks again.
    unsafe { copy_out(cut, buf, len) };
}

/// Returns the ABI version when the caller's structure sizes match ours,
/// `GRAFT_ERROR` when they do not.
#[no_mangle]
pub extern "C" fn graft_ffi_abi_version(decision_size: usize, header_size: usize) -> c_int {
    guarded(GRAFT_ERROR, || {
        if decision_size == size_of::<graft_decision_t>()
            && header_size == size_of::<graft_header_t>()
        {
            GRAFT_ABI_VERSION
        } else {
            GRAFT_ERROR
        }
    })
}

/// The index of the zone serving the request (from 0): the zone named
/// `scope` when `scope_len` > 0 (a Lua handler's `graft.decide`), else the
/// location's `graft_scope`, else the host's zone. `GRAFT_DECLINED` when no
/// zone does, `GRAFT_NO_CONFIG` when there is no `graft_config`,
/// `GRAFT_ERROR` when the location's scope names no zone any more.
///
/// # Safety
/// `r` is the current request; `scope` points at `scope_len` bytes;
/// `generation` is writable.
#[no_mangle]
pub unsafe extern "C" fn graft_ffi_zone(
    r: *mut c_void,
    scope: *const c_uchar,
    scope_len: usize,
    generation: *mut c_ulonglong,
) -> c_int {
    guarded(GRAFT_ERROR, || {
        // SAFETY: `r` is null or the live request the Lua side passed (# Safety).
        let Some(r) = (unsafe { request(r) }) else {
            return GRAFT_ERROR;
        };
        let Some(ctx) = ctx::of(r) else {
            return match crate::conf::current_config(r) {
                None => GRAFT_NO_CONFIG,
                // A configuration, but no room for the request's record.
                Some(_) => GRAFT_ERROR,
            };
        };
        // SAFETY: `generation` is writable (# Safety).
        unsafe { *generation = ctx.config.generation };
        // SAFETY: each pointer is null or points at its length of readable bytes (# Safety).
        let scope = unsafe { bytes(scope, scope_len) };
        let zone = if !scope.is_empty() {
            match std::str::from_utf8(scope) {
                Ok(name) => ctx.config.zone_named(name),
                Err(_) => None,
            }
        } else {
            match zone_for(r, ctx) {
                Ok(z) => z,
                Err(e) => {
                    log_limited(r, LogFamily::Failure, format_args!("graft: {e}"));
                    return GRAFT_ERROR;
                }
            }
        };
        match zone {
            Some(i) => c_int::try_from(i).unwrap_or(GRAFT_ERROR),
            None => GRAFT_DECLINED,
        }
    })
}

/// The zone's plan for the Lua side (modules, modes, configurations) as JSON.
///
/// # Safety
/// `r` is the current request; `buf` is writable for `*len` bytes.
#[no_mangle]
pub unsafe extern "C" fn graft_ffi_plan(
    r: *mut c_void,
    zone: c_int,
    buf: *mut c_uchar,
    len: *mut usize,
) -> c_int {
    guarded(GRAFT_ERROR, || {
        // SAFETY: `r` is null or the live request the Lua side passed (# Safety).
        let Some(config) = (unsafe { request(r) }).and_then(ctx::config) else {
            return GRAFT_NO_CONFIG;
        };
        let Some(zone) = usize::try_from(zone).ok().and_then(|z| config.zones.get(z)) else {
            return GRAFT_ERROR;
        };
        // SAFETY: `buf` is writable for `*len` bytes (# Safety).
        unsafe { copy_out(zone.plan_json().as_bytes(), buf, len) }
    })
}

/// Runs one step for the request, in the mode it resolves to.
///
/// `GRAFT_USE_LUA`: the step is served by Lua for this request (a canary's
/// other side, or a thrown kill switch), counted as such. Otherwise the Rust
/// side ran: `GRAFT_OK`, `out` holds the decision; `GRAFT_DECLINED`, the
/// module declined; `GRAFT_ERROR` or `GRAFT_PANIC`, it failed, `out->err`
/// says why and the error log has a line. In mode `rust` what served is
/// counted here (rust, or fallback); in `shadow` the caller counts.
///
/// # Safety
/// `r` is the current request; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn graft_ffi_run(
    r: *mut c_void,
    zone: c_int,
    step_index: c_int,
    out: *mut graft_decision_t,
) -> c_int {
    guarded(GRAFT_PANIC, || {
        // SAFETY: `r` is null or the live request the Lua side passed (# Safety); `out` is null or a writable decision (# Safety).
        let (Some(r), Some(out)) = (unsafe { request(r) }, unsafe { out.as_mut() }) else {
            return GRAFT_ERROR;
        };
        let Some(config) = ctx::config(r) else {
            return GRAFT_NO_CONFIG;
        };
        let Some((zone_name, step)) = step(config, zone, step_index) else {
            return GRAFT_ERROR;
        };
        let Some(windows) = shared_windows() else {
            return GRAFT_ERROR;
        };
        let view = match config
            .zones
            .get(usize::try_from(zone).unwrap_or(usize::MAX))
            .map(|z| zone_body(r, z))
        {
            Some(Ok(body)) => NgxRequest::with_body(r, body),
            // The Lua side asks graft_ffi_body first; a body it did not
            // have read cannot be inspected: Rust does not decide.
            Some(Err(_)) | None => return GRAFT_ERROR,
        };
        // The step protocol: the mode for this request (a canary per
        // client, a thrown kill switch), the Rust side run and counted.
        // Lua, here, serves what Rust does not.
        let server = NgxServer(r);
        let outcome = match protocol(&server, zone_name, Legacy::Here, false)
            .step(step, &view, &windows, false)
        {
            Served::HandOver(HandOver::Mode) => return GRAFT_USE_LUA,
            Served::HandOver(HandOver::Rust(outcome)) | Served::Shadow(outcome) => outcome,
            Served::Decision(d) => Outcome::Decided(d),
        };
        if let Outcome::Decided(Decision::Continue(changes)) = &outcome {
            if changes.is_empty() {
                // Nothing to hand over, so nothing is kept.
                *out = empty_decision();
                return GRAFT_OK;
            }
        }
        OUT.with_borrow_mut(|buf| match outcome {
            Outcome::Decided(d) => {
                buf.fill(d, out);
                GRAFT_OK
            }
            Outcome::Declined => {
                buf.fail("declined".into(), out);
                GRAFT_DECLINED
            }
            Outcome::Failed(e) => {
                buf.fail(e, out);
                GRAFT_ERROR
            }
            Outcome::Panicked(e) => {
                buf.fail(e, out);
                GRAFT_PANIC
            }
        })
    })
}

/// Records how long the Lua side took at a step (the bridge measures one
/// call in `GRAFT_SAMPLE_EVERY`); `what` is `GRAFT_IMPL_LUA` or `GRAFT_IMPL_RUST`.
///
/// # Safety
/// `r` is the current request.
#[no_mangle]
pub unsafe extern "C" fn graft_ffi_observe(
    r: *mut c_void,
    zone: c_int,
    step_index: c_int,
    what: c_int,
    nanos: u64,
) -> c_int {
    guarded(GRAFT_ERROR, || {
        // SAFETY: `r` is null or the live request the Lua side passed (# Safety).
        let Some(config) = (unsafe { request(r) }).and_then(ctx::config) else {
            return GRAFT_NO_CONFIG;
        };
        match (step(config, zone, step_index), Impl::from_code(what)) {
            (Some((_, step)), Some(imp)) => {
                step.counters.observe(imp, nanos);
                GRAFT_OK
            }
            _ => GRAFT_ERROR,
        }
    })
}

/// Where the Lua bridge starts the pipeline of `zone` for this request:
/// the step index (from 0), or `GRAFT_DONE` when it is not the bridge's to
/// run: a subrequest, a request whose pipeline already ran for that zone
/// (before an internal redirect, or natively to its end). `*fallback` is 1 when the native
/// pipeline stopped at that step because its Rust side declined, failed or
/// panicked: the bridge serves it from Lua without calling Rust again.
/// From this call on the request is the bridge's: the native finish leaves
/// it alone.
///
/// # Safety
/// `r` is the current request; `fallback` is writable.
#[no_mangle]
pub unsafe extern "C" fn graft_ffi_resume(
    r: *mut c_void,
    zone: c_int,
    fallback: *mut c_int,
) -> c_int {
    guarded(GRAFT_ERROR, || {
        // SAFETY: `r` is null or the live request the Lua side passed
        // (# Safety), which nothing else borrows during this call.
        unsafe { crate::edge::judge_once(r.cast()) };
        // SAFETY: `r` is null or the live request the Lua side passed (# Safety).
        let Some(r) = (unsafe { request(r) }) else {
            return GRAFT_ERROR;
        };
        if !std::ptr::eq(r, r.main) {
            return GRAFT_DONE;
        }
        let Some(ctx) = ctx::of(r) else {
            return GRAFT_NO_CONFIG;
        };
        let Ok(zone) = usize::try_from(zone) else {
            return GRAFT_ERROR;
        };
        let (start, fell_back) = match ctx.pipeline {
            // Once a main request and zone: a location scoped to another
            // zone runs that zone's steps too.
            _ if !ctx.ran_zones.contains(&zone) => {
                ctx.ran_zones.push(zone);
                (Some(0), false)
            }
            // The native pipeline ran this zone just now, up to a step.
            Pipeline::Native if ctx.ran_zones.last() == Some(&zone) => {
                (ctx.resume_at, ctx.fallback)
            }
            _ => (None, false),
        };
        ctx.pipeline = Pipeline::Taken;
        let claimed = if ctx.has_claims(zone) {
            GRAFT_RESUME_CLAIMED
        } else {
            0
        };
        // SAFETY: `fallback` is writable (# Safety).
        unsafe {
            *fallback = claimed
                | if fell_back {
                    GRAFT_RESUME_FALLBACK
                } else {
                    GRAFT_RESUME_FRESH
                }
        };
        match start {
            None => GRAFT_DONE,
            Some(step) => c_int::try_from(step).unwrap_or(GRAFT_ERROR),
        }
    })
}

/// A step cannot decide for this request (its Lua side missing or
/// throwing, after its Rust side failed or was not asked): counts it as
/// failed, logs why (within the failure lines' budget) and returns what
/// its failure policy serves: 0 to continue past this step, or the
/// status to answer with.
///
/// # Safety
/// `r` is the current request; `why` points at `why_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn graft_ffi_fail(
    r: *mut c_void,
    zone: c_int,
    step_index: c_int,
    why: *const c_uchar,
    why_len: usize,
) -> c_int {
    guarded(GRAFT_ERROR, || {
        // SAFETY: `r` is null or the live request the Lua side passed (# Safety).
        let (r, zone_name, step) = match unsafe { request_step(r, zone, step_index) } {
            Ok(found) => found,
            Err(rc) => return rc,
        };
        // SAFETY: each pointer is null or points at its length of readable bytes (# Safety).
        let why = unsafe { bytes(why, why_len) };
        match fail_step(r, zone_name, step, &String::from_utf8_lossy(why)) {
            FailurePolicy::Continue => GRAFT_FAIL_CONTINUE,
            FailurePolicy::Respond(status) => c_int::from(status),
        }
    })
}

/// A handler's `graft.decide(module)` found no step of that module for the
/// request (no zone for it, or its zone has none): logs why within the
/// failure lines' budget and returns what the module's own failure policy
/// serves: 0 to continue, or the status to answer with. `GRAFT_ERROR`: no
/// module of that name.
///
/// # Safety
/// `r` is the current request; `module` and `why` point at their lengths
/// of bytes.
#[no_mangle]
pub unsafe extern "C" fn graft_ffi_fail_module(
    r: *mut c_void,
    module: *const c_uchar,
    module_len: usize,
    why: *const c_uchar,
    why_len: usize,
) -> c_int {
    guarded(GRAFT_ERROR, || {
        // SAFETY: `r` is null or the live request the Lua side passed (# Safety).
        let Some(r) = (unsafe { request(r) }) else {
            return GRAFT_ERROR;
        };
        // SAFETY: each pointer is null or points at its length of readable bytes (# Safety).
        let (module, why) = unsafe { (bytes(module, module_len), bytes(why, why_len)) };
        let module = String::from_utf8_lossy(module);
        let Some(policy) = graft_engine::registry::default_policy(&module) else {
            return GRAFT_ERROR;
        };
        let (code, serves) = match policy {
            FailurePolicy::Continue => (GRAFT_FAIL_CONTINUE, "continues".to_string()),
            FailurePolicy::Respond(s) => (c_int::from(s), format!("answers {s}")),
        };
        log_limited(
            r,
            LogFamily::Failure,
            format_args!(
                "graft: module \"{module}\" could not decide: {}; its failure policy {serves}",
                String::from_utf8_lossy(why)
            ),
        );
        code
    })
}

/// The Lua side read the request body (`ngx.req.read_body()`) for a zone
/// whose plan has one: 0 to go on, or the status to answer the request
/// with (`steps::zone_body`: a body over the zone's `max_bytes` that it
/// answers, or one graft cannot read); `GRAFT_ERROR` for no such zone.
///
/// # Safety
/// `r` is null or the current request.
#[no_mangle]
pub unsafe extern "C" fn graft_ffi_body(r: *mut c_void, zone: c_int) -> c_int {
    guarded(GRAFT_ERROR, || {
        // SAFETY: `r` is null or the live request the Lua side passed (# Safety).
        let (r, config, zone) = match unsafe { request_zone(r, zone) } {
            Ok(found) => found,
            Err(rc) => return rc,
        };
        let zone = &config.zones[zone];
        match zone_body(r, zone) {
            Ok(_) => GRAFT_OK,
            Err(status) => c_int::from(status),
        }
    })
}

/// The response-body phase: `GRAFT_USE_LUA` when the Lua side serves step
/// `step` of the zone for this response, `GRAFT_OK` when Rust does (as
/// graft's header filter decided; for a response it did not see, by the
/// step's mode for this request now); `GRAFT_ERROR` for no such step.
///
/// # Safety
/// `r` is null or the current request.
#[no_mangle]
pub unsafe extern "C" fn graft_ffi_body_step(
    r: *mut c_void,
    zone: c_int,
    step_index: c_int,
) -> c_int {
    guarded(GRAFT_ERROR, || {
        // SAFETY: `r` is null or the live request the Lua side passed (# Safety).
        let (r, _, step) = match unsafe { request_step(r, zone, step_index) } {
            Ok(found) => found,
            Err(rc) => return rc,
        };
        if !pipeline_ran_for(r, zone) {
            return GRAFT_DECLINED;
        }
        let index = usize::try_from(step_index).unwrap_or(usize::MAX);
        let rust = crate::rewrite::rust_serves(r, index)
            .unwrap_or_else(|| step.mode_for(&NgxRequest::new(r)) == Mode::Rust);
        if rust {
            GRAFT_OK
        } else {
            GRAFT_USE_LUA
        }
    })
}

/// The log phase: with `line` null, `GRAFT_USE_LUA` when the Lua side
/// serves step `step` of the zone for this request (it writes the record)
/// or `GRAFT_OK` when Rust does (`log_phase::rust_serves`, decided once a
/// request); with `line`, the record the Lua side wrote, which a step in
/// `shadow` compares with Rust's own (`GRAFT_OK`). `GRAFT_ERROR` for no
/// such step.
///
/// # Safety
/// `r` is null or the current request; `line` is null or points at
/// `line_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn graft_ffi_log_step(
    r: *mut c_void,
    zone: c_int,
    step_index: c_int,
    line: *const c_uchar,
    line_len: usize,
) -> c_int {
    guarded(GRAFT_ERROR, || {
        // SAFETY: `r` is null or the live request the Lua side passed (# Safety).
        let (r, _, step) = match unsafe { request_step(r, zone, step_index) } {
            Ok(found) => found,
            Err(rc) => return rc,
        };
        if !pipeline_ran_for(r, zone) {
            return GRAFT_DECLINED;
        }
        let index = usize::try_from(step_index).unwrap_or(usize::MAX);
        if !line.is_null() {
            let Some(config) = ctx::config(r).cloned() else {
                return GRAFT_NO_CONFIG;
            };
            let Some(z) = zone_of(&config, zone) else {
                return GRAFT_ERROR;
            };
            if step.mode_for(&NgxRequest::new(r)) == Mode::Shadow {
                // SAFETY: `line` points at `line_len` bytes (# Safety).
                crate::log_phase::compare(r, z, step, unsafe { bytes(line, line_len) });
            }
            return GRAFT_OK;
        }
        match crate::log_phase::rust_serves(r, index, step, true) {
            Some(true) => GRAFT_OK,
            Some(false) => GRAFT_USE_LUA,
            None => GRAFT_ERROR,
        }
    })
}

/// The response-header phase: with `ops` null, `GRAFT_USE_LUA` when the
/// Lua side serves step `step` of the zone for this response (it then
/// makes the step's changes) or `GRAFT_OK` when Rust did, as graft's
/// header filter decided (`response::lua_serves`; `GRAFT_DECLINED`: it
/// decided nothing for this response); with `ops`, the changes the Lua
/// side made, described, which a step in `shadow` compares with Rust's
/// (`GRAFT_OK`). `GRAFT_ERROR` for no such step.
///
/// # Safety
/// `r` is null or the current request; `ops` is null or points at
/// `ops_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn graft_ffi_response_step(
    r: *mut c_void,
    zone: c_int,
    step_index: c_int,
    ops: *const c_uchar,
    ops_len: usize,
) -> c_int {
    guarded(GRAFT_ERROR, || {
        // SAFETY: `r` is null or the live request the Lua side passed (# Safety).
        let (r, _, step) = match unsafe { request_step(r, zone, step_index) } {
            Ok(found) => found,
            Err(rc) => return rc,
        };
        let index = usize::try_from(step_index).unwrap_or(usize::MAX);
        if !ops.is_null() {
            let Some(config) = ctx::config(r).cloned() else {
                return GRAFT_NO_CONFIG;
            };
            let Some(z) = zone_of(&config, zone) else {
                return GRAFT_ERROR;
            };
            // SAFETY: `ops` points at `ops_len` bytes (# Safety).
            crate::response::compare(r, z, index, step, unsafe { bytes(ops, ops_len) });
            return GRAFT_OK;
        }
        match crate::response::lua_serves(r, index) {
            Some(true) => GRAFT_USE_LUA,
            Some(false) => GRAFT_OK,
            None => GRAFT_DECLINED,
        }
    })
}

/// The response-body phase in `shadow`: the body the Lua side wrote for
/// step `step`, at its end, compared with what Rust wrote beside it
/// (`rewrite::compare`). `GRAFT_ERROR` for no such step.
///
/// # Safety
/// `r` is null or the current request; `body` is null or points at
/// `body_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn graft_ffi_body_compare(
    r: *mut c_void,
    zone: c_int,
    step_index: c_int,
    body: *const c_uchar,
    body_len: usize,
) -> c_int {
    guarded(GRAFT_ERROR, || {
        // SAFETY: `r` is null or the live request the Lua side passed (# Safety).
        let (r, config, zone) = match unsafe { request_zone(r, zone) } {
            Ok(found) => found,
            Err(rc) => return rc,
        };
        let z = &config.zones[zone];
        let Ok(index) = usize::try_from(step_index) else {
            return GRAFT_ERROR;
        };
        // SAFETY: `body` points at `body_len` bytes (# Safety).
        crate::rewrite::compare(r, z, index, unsafe { bytes(body, body_len) });
        GRAFT_OK
    })
}

/// Whether the later phases (response body, log) of zone `zone` concern
/// this request: a main request whose pipeline ran for that zone last, as
/// graft's own filters and log handler see it. Anything else (a
/// subrequest, a request answered before the access phase, another
/// zone) has them on neither side.
fn pipeline_ran_for(r: &ngx_http_request_t, zone: c_int) -> bool {
    std::ptr::eq(r, r.main)
        && ctx::existing(r)
            .is_some_and(|c| c.ran_zones.last().copied() == usize::try_from(zone).ok())
}

/// Zone `zone` of a configuration, if it has one of that index.
fn zone_of(config: &Config, zone: c_int) -> Option<&graft_engine::Zone> {
    config.zones.get(usize::try_from(zone).ok()?)
}

/// The current request, the configuration it is served with and the
/// index of one of its zones, or the code to return: `GRAFT_ERROR`
/// without a request or for an index out of range, `GRAFT_NO_CONFIG`
/// without a configuration.
///
/// # Safety
/// `r` must be null or the live request `get_request()` gave.
unsafe fn request_zone<'r>(
    r: *mut c_void,
    zone: c_int,
) -> Result<(&'r ngx_http_request_t, std::sync::Arc<Config>, usize), c_int> {
    // SAFETY: the caller's contract.
    let r = unsafe { request(r) }.ok_or(GRAFT_ERROR)?;
    let config = ctx::config(r).cloned().ok_or(GRAFT_NO_CONFIG)?;
    let index = usize::try_from(zone)
        .ok()
        .filter(|&z| z < config.zones.len())
        .ok_or(GRAFT_ERROR)?;
    Ok((r, config, index))
}

/// The bytes a caller passed, or none.
///
/// # Safety
/// `p` is null or points at `n` readable bytes.
unsafe fn bytes<'a>(p: *const c_uchar, n: usize) -> &'a [u8] {
    if p.is_null() || n == 0 {
        return &[];
    }
    // SAFETY: each pointer is null or points at its length of readable bytes (# Safety).
    unsafe { std::slice::from_raw_parts(p, n) }
}

/// A shadow difference the Lua side found at a step: kept, with both
/// decisions described, in the ring the dashboard shows (the count is
/// `graft_ffi_count`'s).
///
/// # Safety
/// `r` is the current request; `lua` and `rust` point at their lengths of
/// bytes.
#[no_mangle]
pub unsafe extern "C" fn graft_ffi_note_diff(
    r: *mut c_void,
    zone: c_int,
    step_index: c_int,
    lua: *const c_uchar,
    lua_len: usize,
    rust: *const c_uchar,
    rust_len: usize,
) -> c_int {
    guarded(GRAFT_ERROR, || {
        // SAFETY: `r` is null or the live request the Lua side passed (# Safety).
        let (r, zone_name, step) = match unsafe { request_step(r, zone, step_index) } {
            Ok(found) => found,
            Err(rc) => return rc,
        };
        // SAFETY: each pointer is null or points at its length of readable bytes (# Safety).
        let (lua, rust) = unsafe { (bytes(lua, lua_len), bytes(rust, rust_len)) };
        // SAFETY: nginx's request line of a live request.
        let line = unsafe {
            if r.request_line.len == 0 {
                &[][..]
            } else {
                std::slice::from_raw_parts(r.request_line.data, r.request_line.len)
            }
        };
        crate::diffs::note(&graft_engine::diff_ring::Difference {
            at_secs: u64::try_from(ngx_time()).unwrap_or(0),
            zone: zone_name,
            module: step.module_name,
            request: &String::from_utf8_lossy(line),
            lua: &String::from_utf8_lossy(lua),
            rust: &String::from_utf8_lossy(rust),
        });
        GRAFT_OK
    })
}

/// Keeps a response-header change the Lua side decided, for graft's
/// header filter to apply to the main response (the same filter applies
/// the native pipeline's): kept in the request's record, it outlives an
/// internal redirect, which would clear `ngx.ctx`. `GRAFT_ERROR`: the
/// name or value is not a header graft writes (CR, LF, NUL...), or the
/// action unknown.
///
/// # Safety
/// `r` is the current request; `name` and `value` point at their lengths
/// of bytes.
#[no_mangle]
pub unsafe extern "C" fn graft_ffi_response_header(
    r: *mut c_void,
    action: c_int,
    name: *const c_uchar,
    name_len: usize,
    value: *const c_uchar,
    value_len: usize,
) -> c_int {
    guarded(GRAFT_ERROR, || {
        // SAFETY: `r` is null or the live request the Lua side passed (# Safety).
        let Some(r) = (unsafe { request(r) }) else {
            return GRAFT_ERROR;
        };
        if !std::ptr::eq(r, r.main) {
            return GRAFT_DECLINED;
        }
        let action = match action {
            GRAFT_HEADER_SET => HeaderAction::Set,
            GRAFT_HEADER_ADD => HeaderAction::Add,
            GRAFT_HEADER_REMOVE => HeaderAction::Remove,
            _ => return GRAFT_ERROR,
        };
        // SAFETY: each pointer is null or points at its length of readable bytes (# Safety).
        let (name, value) = unsafe { (bytes(name, name_len), bytes(value, value_len)) };
        let Ok(name) = std::str::from_utf8(name) else {
            return GRAFT_ERROR;
        };
        let (Ok(name), Ok(value)) = (HeaderName::new(name), HeaderValue::new(value)) else {
            return GRAFT_ERROR;
        };
        let Some(ctx) = ctx::of(r) else {
            return GRAFT_ERROR;
        };
        ctx.response_ops.push(HeaderOp {
            action,
            name,
            value,
        });
        GRAFT_OK
    })
}

/// Whether a header may be in a decision of the Lua side, as the Rust
/// side's are checked (`HeaderName`, `HeaderValue`,
/// `Decision::check_framing`): `GRAFT_OK`; `GRAFT_FRAMING` for a header
/// only the server frames (`Content-Length`, `Transfer-Encoding`, ...);
/// `GRAFT_ERROR` for a name that is not a token or a value with a control
/// byte, or either too long. Checked before any of a decision is applied.
///
/// # Safety
/// `name` and `value` point at their lengths of bytes.
#[no_mangle]
pub unsafe extern "C" fn graft_ffi_check_header(
    name: *const c_uchar,
    name_len: usize,
    value: *const c_uchar,
    value_len: usize,
) -> c_int {
    guarded(GRAFT_ERROR, || {
        // SAFETY: each pointer is null or points at its length of readable bytes (# Safety).
        let (name, value) = unsafe { (bytes(name, name_len), bytes(value, value_len)) };
        let Ok(name) = std::str::from_utf8(name) else {
            return GRAFT_ERROR;
        };
        if HeaderName::new(name).is_err() || HeaderValue::new(value).is_err() {
            return GRAFT_ERROR;
        }
        if graft_contract::is_framing_header(name) {
            return GRAFT_FRAMING;
        }
        GRAFT_OK
    })
}

/// Decodes a request body for the Lua side's WAF with the Rust side's own
/// decoder (`graft_contract::body::decode::decode`): `coding` is every
/// `Content-Encoding` header joined by `", "`, and the body is decoded
/// within `max_bytes` and `max_ratio` (the WAF's `"decompress"`).
/// `GRAFT_OK`: the decoded bytes are in `buf`, `*len` of them;
/// `GRAFT_DECLINED`: the list names no coding (identity), nothing to
/// decode; `GRAFT_ERROR`: the body is undecidable, and why is in `buf`
/// (cut to fit, `*len` its length); `GRAFT_AGAIN`: the decoded body needs
/// `*len` bytes (a buffer of `min(max_bytes, max_ratio * body_len)` is
/// always enough); `GRAFT_PANIC`: the decoder failed.
///
/// # Safety
/// `coding` and `body` point at their lengths of bytes; `buf` is writable
/// for `*len` bytes and `len` valid.
#[no_mangle]
pub unsafe extern "C" fn graft_ffi_decode(
    coding: *const c_uchar,
    coding_len: usize,
    body: *const c_uchar,
    body_len: usize,
    max_bytes: usize,
    max_ratio: usize,
    buf: *mut c_uchar,
    len: *mut usize,
) -> c_int {
    use graft_contract::body::decode::{decode, Limits};
    guarded(GRAFT_PANIC, || {
        if len.is_null() {
            return GRAFT_ERROR;
        }
        // SAFETY: each pointer is null or points at its length of readable bytes (# Safety).
        let (coding, body) = unsafe { (bytes(coding, coding_len), bytes(body, body_len)) };
        let limits = Limits {
            max_bytes,
            max_ratio,
        };
        match decode(coding, body, limits) {
            // SAFETY: `buf` is writable for `*len` bytes, `len` valid (# Safety).
            Ok(Some(decoded)) => unsafe { copy_out(&decoded, buf, len) },
            Ok(None) => {
                // SAFETY: `len` is valid (# Safety).
                unsafe { *len = 0 };
                GRAFT_DECLINED
            }
            Err(why) => {
                // SAFETY: as above.
                unsafe { copy_message(&why, buf, len) };
                GRAFT_ERROR
            }
        }
    })
}

/// Whether a team's handler ran step `step` of zone `zone` first, through
/// `graft.decide` (`GRAFT_DONE`: the bridge passes it), or not
/// (`GRAFT_OK`). Asks only: the bridge runs its own steps by its resume
/// point, never by this.
///
/// # Safety
/// `r` is the current request.
#[no_mangle]
pub unsafe extern "C" fn graft_ffi_claimed(r: *mut c_void, zone: c_int, step: c_int) -> c_int {
    guarded(GRAFT_ERROR, || {
        // SAFETY: `r` is null or the live request the Lua side passed (# Safety).
        let Some(r) = (unsafe { request(r) }) else {
            return GRAFT_ERROR;
        };
        let (Ok(zone), Ok(step)) = (usize::try_from(zone), usize::try_from(step)) else {
            return GRAFT_ERROR;
        };
        match ctx::existing(r) {
            Some(ctx) if ctx.claimed.contains(&(zone, step)) => GRAFT_DONE,
            _ => GRAFT_OK,
        }
    })
}

/// The admin guard again where an admin export changes anything: a Lua
/// side that did not ask it first (an older admin.lua, a handler of its
/// own) changes nothing, and is told so in `buf`.
///
/// # Safety
/// `buf` is null or writable for `*len` bytes; `len` is valid.
unsafe fn refused_by_admin_guard(
    r: &ngx_http_request_t,
    buf: *mut c_uchar,
    len: *mut usize,
) -> bool {
    if crate::admin_auth::check(r).is_ok() {
        return false;
    }
    // SAFETY: the caller's contract.
    unsafe { copy_message("refused by the admin API's guard", buf, len) };
    true
}

/// Whether an admin call may be served (`admin_auth`): `GRAFT_OK`, or the
/// status to refuse it with (401 without the admin token, 403 for a
/// browser's request, a Host that is not loopback, or an admin API with no
/// `graft_admin_token`), counted and logged.
///
/// # Safety
/// `r` is the current request.
#[no_mangle]
pub unsafe extern "C" fn graft_ffi_admin_check(r: *mut c_void) -> c_int {
    guarded(GRAFT_ERROR, || {
        // SAFETY: `r` is null or the live request the Lua side passed (# Safety).
        let Some(r) = (unsafe { request(r) }) else {
            return GRAFT_ERROR;
        };
        match crate::admin_auth::check(r) {
            Ok(()) => GRAFT_OK,
            Err(status) => c_int::from(status),
        }
    })
}

/// A step runs once a request, whoever reaches it first: `GRAFT_OK` when
/// step `step` of zone `zone` has not run for this request (it is now
/// the caller's, a team's `graft.decide`, and the zone's pipeline passes
/// it), `GRAFT_DONE` when it has (the native pipeline, the bridge or an
/// earlier `graft.decide` ran it, and applied what it decided).
///
/// # Safety
/// `r` is the current request.
#[no_mangle]
pub unsafe extern "C" fn graft_ffi_claim(r: *mut c_void, zone: c_int, step: c_int) -> c_int {
    guarded(GRAFT_ERROR, || {
        // SAFETY: `r` is null or the live request the Lua side passed
        // (# Safety), which nothing else borrows during this call.
        unsafe { crate::edge::judge_once(r.cast()) };
        // SAFETY: `r` is null or the live request the Lua side passed (# Safety).
        let Some(r) = (unsafe { request(r) }) else {
            return GRAFT_ERROR;
        };
        let (Ok(zone), Ok(step)) = (usize::try_from(zone), usize::try_from(step)) else {
            return GRAFT_ERROR;
        };
        // A subrequest (auth_request, SSI) shares the main request's
        // record: its graft.decide runs the step for itself and claims
        // nothing of the main request's.
        if !std::ptr::eq(r, r.main) {
            return GRAFT_OK;
        }
        let Some(ctx) = ctx::of(r) else {
            return GRAFT_ERROR;
        };
        if ctx.claim(zone, step) {
            GRAFT_OK
        } else {
            GRAFT_DONE
        }
    })
}

/// Writes a line of the Lua side to the error log within its family's
/// budget (`GRAFT_LOG_*`): returns `GRAFT_DECLINED` when the line was left
/// out.
///
/// # Safety
/// `r` is the current request; `line` points at `line_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn graft_ffi_log(
    r: *mut c_void,
    family: c_int,
    line: *const c_uchar,
    line_len: usize,
) -> c_int {
    guarded(GRAFT_ERROR, || {
        // SAFETY: `r` is null or the live request the Lua side passed (# Safety).
        let Some(r) = (unsafe { request(r) }) else {
            return GRAFT_ERROR;
        };
        let Some(family) = usize::try_from(family)
            .ok()
            .and_then(|f| LogFamily::ALL.get(f).copied())
        else {
            return GRAFT_ERROR;
        };
        // SAFETY: each pointer is null or points at its length of readable bytes (# Safety).
        let line = String::from_utf8_lossy(unsafe { bytes(line, line_len) });
        log_limited(r, family, &line);
        GRAFT_OK
    })
}

/// One zone's plan (zones from 0, in the configuration's order), for the
/// Lua side to load and check every legacy module a configuration names
/// before it serves, one zone at a time (so that checking ten thousand
/// zones never holds them all): `GRAFT_DONE` past the last zone. `which`
/// is `GRAFT_PLANS_LOADED` for the configuration the master has just
/// loaded (at start and on each reload, from `init_by_lua`; `r` may be
/// null), `GRAFT_PLANS_PENDING` for the one a live apply is checking.
///
/// # Safety
/// `buf` is writable for `*len` bytes and `len` valid.
#[no_mangle]
pub unsafe extern "C" fn graft_ffi_plans(
    _r: *mut c_void,
    which: c_int,
    zone: c_int,
    buf: *mut c_uchar,
    len: *mut usize,
) -> c_int {
    guarded(GRAFT_ERROR, || {
        let config = match which {
            GRAFT_PLANS_LOADED => crate::live::loaded_config(),
            GRAFT_PLANS_PENDING => crate::live::pending_config(),
            _ => return GRAFT_ERROR,
        };
        let Some(config) = config else {
            return GRAFT_NO_CONFIG;
        };
        let Some(zone) = usize::try_from(zone).ok() else {
            return GRAFT_ERROR;
        };
        match config.zones.get(zone) {
            // SAFETY: `buf` is writable for `*len` bytes (# Safety).
            Some(z) => unsafe { copy_out(z.plan_json().as_bytes(), buf, len) },
            None => GRAFT_DONE,
        }
    })
}

/// The metrics of every zone and step, summed over every worker, in
/// Prometheus' text format.
///
/// # Safety
/// `r` is the current request; `buf` is writable for `*len` bytes.
#[no_mangle]
pub unsafe extern "C" fn graft_ffi_metrics(
    r: *mut c_void,
    buf: *mut c_uchar,
    len: *mut usize,
) -> c_int {
    // SAFETY: `r`, `buf` and `len` are as this function's # Safety says,
    // which is what export_text asks.
    unsafe {
        export_text(r, buf, len, |c| {
            c.flush_counts(u64::try_from(ngx_time()).unwrap_or(0));
            graft_engine::metrics::prometheus_text(c)
        })
    }
}

/// What a fleet agent's health gates read: requests by path summed over
/// every zone and module, and the counts of the whole nginx, in
/// Prometheus' text format; small whatever the configuration's size
/// (the agent reads it twice a second).
///
/// # Safety
/// `r` is the current request; `buf` is writable for `*len` bytes.
#[no_mangle]
pub unsafe extern "C" fn graft_ffi_totals(
    r: *mut c_void,
    buf: *mut c_uchar,
    len: *mut usize,
) -> c_int {
    guarded(GRAFT_ERROR, || {
        // An agent reads the totals right after a live apply, for its
        // gates' baseline: they must be the new configuration's, even in
        // a worker whose tick has not taken it yet.
        // SAFETY: `r` is null or the live request the Lua side passed (# Safety).
        if let Some(req) = unsafe { request(r) } {
            crate::live::catch_up_for(req);
        }
        // SAFETY: `r`, `buf` and `len` are as this function's # Safety
        // says, which is what export_text asks.
        unsafe {
            export_text(r, buf, len, |c| {
                c.flush_counts(u64::try_from(ngx_time()).unwrap_or(0));
                graft_engine::metrics::totals_text(c)
            })
        }
    })
}

/// Applies the configuration file live (admin), in two stages so that the
/// Lua side can check its legacy modules in between:
/// `GRAFT_APPLY_CHECK` reads and validates the file (or the `text_len`
/// bytes at `text` when `text` is not null: a configuration sent to the
/// admin API, by graft-agent from etcd) and keeps it pending
/// (its plans are then `graft_ffi_plans(r, GRAFT_PLANS_PENDING, ...)`);
/// `GRAFT_APPLY_COMMIT` swaps the pending configuration in, for this worker
/// at once and every other one within a quarter second, and `buf` says
/// the new generation. `GRAFT_ERROR`: `buf` says why; the running
/// configuration goes on. `*len` is what was written (a long message is
/// cut), never a request for a second call.
///
/// # Safety
/// `r` is the current request; `text` is null or points at `text_len`
/// readable bytes; `buf` is writable for `*len` bytes.
#[no_mangle]
pub unsafe extern "C" fn graft_ffi_apply(
    r: *mut c_void,
    stage: c_int,
    text: *const c_uchar,
    text_len: usize,
    buf: *mut c_uchar,
    len: *mut usize,
) -> c_int {
    guarded(GRAFT_ERROR, || {
        // SAFETY: `r` is null or the live request the Lua side passed (# Safety).
        let Some(r) = (unsafe { request(r) }) else {
            return GRAFT_ERROR;
        };
        // SAFETY: `buf` is writable for `*len` bytes (# Safety).
        if unsafe { refused_by_admin_guard(r, buf, len) } {
            return GRAFT_ERROR;
        }
        let result = match stage {
            GRAFT_APPLY_CHECK => crate::live::prepare_live(
                r,
                // SAFETY: `text` is null or points at `text_len` readable
                // bytes (# Safety).
                (!text.is_null())
                    .then(|| unsafe { std::slice::from_raw_parts(text, text_len) }.to_vec()),
            )
            .map(|g| format!("checked, generation {g}"))
            .inspect_err(|_| crate::live::refuse_live()),
            GRAFT_APPLY_COMMIT => crate::live::commit_live(r)
                .map(|g| format!("applied, generation {g}"))
                .inspect_err(|_| crate::live::refuse_live()),
            GRAFT_APPLY_REFUSE => {
                crate::live::refuse_live();
                Ok("refused".to_string())
            }
            _ => Err(format!("no apply stage {stage}")),
        };
        let (rc, message) = match result {
            Ok(m) => (GRAFT_OK, m),
            Err(e) => (GRAFT_ERROR, e),
        };
        // SAFETY: `buf` is writable for `*len` bytes (# Safety).
        unsafe { copy_message(&message, buf, len) };
        rc
    })
}

/// Throws (`state` 1) or resets (0) the kill switch of a module, in one
/// zone (`zone_len` > 0) or in every zone. On error, `buf` says why.
///
/// # Safety
/// `r` is the current request; `module` and `zone` point at their lengths
/// of bytes; `buf` is writable for `*len` bytes.
#[no_mangle]
pub unsafe extern "C" fn graft_ffi_kill(
    r: *mut c_void,
    module: *const c_uchar,
    module_len: usize,
    zone: *const c_uchar,
    zone_len: usize,
    state: c_int,
    buf: *mut c_uchar,
    len: *mut usize,
) -> c_int {
    guarded(GRAFT_ERROR, || {
        // SAFETY: `r` is null or the live request the Lua side passed (# Safety).
        let Some(r) = (unsafe { request(r) }) else {
            return GRAFT_ERROR;
        };
        // SAFETY: `buf` is writable for `*len` bytes (# Safety).
        if unsafe { refused_by_admin_guard(r, buf, len) } {
            return GRAFT_ERROR;
        }
        let text = |p: *const c_uchar, n: usize| -> Option<String> {
            if n == 0 || p.is_null() {
                return None;
            }
            // SAFETY: each pointer is null or points at its length of readable bytes (# Safety).
            Some(String::from_utf8_lossy(unsafe { std::slice::from_raw_parts(p, n) }).into_owned())
        };
        let (module, zone) = (
            text(module, module_len).unwrap_or_default(),
            text(zone, zone_len),
        );
        let kill = match state {
            GRAFT_SWITCH_RESET => Kill::Off,
            GRAFT_SWITCH_THROW => Kill::Manual,
            _ => return GRAFT_ERROR,
        };
        crate::live::catch_up_for(r);
        let result = crate::conf::current_config(r)
            .ok_or_else(|| "no graft_config".to_string())
            .and_then(|c| {
                c.set_kill(zone.as_deref(), &module, kill)
                    .map_err(|e| e.to_string())
            });
        match result {
            Ok(()) => {
                // SAFETY: a live request's connection and its log are valid.
                let log = unsafe { (*r.connection).log };
                let place = zone.map_or("every zone".to_string(), |z| format!("zone \"{z}\""));
                let what = if kill == Kill::Off { "reset" } else { "thrown" };
                ngx_log_error!(
                    NGX_LOG_WARN,
                    log,
                    "graft: kill switch of module \"{module}\" in {place} {what}"
                );
                GRAFT_OK
            }
            Err(e) => {
                // SAFETY: `buf` is writable for `*len` bytes (# Safety).
                unsafe { copy_message(&e, buf, len) };
                GRAFT_ERROR
            }
        }
    })
}

/// Stores a report of this server's fleet agent (`name=value&...`, the
/// names of `graft_engine::fleet::FIELDS`) for `/graft/metrics` in every
/// worker. On error (an unknown name, a value not a whole number), `buf`
/// says why and nothing is stored.
///
/// # Safety
/// `r` is the current request; `report` points at `report_len` readable
/// bytes; `buf` is writable for `*len` bytes.
#[no_mangle]
pub unsafe extern "C" fn graft_ffi_fleet(
    r: *mut c_void,
    report: *const c_uchar,
    report_len: usize,
    buf: *mut c_uchar,
    len: *mut usize,
) -> c_int {
    guarded(GRAFT_ERROR, || {
        // SAFETY: `r` is null or the live request the Lua side passed (# Safety).
        let Some(r) = (unsafe { request(r) }) else {
            return GRAFT_ERROR;
        };
        // SAFETY: `buf` is writable for `*len` bytes (# Safety).
        if unsafe { refused_by_admin_guard(r, buf, len) } {
            return GRAFT_ERROR;
        }
        let text = if report.is_null() {
            String::new()
        } else {
            // SAFETY: `report` points at `report_len` readable bytes (# Safety).
            String::from_utf8_lossy(unsafe { std::slice::from_raw_parts(report, report_len) })
                .into_owned()
        };
        let result = crate::conf::current_config(r)
            .ok_or_else(|| "no graft_config".to_string())
            .and_then(|c| c.fleet_report(&text, u64::try_from(ngx_time()).unwrap_or(0)));
        match result {
            Ok(()) => GRAFT_OK,
            Err(e) => {
                // SAFETY: `buf` is writable for `*len` bytes (# Safety).
                unsafe { copy_message(&e, buf, len) };
                GRAFT_ERROR
            }
        }
    })
}

/// Counts what the Lua side served for one step (`GRAFT_COUNT_*`).
///
/// # Safety
/// `r` is the current request.
#[no_mangle]
pub unsafe extern "C" fn graft_ffi_count(
    r: *mut c_void,
    zone: c_int,
    step_index: c_int,
    what: c_int,
) -> c_int {
    guarded(GRAFT_ERROR, || {
        // SAFETY: `r` is null or the live request the Lua side passed (# Safety).
        let Some(r) = (unsafe { request(r) }) else {
            return GRAFT_ERROR;
        };
        let Some(config) = ctx::config(r) else {
            return GRAFT_NO_CONFIG;
        };
        match (step(config, zone, step_index), Count::from_code(what)) {
            (Some((zone_name, step)), Some(what)) => {
                record(r, zone_name, step, what);
                GRAFT_OK
            }
            _ => GRAFT_ERROR,
        }
    })
}

/// The counters of every zone and step, as JSON.
///
/// # Safety
/// `r` is the current request; `buf` is writable for `*len` bytes.
#[no_mangle]
pub unsafe extern "C" fn graft_ffi_counters(
    r: *mut c_void,
    buf: *mut c_uchar,
    len: *mut usize,
) -> c_int {
    // SAFETY: `r`, `buf` and `len` are as this function's # Safety says,
    // which is what export_text asks.
    unsafe {
        export_text(r, buf, len, |c| {
            let now = u64::try_from(ngx_time()).unwrap_or(0);
            c.flush_counts(now);
            let mut v = c.counters_value(now);
            v["diffs"] = crate::diffs::recent().into();
            v.to_string()
        })
    }
}
