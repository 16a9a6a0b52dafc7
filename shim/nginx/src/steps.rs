//! nginx's side of the step protocol (`graft_engine::protocol`), for
//! whoever runs the pipeline (the Lua bridge, `bridge.rs`, or the native
//! phases, `native.rs`): nginx as its `Server` (clock and log), the zone's
//! request body as nginx read it, and per-request lines within their
//! budgets.
use std::ffi::c_int;

use graft_contract::FailurePolicy;
use graft_engine::protocol::later::{Phase, Side};
use graft_engine::protocol::{Legacy, Protocol, Server};
use graft_engine::{Count, Step};
use ngx::ffi::{ngx_http_request_t, ngx_time, NGX_LOG_ERR, NGX_LOG_INFO, NGX_LOG_WARN};
use ngx::ngx_log_error;

use crate::ctx;
use crate::request::{body_prefix, has_body, BodyRead};

/// One call in this many has its latency measured (on either side).
pub const GRAFT_SAMPLE_EVERY: c_int = 32;
const _: () = assert!(GRAFT_SAMPLE_EVERY as u32 == graft_engine::protocol::SAMPLE_EVERY);

/// nginx as the server that drives the step protocol for one request:
/// its cached clock, and the request's log.
pub struct NgxServer<'r>(pub &'r ngx_http_request_t);

impl Server for NgxServer<'_> {
    fn now_secs(&self) -> u64 {
        u64::try_from(ngx_time()).unwrap_or(0)
    }

    fn log(&self, family: LogFamily, line: std::fmt::Arguments<'_>) {
        log_limited(self.0, family, line);
    }

    fn log_change(&self, line: std::fmt::Arguments<'_>) {
        // SAFETY: a live request's connection and its log are valid.
        let log = unsafe { (*self.0.connection).log };
        ngx_log_error!(NGX_LOG_WARN, log, "{line}");
    }
}

/// The step protocol for `zone` of request `r`, on nginx.
pub fn protocol<'a>(
    server: &'a NgxServer<'a>,
    zone: &'a str,
    legacy: Legacy,
    native: bool,
) -> Protocol<'a, NgxServer<'a>> {
    Protocol {
        server,
        zone,
        legacy,
        native,
    }
}

/// The request body as the zone's modules read it: `Ok(None)` for a zone
/// that reads no bodies or a request without one; the first `max_bytes`
/// of a longer body if the zone inspects those (counted and logged), or
/// `Err(status)` to answer the request with before any step runs: the
/// zone's status for a longer body, 500 for a body graft should have but
/// cannot read (never "no body": what is not read is not let through).
/// Taken once a request from what nginx read (the native pipeline, or the
/// Lua side's `ngx.req.read_body()`).
pub fn zone_body(
    r: &ngx_http_request_t,
    zone: &graft_engine::Zone,
) -> Result<Option<std::sync::Arc<[u8]>>, u16> {
    use graft_engine::OverLimit;
    let Some(limit) = zone.body else {
        return Ok(None);
    };
    if !has_body(r) {
        return Ok(None);
    }
    let Some(ctx) = crate::ctx::of(r) else {
        return Err(500);
    };
    let name = &zone.name;
    // Taken once a request (every Rust step of the zone asks); a zone
    // reached after an internal redirect with the same max_bytes gets it
    // again under its own "over".
    if let Some((max, body, total)) = &ctx.body {
        if *max == limit.max_bytes {
            let (body, total) = (body.clone(), *total);
            return match limit.over {
                OverLimit::Respond(status) if total > limit.max_bytes as u64 => {
                    ctx.config.count_body_over(name);
                    log_limited(
                        r,
                        LogFamily::Decision,
                        format_args!("graft: zone \"{name}\": request body of {total} bytes is over its max_bytes of {max}: answered {status}"),
                    );
                    Err(status)
                }
                _ => Ok(Some(body)),
            };
        }
    }
    let (prefix, total) = match body_prefix(r, limit.max_bytes) {
        BodyRead::Read(prefix, total) => (prefix, total),
        BodyRead::NotRead => {
            log_limited(
                r,
                LogFamily::Failure,
                format_args!("graft: zone \"{name}\": the request body was not read before its modules ran: answered 500"),
            );
            return Err(500);
        }
        BodyRead::Unreadable(e) => {
            log_limited(
                r,
                LogFamily::Failure,
                format_args!("graft: zone \"{name}\": the request body's temporary file cannot be read ({e}): answered 500"),
            );
            return Err(500);
        }
    };
    if total > limit.max_bytes as u64 {
        ctx.config.count_body_over(name);
        let max = limit.max_bytes;
        match limit.over {
            OverLimit::Respond(status) => {
                log_limited(
                    r,
                    LogFamily::Decision,
                    format_args!("graft: zone \"{name}\": request body of {total} bytes is over its max_bytes of {max}: answered {status}"),
                );
                return Err(status);
            }
            OverLimit::Inspect => log_limited(
                r,
                LogFamily::Decision,
                format_args!("graft: zone \"{name}\": request body of {total} bytes is over its max_bytes of {max}: its first {max} bytes inspected"),
            ),
        }
    }
    if total == 0 {
        // An empty body (chunked, with no data) is no body, as on the Lua
        // side (ngx.req.get_body_data() gives nil).
        return Ok(None);
    }
    let body: std::sync::Arc<[u8]> = prefix.into();
    ctx.body = Some((limit.max_bytes, body.clone(), total));
    Ok(Some(body))
}

