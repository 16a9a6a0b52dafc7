//! What a step does around its Rust side, whoever runs the pipeline (the
//! Lua bridge, `bridge.rs`, or the native phases, `native.rs`): run it
//! (timing one call in `GRAFT_SAMPLE_EVERY`), count what served, apply the
//! failure policy, and write per-request lines within their budgets.
use std::cell::RefCell;
use std::ffi::c_int;

use graft_contract::{Context, FailurePolicy};
use graft_engine::log_budget::LogBudget;
use graft_engine::{run_request_phase, Count, Impl, Outcome, Step};
use ngx::ffi::{ngx_http_request_t, ngx_time, NGX_LOG_ERR, NGX_LOG_INFO, NGX_LOG_WARN};
use ngx::ngx_log_error;

use crate::request::{body_prefix, has_body, BodyRead, NgxRequest};

thread_local! {
    static SAMPLE: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// One call in this many has its latency measured (on either side).
pub const GRAFT_SAMPLE_EVERY: c_int = 32;

/// Runs a step's Rust side, timing one call in `GRAFT_SAMPLE_EVERY` for
/// the latency metrics, and every call of a step with a time budget: a
/// call over it is counted and logged within the budget of its line
/// family, and may roll the step back (`Step::check_budget`).
pub fn run_sampled(
    r: &ngx_http_request_t,
    zone: &str,
    step: &Step,
    req: &NgxRequest,
    ctx: &Context,
) -> Outcome {
    let n = SAMPLE.with(|s| {
        let n = s.get().wrapping_add(1);
        s.set(n);
        n
    });
    let sampled = n.is_multiple_of(GRAFT_SAMPLE_EVERY.unsigned_abs());
    if !sampled && step.budget.is_none() {
        return run_request_phase(step, req, ctx);
    }
    let started = std::time::Instant::now();
    let outcome = run_request_phase(step, req, ctx);
    let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    if sampled {
        step.counters.observe(Impl::Rust, nanos);
    }
    if let Some(over) = step.check_budget(nanos, ctx.now_secs) {
        let module = step.module_name;
        log_limited(
            r,
            LogFamily::Budget,
            format_args!(
                "graft: zone \"{zone}\" module \"{module}\" took {} µs, over its time budget of {} µs",
                nanos / 1000,
                over.budget_us
            ),
        );
        if let Some(result) = over.rollback {
            log_state_change(r, zone, module, result);
        }
    }
    outcome
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

/// Logs a Rust outcome that is not a decision, within its family's
/// budget: a decline at info level, an error or a panic at error level.
/// The lines of a decision are the serving side's to log (the Lua bridge,
/// or the native pipeline).
pub fn log_outcome(r: &ngx_http_request_t, zone: &str, module: &str, outcome: &Outcome) {
    let (family, what) = match outcome {
        Outcome::Decided(_) => return,
        Outcome::Declined => (LogFamily::Decline, "declined".to_string()),
        Outcome::Failed(e) => (LogFamily::Failure, format!("failed: {e}")),
        Outcome::Panicked(e) => (LogFamily::Failure, format!("panicked: {e}")),
    };
    log_limited(
        r,
        family,
        format_args!("graft: zone \"{zone}\" module \"{module}\" {what}"),
    );
}

/// Logs the lines a decision carries (why a request was blocked or
/// limited), within the budget of decision lines.
pub fn log_decision_lines(r: &ngx_http_request_t, zone: &str, module: &str, lines: &[String]) {
    for line in lines {
        log_limited(
            r,
            LogFamily::Decision,
            format_args!("graft: zone \"{zone}\" module \"{module}\": {line}"),
        );
    }
}

/// Counts what served the request at a step, and logs an automatic
/// rollback when this request made one happen (or could not).
pub fn record(r: &ngx_http_request_t, zone: &str, step: &Step, what: Count) {
    let now = u64::try_from(ngx_time()).unwrap_or(0);
    if let Some(result) = step.record(what, now) {
        log_state_change(r, zone, step.module_name, result);
    }
}

/// Logs a step's automatic rollback (`Ok`: once, outside any budget), or
/// why its kill switch could not be thrown (`Err`: tried again on every
/// bad request while it fails, so within the budget of failure lines).
fn log_state_change(
    r: &ngx_http_request_t,
    zone: &str,
    module: &str,
    result: Result<String, String>,
) {
    match result {
        // Once per rollback: a change of state, outside any budget.
        Ok(line) => {
            // SAFETY: a live request's connection and its log are valid.
            let log = unsafe { (*r.connection).log };
            ngx_log_error!(
                NGX_LOG_WARN,
                log,
                "graft: zone \"{zone}\" module \"{module}\" {line}"
            );
        }
        // Tried again on every bad request while it fails: budgeted.
        Err(line) => log_limited(
            r,
            LogFamily::Failure,
            format_args!("graft: zone \"{zone}\" module \"{module}\" {line}"),
        ),
    }
}

/// Counts a step that could not decide, logs it within the budget of
/// failure lines, and returns its policy.
pub fn fail_step(r: &ngx_http_request_t, zone: &str, step: &Step, why: &str) -> FailurePolicy {
    record(r, zone, step, Count::Failed);
    let policy = step.on_failure;
    let serves = match policy {
        FailurePolicy::Continue => "continues past it".to_string(),
        FailurePolicy::Respond(status) => format!("answers {status}"),
    };
    log_limited(
        r,
        LogFamily::Failure,
        format_args!(
            "graft: zone \"{zone}\" module \"{}\" could not decide: {why}; its failure policy {serves}",
            step.module_name
        ),
    );
    policy
}

/// The per-request log line families, each with its own budget a second
/// in each worker (`GRAFT_LOG_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFamily {
    /// Lines a decision carries (a block, a limit): warn.
    Decision = 0,
    /// A step that could not decide, a Rust error or panic: error.
    Failure = 1,
    /// A shadow difference: warn.
    Diff = 2,
    /// A Rust side that declined: info.
    Decline = 3,
    /// A Rust call over its step's time budget: warn.
    Budget = 4,
}

/// Lines a second each family may write, per worker.
pub const LOG_LINES_PER_SECOND: u32 = 10;

impl LogFamily {
    pub const ALL: [LogFamily; 5] = [
        LogFamily::Decision,
        LogFamily::Failure,
        LogFamily::Diff,
        LogFamily::Decline,
        LogFamily::Budget,
    ];

    fn level(self) -> ngx::ffi::ngx_uint_t {
        (match self {
            LogFamily::Failure => NGX_LOG_ERR,
            LogFamily::Decline => NGX_LOG_INFO,
            LogFamily::Decision | LogFamily::Diff | LogFamily::Budget => NGX_LOG_WARN,
        }) as ngx::ffi::ngx_uint_t
    }
}

thread_local! {
    static BUDGETS: RefCell<[LogBudget; LogFamily::ALL.len()]> = const {
        RefCell::new([const { LogBudget::new(LOG_LINES_PER_SECOND) }; LogFamily::ALL.len()])
    };
}

/// Writes one line of a family to the request's log, unless the family's
/// budget for this second is spent; the next line written says how many
/// were left out. The line is formatted only when it is written (callers
/// pass `format_args!`).
pub fn log_limited(r: &ngx_http_request_t, family: LogFamily, line: impl std::fmt::Display) {
    let now = u64::try_from(ngx_time()).unwrap_or(0);
    let Some(skipped) = BUDGETS.with_borrow_mut(|b| b[family as usize].allow(now)) else {
        return;
    };
    // SAFETY: a live request's connection and its log are valid.
    let log = unsafe { (*r.connection).log };
    let level = family.level();
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
