//! The response-body phase in graft-edge (html_rewrite, and any module
//! with `Module::on_response_body`), over the engine's rewriters
//! (`graft_engine::body_phase`, the ones nginx's body filter feeds): an
//! origin's response as it streams through Pingora's
//! `response_body_filter`, and the answers graft-edge's own steps make
//! (whole, in memory). A response FL1 gives comes back as FL1 gave it:
//! FL1 ran the phase.
//!
//! Which side serves a body step was decided at request time: a step not
//! in `rust` for the request sent it to FL1 before any byte of the
//! response (`steps::run`). One that stopped being Rust's since (a kill
//! switch thrown meanwhile) fails here.
//!
//! A rewritten body changes length: `Content-Length` goes, and with it the
//! validators (`ETag`, `Last-Modified`), as nginx's filter drops them; the
//! body streams chunked to an HTTP/1.1 client, and to an HTTP/1.0 one ends
//! with the connection. HEAD, 204 and 304 carry no body: nothing runs.
//!
//! A step that fails (an error, a panic, a bound passed) is counted
//! (`failed`) and logged, and its failure policy decides. `continue`: the
//! rest of the body passes it as it is, as in nginx. `respond`: before a
//! byte of the response is sent (the step fails to start, or on an answer
//! of graft-edge's own, whole in memory), the policy answers; once it has
//! started, it cannot, and the response is cut: the connection closes with
//! no last chunk, and the client sees a response that is not whole, never
//! one that looks whole.
use std::sync::Arc;

use bytes::Bytes;
use graft_contract::{FailurePolicy, Response, ResponseHead};
use graft_engine::body_phase::{Failed, Rewriters};
use graft_engine::protocol::later::Side;
use graft_engine::protocol::Legacy;
use graft_engine::Zone;
use pingora_http::ResponseHeader;

use crate::request::EdgeRequest;
use crate::state::Serving;
use crate::steps;

/// One response's body phase, while it streams.
pub struct BodyPhase {
    snap: Arc<Serving>,
    zone: usize,
    rewriters: Rewriters,
}

/// What the body phase makes of a response, from its header.
pub enum Started {
    /// Nothing to rewrite: the body passes as it is.
    Untouched,
    /// Rewritten as it streams (the header is changed for it).
    Rewrite(BodyPhase),
    /// A step failed before any byte was sent, and its failure policy
    /// answers in the response's place.
    Answer(Response),
}

/// Whether a response carries no body to rewrite.
fn no_body(req: &EdgeRequest<'_>, head: &ResponseHeader) -> bool {
    req.head.method == http::Method::HEAD
        || matches!(head.status.as_u16(), 204 | 304)
        || head.status.is_informational()
}

/// Starts the body phase of `zone`'s steps for a response with `head`
/// (its header phase done), and changes the header for a body that will
/// be rewritten.
pub fn start(
    snap: &Arc<Serving>,
    zone: usize,
    req: &EdgeRequest<'_>,
    head: &mut ResponseHeader,
) -> Started {
    let z = &snap.config.zones[zone];
    if no_body(req, head) || !z.later.response_body {
        return Started::Untouched;
    }
    let header = |name: &str| head.headers.get(name).map(|v| v.as_bytes());
    let view = ResponseHead {
        status: head.status.as_u16(),
        content_type: header("content-type"),
        content_encoding: header("content-encoding"),
    };
    let mut failed = Vec::new();
    let rewriters = Rewriters::start(z, &view, |step| serves(z, step, req), &mut failed);
    if let Some(answer) = fail(z, failed, false) {
        return Started::Answer(answer);
    }
    if rewriters.is_empty() {
        return Started::Untouched;
    }
    will_rewrite(req, head);
    Started::Rewrite(BodyPhase {
        snap: snap.clone(),
        zone,
        rewriters,
    })
}

