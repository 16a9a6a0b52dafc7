//! The log phase: a zone's steps whose module writes a record per request
//! (`Module::on_log`). nginx runs lua-nginx-module's log handler (a
//! location's `log_by_lua_block { require("graft").log() }`) before
//! graft's. For each such step the first of the two to ask decides, once a
//! request, which side serves it (its mode for the request: a canary per
//! client, a kill switch); the Lua side writes the records of the steps it
//! serves (in `shadow`, it writes and Rust compares its own record with
//! Lua's, `compare`), graft's handler the others. A step left to Lua that
//! no Lua handler took is counted as failed and logged.
//!
//! Records are appended to their file by the worker, one `write` a line
//! (files opened once a worker and path, like nginx's own access logs,
//! blocking as theirs are: `graft_engine::record_file`, graft-edge's
//! writer too). A file that cannot be opened or written is a failure of
//! the step: counted and logged, never silent.
use graft_contract::{Completed, LogOutcome};
use graft_engine::protocol::later::Phase;
use graft_engine::record_file::log_step;
use graft_engine::{run_log_phase, Count, Step, Zone};
use ngx::ffi::{ngx_http_request_t, ngx_int_t, ngx_time, NGX_OK};

use crate::conf::{main_directive, NGX_CONF_ERROR};
use crate::ctx;
use crate::guard::guarded;
use crate::request::NgxRequest;
use crate::steps::{check_later_taken, later_failed, later_side, log_limited, record, LogFamily};

/// `graft_log_dir <dir> ...;`: where a module may write files (each an
/// absolute path with no `.` or `..` part; the directive may be repeated).
pub unsafe extern "C" fn set_log_dir(
    cf: *mut ngx::ffi::ngx_conf_t,
    _cmd: *mut ngx::ffi::ngx_command_t,
    conf: *mut std::ffi::c_void,
) -> *mut std::ffi::c_char {
    guarded(NGX_CONF_ERROR, || {
        // SAFETY: nginx calls a directive's handler with graft's main conf.
        let (mcf, args) = unsafe { main_directive(cf, conf) };
        for arg in &args[1..] {
            let dir = arg.to_string();
            let dir = dir.trim_end_matches('/');
            if !dir.starts_with('/') || dir.split('/').any(|p| p == "." || p == "..") {
                ngx::ngx_conf_log_error!(
                    ngx::ffi::NGX_LOG_EMERG,
                    cf,
                    "graft_log_dir \"{dir}\": an absolute directory with no \".\" or \"..\" part"
                );
                return NGX_CONF_ERROR;
            }
            mcf.log_dirs.push(std::path::PathBuf::from(dir));
        }
        std::ptr::null_mut()
    })
}

/// What the log phase knows of the request.
fn completed<'z>(r: &ngx_http_request_t, zone: &'z str) -> Completed<'z> {
    // SAFETY: a live request's connection is valid.
    let sent = unsafe { r.connection.as_ref() }.map_or(0, |c| c.sent);
    Completed {
        zone,
        status: crate::headers::response_status(r),
        bytes_sent: u64::try_from(sent).unwrap_or(0),
        time: u64::try_from(ngx_time()).unwrap_or(0),
    }
}

/// Mode `shadow`: compares the record the Lua side wrote with Rust's own,
/// counting a difference (a match is the request phase's to count) and
/// logging it within the budget of difference lines.
pub fn compare(r: &ngx_http_request_t, zone: &Zone, step: &Step, lua_line: &[u8]) {
    let done = completed(r, &zone.name);
    let rust_line = match run_log_phase(step, &NgxRequest::new(r), &done) {
        Ok(LogOutcome::Write { line, .. } | LogOutcome::Dropped { line }) => line,
        Ok(LogOutcome::NotSampled) => String::new(),
        Err(why) => format!("<{why}>"),
    };
    if rust_line.as_bytes() != lua_line {
        record(r, &zone.name, step, Count::ShadowDiff);
        log_limited(
            r,
            LogFamily::Diff,
            format_args!(
                "graft: shadow diff: zone \"{}\" module \"{}\" log record: lua {} rust {}",
                zone.name,
                step.module_name,
                String::from_utf8_lossy(lua_line),
                rust_line
            ),
        );
    }
}

/// graft's log-phase handler.
pub unsafe extern "C" fn log_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    guarded((), || {
        // SAFETY: nginx calls phase handlers with a live request.
        let r = unsafe { &*r };
        if !std::ptr::eq(r, r.main) {
            return;
        }
        let Some(ctx) = ctx::existing(r) else {
            return;
        };
        let config = ctx.config.clone();
        let Some(zone) = ctx.ran_zones.last().and_then(|&z| config.zones.get(z)) else {
            return;
        };
        let zone_index = ctx.ran_zones.last().copied().unwrap_or_default();
        crate::response::check_taken(r);
        if !zone.later.log {
            return;
        }
        for (i, step) in zone.steps.iter().enumerate() {
            if step.module.logs_requests() {
                run_step(r, zone_index, zone, i, step);
            }
        }
    });
    NGX_OK as ngx_int_t
}

fn run_step(r: &ngx_http_request_t, zone_index: usize, zone: &Zone, i: usize, step: &Step) {
    let Some(side) = later_side(r, zone_index, &zone.name, i, step, Phase::Log) else {
        return;
    };
    if side.legacy_serves() {
        check_later_taken(r, Phase::Log);
        return;
    }
    let done = completed(r, &zone.name);
    if let Err(why) = log_step(step, &NgxRequest::new(r), &done) {
        later_failed(r, &zone.name, step, Phase::Log, &why, true);
    }
}
