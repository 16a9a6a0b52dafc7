//! graft-edge's admin listener, on loopback only (`admin_listen`), with
//! nginx's paths:
//!
//! - `GET /graft/metrics`, `GET /graft/status`, `GET /graft/counters`:
//!   what nginx serves on its loopback-only locations (Prometheus' scrape,
//!   the dashboard, which reads the counters' JSON);
//! - `/graft/admin/...`: nginx's admin API, under the same guard
//!   (`graft_engine::admin`: the token of `admin_token_file` as
//!   `Authorization: Bearer`, no browser's marks, a loopback `Host`; every
//!   refusal counted in `graft_admin_refused_total` and logged):
//!   `GET status` (the counters, as JSON), `GET metrics`, `GET totals`
//!   (what graft-agent's gates read), `POST kill?module=M[&zone=Z]` and
//!   `POST revive?...` (a kill switch sends the module's requests to FL1:
//!   they are FL1's in `mode`), `POST apply` (the graft file again, or the
//!   text sent as the body: `apply.rs`) and `POST fleet?name=value&...`
//!   (graft-agent's report, `graft_engine::fleet_report`), each answered with
//!   nginx's statuses and texts, so that graft-agent reads graft-edge as
//!   it reads nginx.
use std::sync::Arc;

use async_trait::async_trait;
use graft_engine::admin::{judge, Call};
use graft_engine::log_budget::LogFamily;
use graft_engine::Kill;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;

use crate::apply::MAX_LIVE_BYTES;
use crate::state::{now_secs, Edge};
use crate::steps::log_limited;

pub struct Admin {
    pub edge: Arc<Edge>,
}

const PROMETHEUS: &str = "text/plain; version=0.0.4";

/// nginx's dashboard page, the same one.
const DASHBOARD: &str = include_str!("../../nginx/status.html");

fn reply(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> http::Response<Vec<u8>> {
    let body = body.into();
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(body)
        .expect("a status and two valid headers")
}

fn text(status: u16, line: &str) -> http::Response<Vec<u8>> {
    reply(status, "text/plain", format!("{line}\n"))
}

impl Admin {
    /// The admin API's guard, as nginx's (`admin_auth::check`).
    fn refused(&self, session: &ServerSession) -> Option<http::Response<Vec<u8>>> {
        let head = session.req_header();
        // HeaderMap's names are lower case.
        let browser_headers = head
            .headers
            .keys()
            .any(|n| n == "origin" || n.as_str().starts_with("sec-fetch-"));
        let header = |name: &str| head.headers.get(name).map(|v| v.as_bytes());
        let call = Call {
            host: header("host"),
            browser_headers,
            content_type: header("content-type"),
            authorization: header("authorization"),
        };
        let token = self.edge.settings.admin_token.as_deref();
        let refusal = judge(token, &call).err()?;
        self.edge.serving().config.count_admin_refused(refusal);
        log_limited(
            LogFamily::Failure,
            format_args!("graft-edge: admin API: {}", refusal.why()),
        );
        let mut resp = text(refusal.status(), "refused (see the error log)");
        if refusal.status() == 401 {
            resp.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer realm=\"graft admin\""),
            );
        }
        Some(resp)
    }
}

/// The longest module or zone name the admin API takes (as nginx's).
const MAX_NAME: usize = 253;

impl Admin {
    /// Throws or resets a kill switch: `module=M`, and `zone=Z` for one
    /// zone (every zone without).
    fn switch(&self, session: &ServerSession, kill: Kill) -> http::Response<Vec<u8>> {
        let query = session.req_header().uri.query().unwrap_or_default();
        let (mut module, mut zone) = (None, None);
        for pair in query.split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let mut decoded = Vec::new();
            graft_contract::args::decode_component(value.as_bytes(), &mut decoded);
            let value = String::from_utf8_lossy(&decoded).into_owned();
            match name {
                "module" => module = Some(value),
                "zone" => zone = Some(value),
                _ => {}
            }
        }
        let module = module.unwrap_or_default();
        if module.is_empty()
            || module.len() > MAX_NAME
            || zone.as_ref().is_some_and(|z| z.len() > MAX_NAME)
        {
            return text(
                400,
                &format!("module=<name> [zone=<zone>], each at most {MAX_NAME} bytes"),
            );
        }
        let snap = self.edge.serving();
        let config = &snap.config;
        let zone = zone.filter(|z| !z.is_empty());
        match config.set_kill(zone.as_deref(), &module, kill) {
            Ok(()) => {
                let place = zone.map_or("every zone".to_string(), |z| format!("zone \"{z}\""));
                let what = if kill == Kill::Off { "reset" } else { "thrown" };
                tracing::warn!("graft-edge: kill switch of module \"{module}\" in {place} {what}");
                text(
                    200,
                    if kill == Kill::Off {
                        "revived"
                    } else {
                        "killed"
                    },
                )
            }
            Err(e) => text(400, &e.to_string()),
        }
    }
}