/// Whether Rust serves a body step for this response, as the step
/// protocol's later phases decide (`Protocol::later_side`): there is no
/// Lua here.
fn serves(zone: &Zone, step: &graft_engine::Step, req: &EdgeRequest<'_>) -> Result<(), String> {
    if steps::protocol(&zone.name, Legacy::None).later_side(step, req) == Side::Rust {
        Ok(())
    } else {
        Err("is not in rust for this response any more (a kill switch, a rollback), and graft-edge runs no Lua".into())
    }
}

/// A response whose body is rewritten: its length and validators no
/// longer hold; it streams chunked (to HTTP/1.1; HTTP/2 frames it
/// itself), or to HTTP/1.0 up to the connection's close.
fn will_rewrite(req: &EdgeRequest<'_>, head: &mut ResponseHeader) {
    for name in [
        http::header::CONTENT_LENGTH,
        http::header::ETAG,
        http::header::LAST_MODIFIED,
        http::header::TRANSFER_ENCODING,
    ] {
        head.remove_header(&name);
    }
    if req.head.version != http::Version::HTTP_10 {
        // Cannot fail: a constant name and value.
        let _ = head.insert_header(http::header::TRANSFER_ENCODING, "chunked");
    }
}

impl BodyPhase {
    /// The next piece of the body, rewritten (`last`: the body's end).
    /// `Err`: a step whose policy answers failed, and the response, which
    /// has started, is to be cut.
    pub fn write(&mut self, piece: &[u8], last: bool) -> Result<Vec<u8>, String> {
        let z = &self.snap.config.zones[self.zone];
        let mut failed = Vec::new();
        let out = self.rewriters.write(z, piece, last, &mut failed);
        match fail(z, failed, true) {
            Some(answer) => Err(format!(
                "a response-body step of zone \"{}\" failed, and its failure policy answers {}: the response had started",
                z.name, answer.status
            )),
            None => Ok(out),
        }
    }
}

/// Counts and logs each failed step; the first answer a failure policy
/// gives, if any. `started`: the response's header was sent.
fn fail(zone: &Zone, failed: Vec<Failed>, started: bool) -> Option<Response> {
    let p = steps::protocol(&zone.name, Legacy::None);
    let mut answer = None;
    for Failed { step: i, why } in failed {
        let Some(step) = zone.steps.get(i) else {
            continue;
        };
        let what = match (step.on_failure, started) {
            (FailurePolicy::Continue, _) => {
                "the rest of the response body passes as it is".to_string()
            }
            (FailurePolicy::Respond(status), true) => format!(
                "its failure policy answers {status}, but the response has started: the response is cut"
            ),
            (FailurePolicy::Respond(status), false) => {
                format!("its failure policy answers {status}")
            }
        };
        p.body_rewriter_failed(step, &why, &what);
        if answer.is_none() {
            if let FailurePolicy::Respond(_) = step.on_failure {
                if let graft_contract::Decision::Respond(r) = step.failure_decision() {
                    answer = Some(r);
                }
            }
        }
    }
    answer
}

/// An answer of graft-edge's own (a step's, a failure policy's, a refused
/// body's), its header finished: its body rewritten whole, with the
/// length it now has. `Err`: a step whose policy answers failed, and its
/// answer goes in this one's place, as it is.
pub fn rewrite_answer(
    snap: &Arc<Serving>,
    zone: usize,
    req: &EdgeRequest<'_>,
    head: &mut ResponseHeader,
    body: Bytes,
) -> Result<Bytes, Response> {
    let mut phase = match start(snap, zone, req, head) {
        Started::Untouched => return Ok(body),
        Started::Answer(answer) => return Err(answer),
        Started::Rewrite(phase) => phase,
    };
    let z = &snap.config.zones[zone];
    let mut failed = Vec::new();
    let out = phase.rewriters.write(z, &body, true, &mut failed);
    if let Some(answer) = fail(z, failed, false) {
        return Err(answer);
    }
    // Whole in memory: its length is known.
    head.remove_header(&http::header::TRANSFER_ENCODING);
    let _ = head.set_content_length(out.len());
    Ok(Bytes::from(out))
}