/// A request whose body a zone would refuse for its declared length
/// alone: the status, counted and logged, before anything is read.
pub fn body_declared_over(
    r: &ngx_http_request_t,
    config: &graft_engine::Config,
    zone: &graft_engine::Zone,
) -> Option<u16> {
    let limit = zone.body?;
    let graft_engine::OverLimit::Respond(status) = limit.over else {
        return None;
    };
    let declared = u64::try_from(r.headers_in.content_length_n).ok()?;
    if declared <= limit.max_bytes as u64 {
        return None;
    }
    config.count_body_over(&zone.name);
    log_limited(
        r,
        LogFamily::Decision,
        format_args!(
            "graft: zone \"{}\": request body of {declared} bytes is over its max_bytes of {}: answered {status}",
            zone.name, limit.max_bytes
        ),
    );
    Some(status)
}

/// Counts what served the request at a step (outside the request
/// phase: the body and log phases), and logs an automatic rollback when
/// this request made one happen (or could not).
pub fn record(r: &ngx_http_request_t, zone: &str, step: &Step, what: Count) {
    let server = NgxServer(r);
    protocol(&server, zone, Legacy::Here, false).record(step, what);
}

/// Counts a step that could not decide, logs it within the budget of
/// failure lines, and returns its policy.
pub fn fail_step(r: &ngx_http_request_t, zone: &str, step: &Step, why: &str) -> FailurePolicy {
    let server = NgxServer(r);
    protocol(&server, zone, Legacy::Here, false).fail(step, why)
}

/// Who serves a later phase (response headers, response body, log) of
/// step `index` of zone `zone_index` for this request: decided once, by
/// the first to ask, and kept in the request's record. `None`: no record.
pub fn later_side(
    r: &ngx_http_request_t,
    zone_index: usize,
    zone: &str,
    index: usize,
    step: &Step,
    phase: Phase,
) -> Option<Side> {
    let ctx = ctx::existing(r)?;
    // Where the request's steps met no Lua, as its request phase: an
    // automatic rollback passed over, nothing left to a Lua handler.
    let legacy = if ctx.no_lua() {
        Legacy::None
    } else {
        Legacy::Here
    };
    let server = NgxServer(r);
    let p = protocol(&server, zone, legacy, false);
    let decide = || p.later_side(step, &crate::request::NgxRequest::new(r));
    Some(ctx.sides.decide(zone_index, index, phase, decide))
}

/// The Lua side asks who serves a later phase of a step (deciding it when
/// nobody has): the side, and the step is then taken when it is Lua's.
pub fn later_legacy_asks(
    r: &ngx_http_request_t,
    zone_index: usize,
    zone: &str,
    index: usize,
    step: &Step,
    phase: Phase,
) -> Option<Side> {
    later_side(r, zone_index, zone, index, step, phase)?;
    ctx::existing(r)?
        .sides
        .legacy_asks(zone_index, index, phase)
}

/// A later phase's Rust side could not serve: counted when it was serving,
/// logged (`Protocol::later_failed`).
pub fn later_failed(
    r: &ngx_http_request_t,
    zone: &str,
    step: &Step,
    phase: Phase,
    why: &str,
    serving: bool,
) {
    let server = NgxServer(r);
    protocol(&server, zone, Legacy::Here, false).later_failed(step, phase, why, serving);
}

/// A response-body rewriter failed on a slice of the body: counted,
/// logged, and the rest of the body passes as it is
/// (`Protocol::body_rewriter_failed`).
pub fn body_rewriter_failed(r: &ngx_http_request_t, zone: &str, step: &Step, why: &str) {
    let server = NgxServer(r);
    protocol(&server, zone, Legacy::Here, false).body_rewriter_failed(
        step,
        why,
        "the rest of the response body passes as it is",
    );
}

/// Counts and logs, once each, the steps of `phase` of the request's last
/// zone that were left to Lua and that no Lua handler took.
pub fn check_later_taken(r: &ngx_http_request_t, phase: Phase) {
    let Some(ctx) = ctx::existing(r) else {
        return;
    };
    if !ctx.sides.any_not_taken(phase) {
        return;
    }
    let config = ctx.config.clone();
    for (zone, index) in ctx.sides.not_taken(phase) {
        let Some((z, step)) = config
            .zones
            .get(zone)
            .and_then(|z| Some((z, z.steps.get(index)?)))
        else {
            continue;
        };
        let server = NgxServer(r);
        protocol(&server, &z.name, Legacy::Here, false).later_not_taken(step, phase);
    }
}

pub use graft_engine::log_budget::LogFamily;

/// The nginx log level of a family's lines.
fn level(family: LogFamily) -> ngx::ffi::ngx_uint_t {
    (match family {
        LogFamily::Failure => NGX_LOG_ERR,
        LogFamily::Decline => NGX_LOG_INFO,
        LogFamily::Decision | LogFamily::Diff | LogFamily::Budget => NGX_LOG_WARN,
    }) as ngx::ffi::ngx_uint_t
}

/// Writes one line of a family to the request's log, unless the family's
/// budget for this second is spent; the next line written says how many
/// were left out. The line is formatted only when it is written (callers
/// pass `format_args!`).
pub fn log_limited(r: &ngx_http_request_t, family: LogFamily, line: impl std::fmt::Display) {
    let now = u64::try_from(ngx_time()).unwrap_or(0);
    let Some(skipped) = graft_engine::log_budget::allow(family, now) else {
        return;
    };
    // SAFETY: a live request's connection and its log are valid.
    let log = unsafe { (*r.connection).log };
    let level = level(family);
    if skipped == 0 {
        ngx_log_error!(level, log, "{line}");
    } else {
        ngx_log_error!(
            level,
            log,
            "{line} ({skipped} more lines of this kind left out of the log)"
        );
    }
}
