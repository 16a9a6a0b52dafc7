//! graft-edge's request path, as Pingora's `ProxyHttp` phases:
//!
//! ```text
//! request_filter ── Graft-Edge removed ─ zone by Host ─ body (zone's max_bytes)
//!   │                 ─ steps in order (Protocol::step, FL1 ahead)
//!   ├─ a step answers ──────────────────────────────────► answer (Content-Length from the body)
//!   ├─ every step lets it through ─► upstream_peer: the zone's origin
//!   └─ a step FL1 must serve (mode, decline, error, panic)
//!       └─► upstream_peer: FL1, with `Graft-Edge: v=2; from=<step>; zone=<z>; ...; mac=<HMAC>`
//!             FL1 unreachable (fail_to_connect) ─► upstream_peer again: the steps
//!             from there run here with no legacy side: each one's failure policy
//!             serves what it cannot (an access control answers 503)
//! response_filter ── the response-header changes of the steps that ran,
//!   then (the origin's response) the start of the body phase
//! response_body_filter ── the body phase (html_rewrite), as it streams
//! ```
//!
//! graft-edge's own answers go through the header and body phases whole
//! ([`send_answer`]); FL1's come back as FL1 gave them (it ran both).
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use graft_contract::{HeaderOp, Response};
use graft_engine::log_budget::LogFamily;
use graft_engine::protocol::Legacy;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::subrequest::pipe::{pipe_subrequest, InputBody, InputBodyType};
use pingora_proxy::subrequest::{BodyMode, Ctx as SubrequestCtx};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

use crate::answer;
use crate::body::{self, Forward, Read};
use crate::request::{EdgeRequest, Facts};
use crate::response_body::{self, BodyPhase, Started};
use crate::state::{reason_index, Edge, Serving};
use crate::steps::{self, log_limited, Ended, Request};

/// graft-edge's `ProxyHttp`.
pub struct EdgeProxy {
    pub edge: Arc<Edge>,
}

/// Where a request goes once its steps are done with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Origin(SocketAddr),
    /// FL1, which runs the zone's steps from `from`; `fallback`: step
    /// `from`'s Rust side was asked here and did not decide (FL1 serves
    /// it from Lua without asking again).
    Fl1 {
        from: usize,
        fallback: bool,
    },
}

/// A request whose route is decided: what its later phases need (and a
/// subrequest that carries its body, [`Forward::Whole`]).
#[derive(Clone)]
pub struct Routed {
    pub snap: Arc<Serving>,
    pub zone: Option<usize>,
    pub facts: Facts,
    pub route: Route,
    pub response_ops: Vec<HeaderOp>,
    pub body: Option<Arc<[u8]>>,
}

/// One request's state across Pingora's phases.
pub struct Ctx {
    /// When its head was read (the access log's `time`).
    started: std::time::Instant,
    /// The step FL1 was to take it from, and why (the access log's).
    passed: Option<(usize, &'static str)>,
    /// Its zone, once found (the access log's and the log phase's,
    /// whoever answered).
    zone: Option<(Arc<Serving>, usize)>,
    /// What its steps made of it, when graft-edge answered it in the
    /// request phase (the log phase's view of it; a routed request's is
    /// in `routed`).
    answered: Option<Facts>,
    routed: Option<Routed>,
    /// Body bytes read before the proxy phase, to put in front of the
    /// next chunk ([`Forward::Prepend`]).
    prepend: Option<Bytes>,
    /// An answer a failure policy gave after the request's route was
    /// decided (FL1 unreachable), sent by `fail_to_proxy`.
    answer: Option<Response>,
    /// Why FL1 could not be reached, once it could not.
    fl1_down: Option<String>,
    /// The origin's response body, rewritten as it streams (a lock
    /// never contended: Pingora's context must be `Sync`).
    body: Option<std::sync::Mutex<BodyPhase>>,
}

impl EdgeProxy {
    fn peer(&self, addr: SocketAddr) -> Box<HttpPeer> {
        let t = &self.edge.settings.timeouts;
        let mut peer = HttpPeer::new(addr, false, String::new());
        peer.options.connection_timeout = Some(t.connect());
        peer.options.total_connection_timeout = Some(t.connect());
        peer.options.read_timeout = Some(t.read());
        peer.options.write_timeout = Some(t.write());
        peer.options.idle_timeout = Some(t.idle());
        Box::new(peer)
    }

