//! The exports of the request path: the zone and its plan, a step run,
//! resumed, claimed, failed or counted, the body, response and log
//! phases' questions, shadow differences, and the checks of what the Lua
//! side decided.
use std::ffi::{c_int, c_uchar, c_ulonglong, c_void};

use graft_contract::{FailurePolicy, HeaderAction, HeaderName, HeaderOp, HeaderValue};
use graft_engine::protocol::later::{Phase, Side};
use graft_engine::protocol::{HandOver, Legacy, Served};
use graft_engine::{Count, Impl, Mode, Outcome, Step};
use ngx::ffi::{ngx_http_request_t, ngx_time};

use super::marshal::{
    bytes, copy_message, copy_out, empty_decision, graft_decision_t, request, request_step,
    request_zone, step, zone_of, GRAFT_DECLINED, GRAFT_DONE, GRAFT_ERROR, GRAFT_FAIL_CONTINUE,
    GRAFT_FRAMING, GRAFT_HEADER_ADD, GRAFT_HEADER_REMOVE, GRAFT_HEADER_SET, GRAFT_NO_CONFIG,
    GRAFT_OK, GRAFT_PANIC, GRAFT_RESUME_CLAIMED, GRAFT_RESUME_FALLBACK, GRAFT_RESUME_FRESH,
    GRAFT_USE_LUA, OUT,
};
use crate::ctx::{self, Pipeline};
use crate::guard::guarded;
use crate::live::shared_windows;
use crate::location::zone_for;
use crate::request::NgxRequest;
use crate::steps::{
    fail_step, later_legacy_asks, log_limited, protocol, record, zone_body, LogFamily, NgxServer,
};

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
            return rust_not_asked(r, zone_name, step, "graft's shared tables are not mapped");
        };
        let view = match config
            .zones
            .get(usize::try_from(zone).unwrap_or(usize::MAX))
            .map(|z| zone_body(r, z))
        {
            Some(Ok(body)) => NgxRequest::with_body(r, body),
            // The Lua side asks graft_ffi_body first; a body it did not
            // have read cannot be inspected: Rust does not decide.
            Some(Err(_)) | None => {
                return rust_not_asked(r, zone_name, step, "its request body was not read");
            }
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
        if matches!(&outcome, Outcome::Decided(d) if d.is_unchanged()) {
            // Nothing to hand over, so nothing is kept.
            *out = empty_decision();
            return GRAFT_OK;
        }
        OUT.with_borrow_mut(|buf| match outcome {
            Outcome::Decided(d) => {
                buf.fill(d.into_decision(), out);
                GRAFT_OK
            }
            Outcome::Declined => {
                buf.fail("declined".into(), out);
                GRAFT_DECLINED
            }
            Outcome::Errored(e) => {
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

/// The Rust side of a step could not be asked (`why`): Lua serves the
/// step, and where Rust was to serve it that is a fallback, counted and
/// logged like any other.
fn rust_not_asked(r: &ngx_http_request_t, zone: &str, step: &Step, why: &str) -> c_int {
    if step.mode_for(&NgxRequest::new(r)) == Mode::Rust {
        record(r, zone, step, Count::Fallback);
        log_limited(
            r,
            LogFamily::Failure,
            format_args!(
                "graft: zone \"{zone}\" module \"{}\" could not be asked: {why}",
                step.module_name
            ),
        );
    }
    GRAFT_ERROR
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
                // graft-edge asked this step's Rust side already.
                match ctx.edge_fallback {
                    Some((z, step)) if z == zone => (Some(step), true),
                    _ => (Some(0), false),
                }
            }
            // The native pipeline ran this zone just now, up to a step.
            Pipeline::Native if ctx.ran_zones.last() == Some(&zone) => {
                (ctx.resume_at, ctx.fallback)
            }
            _ => (None, false),
        };
        ctx.pipeline = Pipeline::Taken;
        ctx.lua_bridge = true;
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

/// A zone's and a step's index as the Lua side passed them (checked
/// against the configuration by `request_step` before).
fn later_indices(zone: c_int, step_index: c_int) -> (usize, usize) {
    let index = |i: c_int| usize::try_from(i).unwrap_or(usize::MAX);
    (index(zone), index(step_index))
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
        let (r, zone_name, step) = match unsafe { request_step(r, zone, step_index) } {
            Ok(found) => found,
            Err(rc) => return rc,
        };
        if !pipeline_ran_for(r, zone) {
            return GRAFT_DECLINED;
        }
        let (zone, index) = later_indices(zone, step_index);
        match later_legacy_asks(r, zone, zone_name, index, step, Phase::ResponseBody) {
            Some(Side::Rust) => GRAFT_OK,
            Some(_) => GRAFT_USE_LUA,
            None => GRAFT_ERROR,
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
        let (r, zone_name, step) = match unsafe { request_step(r, zone, step_index) } {
            Ok(found) => found,
            Err(rc) => return rc,
        };
        if !pipeline_ran_for(r, zone) {
            return GRAFT_DECLINED;
        }
        let (zone_index, index) = later_indices(zone, step_index);
        if !line.is_null() {
            let Some(config) = ctx::config(r).cloned() else {
                return GRAFT_NO_CONFIG;
            };
            let Some(z) = zone_of(&config, zone) else {
                return GRAFT_ERROR;
            };
            let side = ctx::existing(r).and_then(|c| c.sides.get(zone_index, index, Phase::Log));
            if side == Some(Side::Shadow) {
                // SAFETY: `line` points at `line_len` bytes (# Safety).
                crate::log_phase::compare(r, z, step, unsafe { bytes(line, line_len) });
            }
            return GRAFT_OK;
        }
        match later_legacy_asks(r, zone_index, zone_name, index, step, Phase::Log) {
            Some(Side::Rust) => GRAFT_OK,
            Some(_) => GRAFT_USE_LUA,
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
        if !pipeline_ran_for(r, zone) {
            return GRAFT_DECLINED;
        }
        let index = usize::try_from(step_index).unwrap_or(usize::MAX);
        if !ops.is_null() {
            let Some(config) = ctx::config(r).cloned() else {
                return GRAFT_NO_CONFIG;
            };
            let Some(z) = zone_of(&config, zone) else {
                return GRAFT_ERROR;
            };
            // SAFETY: `ops` points at `ops_len` bytes (# Safety).
            crate::response::compare(r, z, zone, index, step, unsafe { bytes(ops, ops_len) });
            return GRAFT_OK;
        }
        match crate::response::lua_serves(r, zone, index) {
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
