//! The ABI's codes and structures, and what crosses it: the caller's
//! pointers read as a request, a step or bytes, and the answers written
//! back (a decision, a text in the caller's buffer).
use std::cell::RefCell;
use std::ffi::{c_int, c_uchar, c_void};
use std::mem::size_of;
use std::ptr::null;
use std::sync::Arc;

use graft_contract::{Decision, HeaderAction};
use graft_engine::{Config, Step};
use ngx::ffi::ngx_http_request_t;

use crate::ctx;
use crate::guard::guarded;

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

pub(super) const GRAFT_PLANS_LOADED: c_int = 0;
pub(super) const GRAFT_PLANS_PENDING: c_int = 1;
pub(super) const GRAFT_APPLY_CHECK: c_int = 0;
pub(super) const GRAFT_APPLY_COMMIT: c_int = 1;
pub(super) const GRAFT_APPLY_REFUSE: c_int = 2;
pub(super) const GRAFT_SWITCH_RESET: c_int = 0;
pub(super) const GRAFT_SWITCH_THROW: c_int = 1;
pub(super) const GRAFT_RESUME_FRESH: c_int = 0;
pub(super) const GRAFT_RESUME_FALLBACK: c_int = 1;
/// Or'ed into the resume flags: a handler ran some of the zone's steps
/// through `graft.decide` (`graft_ffi_claim` tells which).
pub(super) const GRAFT_RESUME_CLAIMED: c_int = 2;
pub(super) const GRAFT_FAIL_CONTINUE: c_int = 0;

pub(super) const GRAFT_CONTINUE: c_int = 0;
pub(super) const GRAFT_RESPOND: c_int = 1;
pub(super) const GRAFT_HEADER_SET: c_int = 0;
pub(super) const GRAFT_HEADER_ADD: c_int = 1;
pub(super) const GRAFT_HEADER_REMOVE: c_int = 2;
pub(super) const GRAFT_TARGET_REQUEST: c_int = 0;
pub(super) const GRAFT_TARGET_RESPONSE: c_int = 1;
pub(super) const GRAFT_TARGET_LOG: c_int = 2;

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
pub(super) struct DecisionOut {
    decision: Option<Decision>,
    headers: Vec<graft_header_t>,
    message: String,
}

thread_local! {
    pub(super) static OUT: RefCell<DecisionOut> = RefCell::default();
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
    pub(super) fn fill(&mut self, decision: Decision, out: &mut graft_decision_t) {
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

    pub(super) fn fail(&mut self, message: String, out: &mut graft_decision_t) {
        self.decision = None;
        self.headers.clear();
        self.message = message;
        *out = empty_decision();
        out.err = self.message.as_ptr();
        out.err_len = self.message.len();
    }
}

pub(super) fn empty_decision() -> graft_decision_t {
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
pub(super) unsafe fn request<'r>(r: *mut c_void) -> Option<&'r ngx_http_request_t> {
    // SAFETY: the caller's contract: `r` is null or a live request, which outlives the borrow.
    unsafe { (r as *const ngx_http_request_t).as_ref() }
}

/// The current request and one step of the configuration it is served
/// with, or the code to return: `GRAFT_ERROR` without a request or for an
/// index out of range, `GRAFT_NO_CONFIG` without a configuration.
///
/// # Safety
/// `r` must be null or the live request `get_request()` gave.
pub(super) unsafe fn request_step<'r>(
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

pub(super) fn step(config: &Config, zone: c_int, step: c_int) -> Option<(&str, &Step)> {
    let zone = config.zones.get(usize::try_from(zone).ok()?)?;
    Some((&zone.name, zone.steps.get(usize::try_from(step).ok()?)?))
}

/// Writes a text made from the request's configuration into the caller's
/// buffer (see `copy_out`).
///
/// # Safety
/// `r` is null or the current request; `buf` is writable for `*len` bytes.
pub(super) unsafe fn export_text(
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
pub(super) unsafe fn copy_out(src: &[u8], buf: *mut c_uchar, len: *mut usize) -> c_int {
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
pub(super) unsafe fn copy_message(message: &str, buf: *mut c_uchar, len: *mut usize) {
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

/// Zone `zone` of a configuration, if it has one of that index.
pub(super) fn zone_of(config: &Config, zone: c_int) -> Option<&graft_engine::Zone> {
    config.zones.get(usize::try_from(zone).ok()?)
}

/// The current request, the configuration it is served with and the
/// index of one of its zones, or the code to return: `GRAFT_ERROR`
/// without a request or for an index out of range, `GRAFT_NO_CONFIG`
/// without a configuration.
///
/// # Safety
/// `r` must be null or the live request `get_request()` gave.
pub(super) unsafe fn request_zone<'r>(
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
pub(super) unsafe fn bytes<'a>(p: *const c_uchar, n: usize) -> &'a [u8] {
    if p.is_null() || n == 0 {
        return &[];
    }
    // SAFETY: each pointer is null or points at its length of readable bytes (# Safety).
    unsafe { std::slice::from_raw_parts(p, n) }
}