    /// Counts a request passed to FL1 on step `step` of its zone, the one
    /// that sent it there, and logs it: FL1 takes it from that step, or
    /// (`whole`) from step 0, a response-body or log step keeping it
    /// there whole.
    fn count_pass(
        &self,
        snap: &Serving,
        zone: usize,
        step: usize,
        reason: &'static str,
        whole: bool,
    ) {
        let z = &snap.config.zones[zone];
        if let Some(keys) = snap.keys[zone].passed.get(step) {
            self.edge.add(keys[reason_index(reason)]);
        }
        let module = z.steps.get(step).map_or("", |s| s.module_name);
        let name = &z.name;
        if whole && step > 0 {
            log_limited(
                LogFamily::Decline,
                format_args!(
                    "graft-edge: zone \"{name}\": passed to FL1 whole from step 0, for step {step} (module \"{module}\"): {reason}"
                ),
            );
        } else {
            log_limited(
                LogFamily::Decline,
                format_args!(
                    "graft-edge: zone \"{name}\": passed to FL1 from step {step} (module \"{module}\"): {reason}"
                ),
            );
        }
    }

    /// Answers a request nginx refuses before any phase as nginx does:
    /// `status` and nginx's page, no step run, the connection closed;
    /// counted (`graft_edge_refused_total`) and logged with `why`.
    async fn refuse(&self, session: &mut Session, status: u16, why: &str) -> Result<()> {
        self.edge.refused(status);
        log_limited(
            LogFamily::Decision,
            format_args!("graft-edge: request refused ({status}): {why}"),
        );
        session.set_keepalive(None);
        let (head, body) = answer::render(&status_only(status))?;
        answer::write(session, head, body).await
    }

