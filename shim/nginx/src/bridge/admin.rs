//! The exports of the admin API and of the Lua side's start: the guard,
//! the plans to check, metrics, totals and counters, the live apply, kill
//! switches and the fleet agent's report.
use std::ffi::{c_int, c_uchar, c_void};

use graft_engine::Kill;
use ngx::ffi::{ngx_http_request_t, ngx_time, NGX_LOG_WARN};
use ngx::ngx_log_error;

use super::marshal::{
    copy_message, copy_out, export_text, request, GRAFT_APPLY_CHECK, GRAFT_APPLY_COMMIT,
    GRAFT_APPLY_REFUSE, GRAFT_DONE, GRAFT_ERROR, GRAFT_NO_CONFIG, GRAFT_OK, GRAFT_PLANS_LOADED,
    GRAFT_PLANS_PENDING, GRAFT_SWITCH_RESET, GRAFT_SWITCH_THROW,
};
use crate::guard::guarded;

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

/// One zone's plan (zones from 0, in the configuration's order), for the
/// Lua side to load and check every Lua twin a configuration names
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

/// Applies the configuration file live (admin), in two calls (`action`:
/// check, then commit or refuse) so that the Lua side can check its Lua
/// twins in between:
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
    action: c_int,
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
        let result = match action {
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
            _ => Err(format!("no apply action {action}")),
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
/// names of `graft_engine::fleet_report::FIELDS`) for `/graft/metrics` in every
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