/// What a refused apply is answered with, before why (nginx's words,
/// which graft-agent takes off).
const REFUSED: &str = "refused, the running configuration goes on: ";

impl Admin {
    /// `POST apply`: with no body, the graft file again; with one, the
    /// configuration it holds, in the file's place (the file on disk is
    /// left alone). 200 `applied, generation N`; 400 and why, refused.
    async fn apply(&self, session: &mut ServerSession) -> http::Response<Vec<u8>> {
        let sent = match sent_text(session).await {
            Ok(sent) => sent,
            Err((status, why)) => {
                crate::apply::refused(&self.edge);
                tracing::error!(
                    "graft-edge: live configuration refused, the running one goes on: {why}"
                );
                return text(status, &format!("{REFUSED}{why}"));
            }
        };
        match crate::apply::apply(&self.edge, sent) {
            Ok(generation) => text(200, &format!("applied, generation {generation}")),
            Err(why) => text(400, &format!("{REFUSED}{why}")),
        }
    }

    /// `POST fleet?name=value&...`: the agent's report, for the metrics.
    fn fleet(&self, session: &ServerSession) -> http::Response<Vec<u8>> {
        let report = session.req_header().uri.query().unwrap_or_default();
        match self.edge.serving().config.fleet_report(report, now_secs()) {
            Ok(()) => text(200, "reported"),
            Err(why) => text(400, &why),
        }
    }
}

/// The configuration sent with an apply: `None` when the call has no
/// body (apply the file); an error when one cannot be read whole (never
/// the file in its place), with the status to answer.
async fn sent_text(session: &mut ServerSession) -> Result<Option<Vec<u8>>, (u16, String)> {
    let head = session.req_header();
    let length = head
        .headers
        .get(http::header::CONTENT_LENGTH)
        .map(|v| v.as_bytes());
    if matches!(length, None | Some(b"0"))
        && !head.headers.contains_key(http::header::TRANSFER_ENCODING)
    {
        return Ok(None);
    }
    let over = || {
        (
            413,
            format!("the configuration sent is over {MAX_LIVE_BYTES} bytes, the most a live apply takes"),
        )
    };
    let declared = length
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_LIVE_BYTES as u64) {
        return Err(over());
    }
    let mut text = Vec::with_capacity(declared.map_or(0, |n| n as usize));
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if text.len() + chunk.len() > MAX_LIVE_BYTES {
                    return Err(over());
                }
                text.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(Some(text)),
            Err(e) => {
                return Err((
                    400,
                    format!("the configuration sent could not be read: {e}"),
                ))
            }
        }
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> http::Response<Vec<u8>> {
        let head = session.req_header();
        let get = head.method == http::Method::GET;
        let path = head.uri.path().to_string();
        let config = self.edge.serving().config.clone();
        match (path.as_str(), get) {
            ("/graft/metrics", true) => {
                return reply(200, PROMETHEUS, crate::metrics::text(&self.edge))
            }
            ("/graft/status", true) => return reply(200, "text/html", DASHBOARD),
            ("/graft/counters", true) => {
                return reply(200, "application/json", config.counters_json(now_secs()))
            }
            _ => {}
        }
        let Some(action) = path.strip_prefix("/graft/admin/") else {
            return text(404, "not found");
        };
        if let Some(refused) = self.refused(session) {
            return refused;
        }
        match (action, get) {
            ("status", true) => reply(200, "application/json", config.counters_json(now_secs())),
            ("metrics", true) => reply(200, PROMETHEUS, crate::metrics::text(&self.edge)),
            ("totals", true) => reply(200, PROMETHEUS, graft_engine::metrics::totals_text(&config)),
            ("status" | "metrics" | "totals", false) => text(405, "use GET"),
            ("kill" | "revive" | "apply" | "fleet", true) => {
                text(405, &format!("use POST for {action}"))
            }
            ("kill", false) => self.switch(session, Kill::Manual),
            ("revive", false) => self.switch(session, Kill::Off),
            ("apply", false) => self.apply(session).await,
            ("fleet", false) => self.fleet(session),
            _ => text(404, "no such admin action"),
        }
    }
}