    /// FL1 cannot be reached for a request it was to serve from step
    /// `from`: that step's failure policy serves it, and the steps after
    /// it run here with no legacy side. `Some(answer)` when one answers,
    /// `None` when the request goes on to its origin.
    fn without_fl1(
        &self,
        session: &mut Session,
        routed: &mut Routed,
        zone: usize,
        from: usize,
        why: &str,
    ) -> Option<Response> {
        let snap = routed.snap.clone();
        let z = &snap.config.zones[zone];
        if let Some(step) = z.steps.get(from) {
            let p = steps::protocol(&z.name, Legacy::None);
            let why = format!(
                "FL1 ({}) cannot be reached ({why}), and FL1 was to serve it",
                self.edge.settings.fl1
            );
            if let Some(answer) = steps::policy(&p, step, &why) {
                return Some(answer);
            }
        }
        let req = Request {
            head: session.req_header_mut(),
            facts: &mut routed.facts,
            body: routed.body.as_deref(),
            response_ops: &mut routed.response_ops,
        };
        match steps::run(z, &self.edge.windows, req, from + 1, Legacy::None) {
            Ended::Answer(answer) => Some(answer),
            // With no legacy side every step decides, or its policy does.
            Ended::Through | Ended::Pass { .. } => {
                routed.route = Route::Origin(snap.origins[zone]);
                None
            }
        }
    }
}

/// Sends an answer graft-edge gives for a request of `zone` (its
/// configuration and index), its header finished as any response's
/// (`steps::finish_response`) and its body through the zone's body phase
/// (html_rewrite), as FL1 runs both on the pages its steps answer.
async fn send_answer(
    session: &mut Session,
    edge: &Edge,
    zone: Option<(&Arc<Serving>, usize)>,
    facts: Option<&Facts>,
    body: Option<&[u8]>,
    ops: &[HeaderOp],
    resp: &Response,
) -> Result<()> {
    let (mut head, mut bytes) = answer::render(resp)?;
    if let Some(facts) = facts {
        let req = EdgeRequest {
            head: session.req_header(),
            facts,
            body,
        };
        let z = zone.map(|(snap, z)| &snap.config.zones[z]);
        steps::finish_response(z, &edge.windows, &req, ops, &mut head);
        if let Some((snap, z)) = zone {
            match response_body::rewrite_answer(snap, z, &req, &mut head, bytes) {
                Ok(rewritten) => bytes = rewritten,
                // A body step that failed answers in this one's place.
                Err(answer) => (head, bytes) = answer::render(&answer)?,
            }
        }
    }
    answer::write(session, head, bytes).await
}

/// The request's own route, when it is a subrequest graft-edge made to
/// send a body it read whole.
fn planned(session: &Session) -> Option<Routed> {
    session
        .subrequest_ctx
        .as_ref()?
        .user_ctx()?
        .downcast_ref::<Routed>()
        .cloned()
}

/// Sends a request whose body graft-edge read whole, in a subrequest that
/// goes through these phases again with `routed` as its route.
async fn send_whole(session: &mut Session, routed: Routed, chunks: Vec<Bytes>) -> Result<bool> {
    let Some(spawner) = session.subrequest_spawner.as_ref() else {
        return Error::e_explain(
            ErrorType::InternalError,
            "no subrequest for a body read whole",
        );
    };
    let ctx = SubrequestCtx::builder()
        .user_ctx(Box::new(routed))
        .body_mode(BodyMode::ExpectBody)
        .build();
    let (prepared, handle) = spawner.create_subrequest(session.as_downstream(), ctx);
    match pipe_subrequest(
        session,
        prepared,
        handle,
        |task| Ok(Some(task)),
        InputBodyType::Preset(InputBody::Bytes(chunks)),
    )
    .await
    {
        Ok(_) => Ok(true),
        // The subrequest answered (an error page of its own) and failed:
        // the answer stands, the connection goes.
        Err(e) if e.state.header_received => {
            session.set_keepalive(None);
            Ok(true)
        }
        Err(e) => Err(e.error),
    }
}

#[async_trait]
impl ProxyHttp for EdgeProxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            started: std::time::Instant::now(),
            passed: None,
            zone: None,
            answered: None,
            routed: None,
            prepend: None,
            answer: None,
            fl1_down: None,
            body: None,
        }
    }

    /// The client's timeouts, from the settings: the next read of its body,
    /// the next write of the response, and (a kept-alive HTTP/1
    /// connection) the wait for its next request.
    async fn early_request_filter(&self, session: &mut Session, _ctx: &mut Ctx) -> Result<()> {
        let t = &self.edge.settings.timeouts;
        session.set_read_timeout(Some(t.client_body()));
        session.set_write_timeout(Some(t.client_send()));
        // A client that asked to close is not kept.
        if session.get_keepalive().is_some() {
            session.set_keepalive(Some(t.client_keepalive_secs()));
        }
        Ok(())
    }

    fn allow_spawning_subrequest(&self, session: &Session, _ctx: &Ctx) -> bool {
        session.subrequest_ctx.is_none()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        if let Some(routed) = planned(session) {
            ctx.routed = Some(routed);
            return Ok(false);
        }
        let limits = &self.edge.settings.limits;
        // The head as sent, only for a request Pingora may have taken a
        // Content-Length from (one with a Transfer-Encoding: rare).
        let raw = session
            .req_header()
            .headers
            .contains_key(http::header::TRANSFER_ENCODING)
            .then(|| {
                session
                    .as_downstream()
                    .as_http1()
                    .map(|h1| h1.get_headers_raw_bytes())
            })
            .flatten();
        if let Some((status, why)) = crate::request::refused_head(
            session.req_header(),
            raw.as_deref(),
            limits.max_line_bytes,
            limits.max_head_bytes,
        ) {
            self.refuse(session, status, why).await?;
            return Ok(true);
        }
        // Whatever a client says about FL1 is not heard: no step reads it,
        // and no origin or FL1 gets it.
        session
            .req_header_mut()
            .remove_header(graft_engine::edge::HEADER);
        let snap = self.edge.serving();
        let client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let mut facts = match Facts::of(session.req_header(), client) {
            Ok(f) => f,
            Err(bad) => {
                self.refuse(session, 400, bad.0).await?;
                return Ok(true);
            }
        };
        let Some(zone) = snap.config.zone_index(&facts.host) else {
            // No zone: nothing runs here, FL1 takes it as sent.
            self.edge.add(self.edge.unzoned.requests);
            ctx.routed = Some(Routed {
                snap,
                zone: None,
                facts,
                route: Route::Fl1 {
                    from: 0,
                    fallback: false,
                },
                response_ops: Vec::new(),
                body: None,
            });
            return Ok(false);
        };
        self.edge.add(snap.keys[zone].requests);
        ctx.zone = Some((snap.clone(), zone));
        let z = &snap.config.zones[zone];
        let first = EdgeRequest {
            head: session.req_header(),
            facts: &facts,
            body: None,
        };
        if let Some((step, reason)) = steps::passed_whole(z, &first) {
            // FL1 serves the first step (or a body step: see
            // `passed_whole`): it takes the whole request, before
            // graft-edge reads any of its body; counted on the step that
            // keeps it there.
            self.count_pass(&snap, zone, step, reason, true);
            ctx.passed = Some((0, reason));
            ctx.routed = Some(Routed {
                snap,
                zone: Some(zone),
                facts,
                route: Route::Fl1 {
                    from: 0,
                    fallback: false,
                },
                response_ops: Vec::new(),
                body: None,
            });
            return Ok(false);
        }
        let (read, forward) = body::read(session, z, &snap.config).await?;
        let body = match read {
            Read::Refuse(status) => {
                session.set_keepalive(None);
                let resp = status_only(status);
                let zone = Some((&snap, zone));
                send_answer(session, &self.edge, zone, Some(&facts), None, &[], &resp).await?;
                ctx.answered = Some(facts);
                return Ok(true);
            }
            Read::Body(b) => Some(b),
            Read::Nothing => None,
        };
        let mut response_ops = Vec::new();
        let req = Request {
            head: session.req_header_mut(),
            facts: &mut facts,
            body: body.as_deref(),
            response_ops: &mut response_ops,
        };
        let route = match steps::run(z, &self.edge.windows, req, 0, Legacy::Ahead) {
            Ended::Answer(resp) => {
                if !session.is_body_done() {
                    // The rest of a body nobody reads is not waited for.
                    session.set_keepalive(None);
                }
                let body = body.as_deref();
                send_answer(
                    session,
                    &self.edge,
                    Some((&snap, zone)),
                    Some(&facts),
                    body,
                    &response_ops,
                    &resp,
                )
                .await?;
                ctx.answered = Some(facts);
                return Ok(true);
            }
            Ended::Through => Route::Origin(snap.origins[zone]),
            Ended::Pass { from, reason } => {
                self.count_pass(&snap, zone, from, reason, false);
                ctx.passed = Some((from, reason));
                Route::Fl1 {
                    from,
                    fallback: matches!(reason, "decline" | "error" | "panic"),
                }
            }
        };
        let routed = Routed {
            snap,
            zone: Some(zone),
            facts,
            route,
            response_ops,
            body,
        };
        match forward {
            Forward::Replayed => {}
            Forward::Prepend(bytes) => ctx.prepend = Some(bytes),
            Forward::Whole(chunks) => {
                // The subrequest serves it; its route is this request's
                // too (the access log's and the log phase's).
                ctx.routed = Some(routed.clone());
                return send_whole(session, routed, chunks).await;
            }
        }
        ctx.routed = Some(routed);
        Ok(false)
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let Some(routed) = ctx.routed.as_mut() else {
            return Error::e_explain(ErrorType::InternalError, "a request with no route");
        };
        if let (Route::Fl1 { from, .. }, Some(why)) = (routed.route, ctx.fl1_down.as_deref()) {
            let Some(zone) = routed.zone else {
                // No zone, no step: nothing here can serve it.
                return Error::e_explain(ErrorType::HTTPStatus(502), "FL1 cannot be reached");
            };
            if let Some(answer) = self.without_fl1(session, routed, zone, from, why) {
                let status = answer.status;
                ctx.answer = Some(answer);
                return Error::e_explain(
                    ErrorType::HTTPStatus(status),
                    "FL1 cannot be reached: answered by a step's failure policy",
                );
            }
        }
        Ok(match routed.route {
            Route::Origin(addr) => self.peer(addr),
            Route::Fl1 { .. } => self.peer(self.edge.settings.fl1),
        })
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        upstream.remove_header(graft_engine::edge::HEADER);
        let Some(routed) = &ctx.routed else {
            return Ok(());
        };
        if let (Route::Fl1 { from, fallback }, Some(zone)) = (routed.route, routed.zone) {
            // Signed for this request as it goes to FL1 (its method and
            // target), now, and for the configuration that ran the steps.
            let handoff = graft_engine::edge::HandOff {
                zone: &routed.snap.config.zones[zone].name,
                from,
                fallback,
                config: &routed.snap.config.hash,
                time: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            };
            let target = upstream.uri.path_and_query().map_or("/", |p| p.as_str());
            let req = graft_engine::edge::Bound {
                method: upstream.method.as_str().as_bytes(),
                target: target.as_bytes(),
            };
            if let Some(value) =
                graft_engine::edge::header_value(&handoff, req, &self.edge.settings.fl1_key)
            {
                upstream.insert_header(graft_engine::edge::HEADER, value)?;
            }
        }
        // A request that came over TLS says so: graft-edge terminated it,
        // and what is behind it gets plain HTTP (a client's own copy of
        // the header is replaced).
        let over_tls = session
            .as_downstream()
            .digest()
            .is_some_and(|d| d.ssl_digest.is_some());
        if over_tls {
            upstream.insert_header("X-Forwarded-Proto", "https")?;
        }
        // FL1's modules (ip_access, rate_limit, a canary's share) and the
        // origin see the client's address, not graft-edge's: nginx's
        // realip module reads it from here (the last address).
        if let Some(ip) = routed.facts.client {
            let forwarded = match upstream
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
            {
                Some(earlier) => format!("{earlier}, {ip}"),
                None => ip.to_string(),
            };
            upstream.insert_header("X-Forwarded-For", forwarded)?;
        }
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(read) = ctx.prepend.take() {
            *body = Some(match body.take() {
                Some(rest) => {
                    let mut all = BytesMut::with_capacity(read.len() + rest.len());
                    all.extend_from_slice(&read);
                    all.extend_from_slice(&rest);
                    all.freeze()
                }
                None => read,
            });
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let Some(routed) = &ctx.routed else {
            return Ok(());
        };
        let started = match routed.route {
            // FL1 ran the response-header and body phases of the zone's
            // steps.
            Route::Fl1 { .. } => {
                steps::apply_to_response(upstream, &routed.response_ops);
                Started::Untouched
            }
            Route::Origin(_) => {
                let req = EdgeRequest {
                    head: session.req_header(),
                    facts: &routed.facts,
                    body: routed.body.as_deref(),
                };
                let zone = routed.zone.map(|z| &routed.snap.config.zones[z]);
                steps::finish_response(
                    zone,
                    &self.edge.windows,
                    &req,
                    &routed.response_ops,
                    upstream,
                );
                match routed.zone {
                    Some(z) => response_body::start(&routed.snap, z, &req, upstream),
                    None => Started::Untouched,
                }
            }
        };
        match started {
            Started::Untouched => {}
            Started::Rewrite(phase) => {
                if session.req_header().version == http::Version::HTTP_10 {
                    // No length and no chunks: the body ends with the
                    // connection.
                    session.set_keepalive(None);
                }
                ctx.body = Some(std::sync::Mutex::new(phase));
            }
            Started::Answer(answer) => {
                let status = answer.status;
                ctx.answer = Some(answer);
                return Error::e_explain(
                    ErrorType::HTTPStatus(status),
                    "a response-body step failed: answered by its failure policy",
                );
            }
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<std::time::Duration>> {
        let Some(phase) = ctx.body.as_mut() else {
            return Ok(None);
        };
        let phase = phase.get_mut().unwrap_or_else(|e| e.into_inner());
        let piece = body.take().unwrap_or_default();
        match phase.write(&piece, end_of_stream) {
            Ok(out) => *body = (!out.is_empty()).then(|| Bytes::from(out)),
            Err(why) => {
                // Cut: no last chunk, the connection closes.
                ctx.body = None;
                session.set_keepalive(None);
                return Error::e_explain(ErrorType::InternalError, why);
            }
        }
        if end_of_stream {
            ctx.body = None;
        }
        Ok(None)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let Some(routed) = &ctx.routed else {
            return e;
        };
        if matches!(routed.route, Route::Fl1 { .. }) && ctx.fl1_down.is_none() {
            ctx.fl1_down = Some(e.to_string());
            let key = routed.zone.map_or(self.edge.unzoned.fl1_unreachable, |z| {
                routed.snap.keys[z].fl1_unreachable
            });
            self.edge.add(key);
            log_limited(
                LogFamily::Failure,
                format_args!("graft-edge: FL1 ({peer}) cannot be reached: {e}"),
            );
            // Once more, with the route the failure policies give.
            e.set_retry(true);
        }
        e
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        if session.response_written().is_some() {
            // The response has started (its body failed on the way, or
            // was cut): nothing more can be said on it, and what was sent
            // must not end as if whole.
            return FailToProxy {
                error_code: session.response_written().map_or(0, |r| r.status.as_u16()),
                can_reuse_downstream: false,
            };
        }
        if let Some(resp) = ctx.answer.take() {
            let sent = match &ctx.routed {
                Some(r) => {
                    let zone = r.zone.map(|z| (&r.snap, z));
                    let body = r.body.as_deref();
                    send_answer(
                        session,
                        &self.edge,
                        zone,
                        Some(&r.facts),
                        body,
                        &r.response_ops,
                        &resp,
                    )
                    .await
                }
                None => send_answer(session, &self.edge, None, None, None, &[], &resp).await,
            };
            if let Err(e) = sent {
                tracing::error!("graft-edge: the failure policy's answer was not sent: {e}");
            }
            return FailToProxy {
                error_code: resp.status,
                can_reuse_downstream: false,
            };
        }
        // Pingora's own choice of status (its default `fail_to_proxy`),
        // but for timeouts, answered as nginx answers them: an origin or
        // FL1 too slow 504, a client's body that stopped coming 408.
        let timed_out = matches!(
            e.etype(),
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
        );
        // A client's body that is not HTTP (a bad chunk) 400, and none to a
        // client that went away.
        let code = match (e.etype(), e.esource()) {
            (ErrorType::HTTPStatus(code), _) => *code,
            (_, ErrorSource::Upstream) if timed_out => 504,
            (_, ErrorSource::Upstream) => 502,
            (ErrorType::ReadTimedout, _) => 408,
            (ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed, _) => 0,
            (ErrorType::InvalidHTTPHeader | ErrorType::H1Error, _) => 400,
            (ErrorType::Custom("InvalidChunk"), _) => 400,
            (_, ErrorSource::Downstream) => 400,
            (_, ErrorSource::Internal | ErrorSource::Unset) => 500,
        };
        if code > 0 {
            let sent = match answer::render(&status_only(code)) {
                Ok((head, body)) => answer::write(session, head, body).await,
                Err(e) => Err(e),
            };
            if let Err(e) = sent {
                tracing::error!("graft-edge: an error page was not sent: {e}");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        // A subrequest carrying a body read whole is its request's own
        // line and record, written by that request.
        if session.subrequest_ctx.is_some() {
            return;
        }
        // No response: the client went before one (nginx's 499), or one
        // could not be sent.
        let status = session
            .response_written()
            .map_or(if e.is_some() { 499 } else { 0 }, |r| r.status.as_u16());
        let routed = ctx.routed.as_ref();
        let served_by_fl1 = routed.is_some_and(|r| matches!(r.route, Route::Fl1 { .. }))
            && ctx.answer.is_none()
            && ctx.fl1_down.is_none();
        // FL1 ran the log phase of what it served.
        if let (Some((snap, z)), false) = (&ctx.zone, served_by_fl1) {
            let zone = &snap.config.zones[*z];
            let facts = routed.map(|r| &r.facts).or(ctx.answered.as_ref());
            if let Some(facts) = facts.filter(|_| zone.later.log) {
                let req = EdgeRequest {
                    head: session.req_header(),
                    facts,
                    body: routed.and_then(|r| r.body.as_deref()),
                };
                let head = session
                    .response_written()
                    .map_or(0, crate::log_phase::head_bytes);
                let done = graft_contract::Completed {
                    zone: &zone.name,
                    status,
                    bytes_sent: head + session.body_bytes_sent() as u64,
                    time: crate::state::now_secs(),
                };
                crate::log_phase::run(zone, &req, &done);
            }
        }
        let Some(log) = &self.edge.access_log else {
            return;
        };
        let head = session.req_header();
        let header = |name| {
            head.headers
                .get(name)
                .map(|v: &http::HeaderValue| v.as_bytes())
        };
        let entry = crate::access_log::Entry {
            client: session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip()),
            at: std::time::SystemTime::now(),
            method: head.method.as_str(),
            target: routed.map_or(head.raw_path(), |r| &r.facts.raw_uri),
            version: match head.version {
                http::Version::HTTP_10 => "HTTP/1.0",
                http::Version::HTTP_2 => "HTTP/2.0",
                _ => "HTTP/1.1",
            },
            status,
            body_bytes: session.body_bytes_sent(),
            referer: header(http::header::REFERER),
            user_agent: header(http::header::USER_AGENT),
            zone: ctx
                .zone
                .as_ref()
                .map(|(snap, z)| snap.config.zones[*z].name.as_str()),
            served_by_fl1,
            passed: ctx.passed,
            seconds: ctx.started.elapsed().as_secs_f64(),
        };
        log.write(entry.line());
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &Ctx, e: &Error) -> bool {
        // A failure policy's answer was counted and logged by the protocol.
        ctx.fl1_down.is_some() && matches!(e.etype(), ErrorType::HTTPStatus(_))
    }
}

/// An answer of a status alone (the server's page for it).
fn status_only(status: u16) -> Response {
    Response {
        status,
        headers: Vec::new(),
        body: Vec::new(),
        log: Vec::new(),
    }
}
