//! graft-edge's side of the step protocol (`graft_engine::protocol`): the
//! server (its clock and its log), and a zone's steps run in order for one
//! request, each through `Protocol::step`, with FL1 as the legacy side
//! ahead (`Legacy::Ahead`: FL1 counts the steps it serves), or with no
//! legacy side at all when FL1 cannot be reached (`Legacy::None`: each
//! step's failure policy serves what it cannot).
use graft_contract::{
    Context, Decision, FailurePolicy, HeaderAction, HeaderOp, Response, ResponseView,
};
use graft_engine::log_budget::{self, LogFamily};
use graft_engine::protocol::later::{Phase, Side};
use graft_engine::protocol::{Legacy, Protocol, Served, Server};
use graft_engine::shared::WindowTable;
use graft_engine::{run_response_phase, Mode, Step, Zone};
use pingora_http::{RequestHeader, ResponseHeader};

use crate::request::{apply, EdgeRequest, Facts};
use crate::state::now_secs;

/// graft-edge as the server of the step protocol: the system clock, and
/// the process's log with each line family's budget (per thread: a
/// Pingora worker thread is an nginx worker's match).
pub struct EdgeServer;

impl Server for EdgeServer {
    fn now_secs(&self) -> u64 {
        now_secs()
    }

    fn log(&self, family: LogFamily, line: std::fmt::Arguments<'_>) {
        log_limited(family, line);
    }

    fn log_change(&self, line: std::fmt::Arguments<'_>) {
        tracing::warn!("{line}");
    }
}

/// Writes one line of `family` unless the family's budget for this second
/// is spent; the next line written says how many were left out.
pub fn log_limited(family: LogFamily, line: impl std::fmt::Display) {
    let Some(skipped) = log_budget::allow(family, now_secs()) else {
        return;
    };
    let more = if skipped == 0 {
        String::new()
    } else {
        format!(" ({skipped} more lines of this kind left out of the log)")
    };
    match family {
        LogFamily::Failure => tracing::error!("{line}{more}"),
        LogFamily::Decline => tracing::info!("{line}{more}"),
        LogFamily::Decision | LogFamily::Diff | LogFamily::Budget => {
            tracing::warn!("{line}{more}")
        }
    }
}

/// The protocol for one zone on graft-edge.
pub fn protocol<'a>(zone: &'a str, legacy: Legacy) -> Protocol<'a, EdgeServer> {
    Protocol {
        server: &EdgeServer,
        zone,
        legacy,
        // No Lua in a request graft-edge serves.
        native: true,
    }
}

/// How a zone's steps ended for a request.
#[derive(Debug)]
pub enum Ended {
    /// Every step let it through: on to the zone's origin.
    Through,
    /// A step (or its failure policy) answers.
    Answer(Response),
    /// FL1 takes it from step `from`, for `reason` (`state::REASONS`).
    Pass { from: usize, reason: &'static str },
}

/// A request and what its steps changed so far.
pub struct Request<'a> {
    pub head: &'a mut RequestHeader,
    pub facts: &'a mut Facts,
    pub body: Option<&'a [u8]>,
    /// Response-header changes of the steps that ran, for the response.
    pub response_ops: &'a mut Vec<HeaderOp>,
}

/// A response as Pingora holds it before its header is sent.
pub struct EdgeResponse<'a>(pub &'a ResponseHeader);

impl ResponseView for EdgeResponse<'_> {
    fn status(&self) -> u16 {
        self.0.status.as_u16()
    }

    fn header(&self, name: &[u8]) -> Option<&[u8]> {
        let name = std::str::from_utf8(name).ok()?;
        self.0.headers.get(name).map(|v| v.as_bytes())
    }
}

/// Finishes the header of a response graft-edge serves (its own answer,
/// or an origin's): the response-header changes the request phase of the
/// steps asked for (`ops`), then the response-header phase of the zone's
/// steps that have one (`Module::on_response`), in order, as nginx's
/// header filter does, each served by the side the step protocol's later
/// phases give (`Protocol::later_side`). A step whose phase fails, or that
/// graft-edge cannot serve for this request (not in `rust`: there is no
/// Lua here), leaves the headers as they are, counted as failed and
/// logged (`Protocol::later_failed`): the response has started, no
/// failure policy can answer it. (A response FL1 gives
/// gets `ops` alone: FL1 ran the response-header phase.)
pub fn finish_response(
    zone: Option<&Zone>,
    windows: &WindowTable<'static>,
    req: &EdgeRequest<'_>,
    ops: &[HeaderOp],
    resp: &mut ResponseHeader,
) {
    apply_to_response(resp, ops);
    let Some(zone) = zone.filter(|z| z.later.response_headers) else {
        return;
    };
    let p = protocol(&zone.name, Legacy::None);
    for step in zone.steps.iter().filter(|s| s.module.edits_responses()) {
        let why = if p.later_side(step, req) == Side::Rust {
            let ctx = Context {
                zone: &zone.name,
                now_secs: now_secs(),
                windows,
            };
            match run_response_phase(step, req, &EdgeResponse(resp), &ctx) {
                Ok(changes) => {
                    apply_to_response(resp, &changes);
                    continue;
                }
                Err(why) => why,
            }
        } else {
            "is not in rust for this request, and graft-edge runs no Lua".to_string()
        };
        p.later_failed(step, Phase::ResponseHeaders, &why, true);
    }
}

