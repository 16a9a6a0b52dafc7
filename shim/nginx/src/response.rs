//! The response-header phase (`Module::on_response`) of the steps Rust
//! serves, in graft's header filter: each step's header changes from the
//! response's status and headers as they are before they are sent (the
//! upstream's, a content handler's, an error page's).
//!
//! Which side serves a step is decided once a response, here: Rust runs
//! and applies its changes now; Lua's header filter (`graft.response`)
//! runs the steps Lua serves, and in `shadow` hands its changes to
//! `compare` beside Rust's. A step Lua serves that no Lua header filter
//! took is counted as failed at the log phase (`check_taken`). A failure
//! leaves the response's headers as they are, counted and logged: the
//! response has started, so no failure policy can answer it.
use std::ffi::c_int;

use graft_contract::{Context, HeaderOp, ResponseView};
use graft_engine::protocol::later::{Phase, Side};
use graft_engine::{run_response_phase, Count, Step, Zone};
use ngx::ffi::{ngx_http_request_t, ngx_time};

use crate::ctx;
use crate::headers::{response_header, response_header_value};
use crate::live::shared_windows;
use crate::request::NgxRequest;
use crate::steps::{check_later_taken, later_failed, later_side, log_limited, record, LogFamily};

/// The response as nginx holds it before its headers are written.
struct NgxResponse<'r>(&'r ngx_http_request_t);

impl ResponseView for NgxResponse<'_> {
    fn status(&self) -> u16 {
        crate::headers::response_status(self.0)
    }

    fn header(&self, name: &[u8]) -> Option<&[u8]> {
        response_header_value(self.0, name)
    }
}

/// The changes as both sides describe them, to compare: one
/// `action name: value` a change, joined by `; ` (`graft.response`
/// writes the same).
pub fn describe(ops: &[HeaderOp]) -> String {
    ops.iter()
        .map(|op| {
            let action = match op.action {
                graft_contract::HeaderAction::Set => "set",
                graft_contract::HeaderAction::Add => "add",
                graft_contract::HeaderAction::Remove => "remove",
            };
            format!(
                "{action} {}: {}",
                op.name.as_str(),
                String::from_utf8_lossy(op.value.as_bytes())
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Runs the response-header phase of the zone's steps that have one, in
/// graft's header filter (main responses only, once). `Err` when nginx
/// could not take a change (out of memory).
pub fn run(r: &mut ngx_http_request_t, zone_index: usize, zone: &Zone) -> Result<(), ()> {
    let Some(ctx) = ctx::existing(r) else {
        return Ok(());
    };
    if ctx.response_steps_decided {
        return Ok(());
    }
    ctx.response_steps_decided = true;
    for (i, step) in zone.steps.iter().enumerate() {
        if !step.module.edits_responses() {
            continue;
        }
        match later_side(r, zone_index, &zone.name, i, step, Phase::ResponseHeaders) {
            Some(Side::Rust) => {
                if let Some(ops) = rust_ops(r, zone, step, true) {
                    for op in &ops {
                        response_header(r, op.action, op.name.as_str(), op.value.as_bytes())
                            .ok_or(())?;
                    }
                }
            }
            Some(Side::Shadow) => {
                // Lua serves: a Rust failure is its error (counted by the
                // engine) and a difference, not a failure to serve.
                let rust = rust_ops(r, zone, step, false)
                    .map_or_else(|| "<failed>".to_string(), |ops| describe(&ops));
                if let Some(ctx) = ctx::existing(r) {
                    ctx.response_shadows.push((zone_index, i, rust));
                }
            }
            Some(Side::Legacy) | None => {}
        }
    }
    Ok(())
}

/// Step `step`'s Rust changes for this response, or `None` when its Rust
/// side failed (logged; counted as failed when Rust was to serve it,
/// `serving`).
fn rust_ops(
    r: &ngx_http_request_t,
    zone: &Zone,
    step: &Step,
    serving: bool,
) -> Option<Vec<HeaderOp>> {
    // Without the shared tables the module cannot be run: a failure like
    // any other, never a step skipped in silence.
    let outcome = match shared_windows() {
        Some(windows) => {
            let ctx = Context {
                zone: &zone.name,
                now_secs: u64::try_from(ngx_time()).unwrap_or(0),
                windows: &windows,
            };
            run_response_phase(step, &NgxRequest::new(r), &NgxResponse(r), &ctx)
        }
        None => Err("could not run: graft's shared tables are not mapped".to_string()),
    };
    match outcome {
        Ok(ops) => Some(ops),
        Err(why) => {
            later_failed(r, &zone.name, step, Phase::ResponseHeaders, &why, serving);
            None
        }
    }
}

/// The Lua side asks whether it serves step `step` for this response
/// (`true`: it then takes it); `None`: graft's header filter did not
/// decide the step (no response phase, a subrequest).
pub fn lua_serves(r: &ngx_http_request_t, zone: c_int, step: usize) -> Option<bool> {
    let zone = usize::try_from(zone).ok()?;
    let side = ctx::existing(r)?
        .sides
        .legacy_asks(zone, step, Phase::ResponseHeaders)?;
    Some(side.legacy_serves())
}

/// Mode `shadow`: compares the changes the Lua side made (described as
/// `describe` does) with Rust's, counting a difference and logging it
/// within the budget of difference lines.
pub fn compare(
    r: &ngx_http_request_t,
    zone: &Zone,
    zone_index: c_int,
    index: usize,
    step: &Step,
    lua: &[u8],
) {
    let Some(ctx) = ctx::existing(r) else {
        return;
    };
    let Ok(zone_index) = usize::try_from(zone_index) else {
        return;
    };
    let Some((_, _, rust)) = ctx
        .response_shadows
        .iter()
        .find(|(z, i, _)| (*z, *i) == (zone_index, index))
    else {
        return;
    };
    if rust.as_bytes() == lua {
        return;
    }
    let rust = rust.clone();
    record(r, &zone.name, step, Count::ShadowDiff);
    log_limited(
        r,
        LogFamily::Diff,
        format_args!(
            "graft: shadow diff: zone \"{}\" module \"{}\" response headers: lua {} | rust {}",
            zone.name,
            step.module_name,
            String::from_utf8_lossy(lua),
            rust
        ),
    );
}

/// At the log phase: a step Lua was to serve that no Lua header filter
/// took (the location runs no `graft.header_filter()`) is counted as
/// failed and logged: its changes were not made.
pub fn check_taken(r: &ngx_http_request_t) {
    check_later_taken(r, Phase::ResponseHeaders);
}
