//! `probe`: a module for graft's own tests of modes and fallback, with a Lua
//! twin in `lua/testing/graft/legacy/probe.lua` (test-only Lua lives under `lua/testing/`, which no package installs).
//!
//! It answers 200 with the body `rust <path>` and the header
//! `X-Graft-Impl: rust` (the Lua twin says `lua`), or with `continue` lets
//! the request go on with the request header `X-Probe: rust` (`lua`),
//! except on paths that start with one of its configured prefixes: there
//! it declines, returns an error, or panics; the Lua twin throws on
//! `lua_error_on`, answers no decision on `lua_bad_on`, and refuses to be
//! built with `lua_refuse`. On paths under `slow_on` its Rust side takes
//! `slow_us` microseconds first (a call over a time budget). With
//! `response_header` it has a response-header phase too, which sets
//! `X-Probe-Response: rust` (`lua`). Shadow mode always sees a difference between
//! the two.
#![forbid(unsafe_code)]

use graft_contract::{
    parse_config, ConfigError, Configured, Context, Decision, Factory, HeaderAction, HeaderName,
    HeaderOp, HeaderValue, Module, ModuleError, RequestView, Response, ResponseView,
};
use serde::Deserialize;

pub const NAME: &str = "probe";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    #[serde(default)]
    decline_on: Option<String>,
    #[serde(default)]
    error_on: Option<String>,
    #[serde(default)]
    panic_on: Option<String>,
    /// Takes `slow_us` microseconds (2000 by default) on these paths, then
    /// answers as usual: a call over a time budget.
    #[serde(default)]
    slow_on: Option<String>,
    #[serde(default = "default_slow_us")]
    slow_us: u64,
    /// Answer exactly this (status, headers, body) instead, on both sides:
    /// for tests of how an answer goes on the wire.
    #[serde(default)]
    answer: Option<Answer>,
    /// Continue (with `X-Probe: rust`) instead of answering.
    #[serde(default, rename = "continue")]
    go_on: bool,
    /// A response-header phase: every main response gets
    /// `X-Probe-Response: rust` (`lua` from the Lua twin).
    #[serde(default)]
    response_header: bool,
    /// The Lua twin's failures (the Rust side accepts and ignores them).
    #[serde(default)]
    #[allow(dead_code)]
    lua_error_on: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    lua_bad_on: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    lua_refuse: bool,
}

/// An answer the probe gives as it is configured, on both sides.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    status: u16,
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default)]
    body: String,
}

fn default_slow_us() -> u64 {
    2000
}

fn starts_with(path: &[u8], prefix: &Option<String>) -> bool {
    prefix
        .as_deref()
        .is_some_and(|p| path.starts_with(p.as_bytes()))
}

impl Module for Probe {
    fn edits_responses(&self) -> bool {
        self.response_header
    }

    fn on_response(
        &self,
        _req: &dyn RequestView,
        _resp: &dyn ResponseView,
        _ctx: &Context,
    ) -> Result<Vec<HeaderOp>, ModuleError> {
        if !self.response_header {
            return Ok(Vec::new());
        }
        Ok(vec![HeaderOp {
            action: HeaderAction::Set,
            name: HeaderName::new("X-Probe-Response")?,
            value: HeaderValue::new("rust")?,
        }])
    }

    fn on_request(&self, req: &dyn RequestView, _ctx: &Context) -> Result<Decision, ModuleError> {
        let path = req.path();
        if starts_with(path, &self.panic_on) {
            panic!("probe panics on {}", String::from_utf8_lossy(path));
        }
        if starts_with(path, &self.slow_on) {
            std::thread::sleep(std::time::Duration::from_micros(self.slow_us));
        }
        if starts_with(path, &self.error_on) {
            return Err(ModuleError::new("probe fails on this path"));
        }
        if starts_with(path, &self.decline_on) {
            return Ok(Decision::Decline);
        }
        if let Some(answer) = &self.answer {
            let mut headers = Vec::with_capacity(answer.headers.len());
            for (name, value) in &answer.headers {
                headers.push((HeaderName::new(name)?, HeaderValue::new(value.as_str())?));
            }
            return Ok(Decision::Respond(Response {
                status: answer.status,
                headers,
                body: answer.body.as_bytes().to_vec(),
                log: Vec::new(),
            }));
        }
        if self.go_on {
            return Ok(Decision::Continue(graft_contract::Changes {
                request_headers: vec![HeaderOp {
                    action: HeaderAction::Set,
                    name: HeaderName::new("X-Probe")?,
                    value: HeaderValue::new("rust")?,
                }],
                ..Default::default()
            }));
        }
        Ok(Decision::Respond(Response {
            status: 200,
            headers: vec![
                (HeaderName::new("X-Graft-Impl")?, HeaderValue::new("rust")?),
                (
                    HeaderName::new("Content-Type")?,
                    HeaderValue::new("text/plain")?,
                ),
            ],
            body: [b"rust ".as_slice(), path, b"\n"].concat(),
            log: Vec::new(),
        }))
    }
}

impl Configured for Probe {
    const NAME: &'static str = NAME;

    fn configure(config: &serde_json::Value) -> Result<Self, ConfigError> {
        parse_config::<Probe>(config)
    }
}

/// The registry's factory of this module.
pub static FACTORY: Factory<Probe> = Factory::new();