/// Applies header changes to a response. A change Pingora refuses is
/// logged and passed over (a decision's headers were checked when it was
/// made: this is a bug).
pub fn apply_to_response(resp: &mut ResponseHeader, ops: &[HeaderOp]) {
    for op in ops {
        let name = op.name.as_str().to_string();
        let done = match op.action {
            HeaderAction::Remove => {
                resp.remove_header(name.as_str());
                Ok(())
            }
            HeaderAction::Set => resp.insert_header(name.clone(), op.value.as_bytes()),
            HeaderAction::Add => resp
                .append_header(name.clone(), op.value.as_bytes())
                .map(|_| ()),
        };
        if let Err(e) = done {
            tracing::error!("graft-edge: the response header \"{name}\" was refused: {e}");
        }
    }
}

/// Why FL1 takes the whole request, before graft-edge reads any of its
/// body, and the step that keeps it there (its mode, a kill switch, a
/// canary's share: `mode`): the zone's first step is not graft-edge's for
/// this request, or one of its response-body or log steps is not: FL1
/// runs those phases for every request of the zone, its steps' answers
/// included, and graft-edge cannot give an answer FL1 would rewrite or
/// log. `None`: graft-edge runs the first step (or the zone has none).
pub fn passed_whole(zone: &Zone, req: &EdgeRequest<'_>) -> Option<(usize, &'static str)> {
    let first = zone.steps.first()?;
    if first.mode_for(req) != Mode::Rust {
        return Some((0, "mode"));
    }
    let p = protocol(&zone.name, Legacy::Ahead);
    zone.steps
        .iter()
        .position(|s| {
            (s.module.rewrites_bodies() || s.module.logs_requests())
                && p.later_side(s, req).legacy_serves()
        })
        .map(|i| (i, "mode"))
}

/// Runs the steps of `zone` from `from`, in order, through the protocol;
/// each step sees the changes of the ones before it.
pub fn run(
    zone: &Zone,
    windows: &WindowTable<'static>,
    req: Request<'_>,
    from: usize,
    legacy: Legacy,
) -> Ended {
    let p = protocol(&zone.name, legacy);
    for (i, step) in zone.steps.iter().enumerate().skip(from) {
        let view = EdgeRequest {
            head: req.head,
            facts: req.facts,
            body: req.body,
        };
        let decision = match p.step(step, &view, windows, false) {
            // Nothing to log or apply.
            Served::Decision(d) if d.is_unchanged() => continue,
            Served::Decision(d) => d.into_decision(),
            Served::HandOver(why) => {
                return Ended::Pass {
                    from: i,
                    reason: why.name(),
                }
            }
            // Only where the legacy side is here (nginx's Lua bridge).
            Served::Shadow(_) => {
                return Ended::Pass {
                    from: i,
                    reason: "mode",
                }
            }
        };
        match decision {
            Decision::Respond(resp) => {
                p.log_decision(step, &resp.log);
                return Ended::Answer(resp);
            }
            Decision::Continue(changes) => {
                p.log_decision(step, &changes.log);
                if let Err(e) = apply(req.head, req.facts, changes, req.response_ops) {
                    let why = format!("its decision could not be applied: {e}");
                    if let Some(answer) = policy(&p, step, &why) {
                        return Ended::Answer(answer);
                    }
                }
            }
            // The protocol gives a decline as a hand-over, never a decision.
            Decision::Decline => {
                return Ended::Pass {
                    from: i,
                    reason: "decline",
                }
            }
        }
    }
    Ended::Through
}

/// Counts and logs a step that could not decide, and gives its failure
/// policy's answer (`None`: the policy continues past it).
pub fn policy(p: &Protocol<'_, EdgeServer>, step: &Step, why: &str) -> Option<Response> {
    match p.fail(step, why) {
        FailurePolicy::Continue => None,
        FailurePolicy::Respond(_) => match step.failure_decision() {
            Decision::Respond(r) => Some(r),
            _ => None,
        },
    }
}
