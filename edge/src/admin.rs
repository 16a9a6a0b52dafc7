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
//!   they are FL1's in `mode`). `apply` and `fleet` are nginx's only, for
//!   now: answered 501.
use std::sync::Arc;

use async_trait::async_trait;
use graft_engine::admin::{judge, Call};
use graft_engine::log_budget::LogFamily;
use graft_engine::Kill;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;

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
        self.edge.snapshot.config.count_admin_refused(refusal);
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
        let config = &self.edge.snapshot.config;
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

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> http::Response<Vec<u8>> {
        let head = session.req_header();
        let get = head.method == http::Method::GET;
        let path = head.uri.path().to_string();
        let config = self.edge.snapshot.config.clone();
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
            ("kill" | "revive", true) => text(405, "use POST"),
            ("kill", false) => self.switch(session, Kill::Manual),
            ("revive", false) => self.switch(session, Kill::Off),
            ("apply" | "fleet", _) => text(
                501,
                "graft-edge does not take this admin call yet: restart it with the new file",
            ),
            _ => text(404, "no such admin action"),
        }
    }
}
