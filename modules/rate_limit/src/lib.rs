//! rate_limit: per-zone limits by key over fixed windows, counted across
//! every worker process (the context's windows, `ctx.windows`).
//!
//! ```json
//! { "limits": [ { "name": "api", "key": "client", "limit": 100, "window": 60,
//!                 "when": <condition>, "status": 429 },
//!               { "name": "tokens", "key": "header:X-Api-Key", "limit": 1000, "window": 3600 } ] }
//! ```
//!
//! Limits run in order; a limit whose condition does not hold, or whose key
//! header is absent, does not count the request. The first limit over its
//! count answers `status` (429) with `Retry-After`, the seconds left in the
//! window. The Lua legacy implementation (`lua/graft/legacy/rate_limit.lua`)
//! counts in a `lua_shared_dict`.
#![forbid(unsafe_code)]

use graft_conditions::{Condition, Subject};
use graft_contract::{
    parse_config, Changes, ConfigError, Configured, Context, Decision, Factory, FailurePolicy,
    HeaderName, HeaderValue, Module, ModuleError, RequestView, Response,
};
use serde::Deserialize;
use smallvec::SmallVec;

pub const NAME: &str = "rate_limit";
pub const MAX_LIMITS: usize = 64;
pub const MAX_WINDOW: u32 = 86_400;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    limits: Vec<LimitConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitConfig {
    name: String,
    key: String,
    limit: u64,
    window: u32,
    #[serde(default)]
    when: Option<serde_json::Value>,
    #[serde(default = "too_many")]
    status: u16,
}

fn too_many() -> u16 {
    429
}

enum Key {
    Client,
    Header(Vec<u8>),
}

struct Limit {
    name: String,
    key: Key,
    limit: u64,
    window: u32,
    when: Option<Condition>,
    status: u16,
}

pub struct RateLimit {
    limits: Vec<Limit>,
}

impl RateLimit {
    pub fn from_config(config: &serde_json::Value) -> Result<RateLimit, ConfigError> {
        let c: Config = parse_config(config)?;
        if c.limits.len() > MAX_LIMITS {
            return Err(ConfigError::new(
                "limits",
                format!("more than {MAX_LIMITS} limits"),
            ));
        }
        let mut limits = Vec::with_capacity(c.limits.len());
        for (i, l) in c.limits.into_iter().enumerate() {
            let at = format!("limits[{i}]");
            let key = match l.key.split_once(':') {
                None if l.key == "client" => Key::Client,
                Some(("header", h)) if HeaderName::new(h).is_ok() => {
                    Key::Header(h.as_bytes().to_vec())
                }
                _ => {
                    return Err(ConfigError::new(
                        format!("{at}.key"),
                        "is \"client\" or \"header:<name>\"",
                    ))
                }
            };
            if l.window == 0 || l.window > MAX_WINDOW {
                return Err(ConfigError::new(
                    format!("{at}.window"),
                    format!("seconds, from 1 to {MAX_WINDOW}"),
                ));
            }
            if l.limit == 0 || l.limit >= 1 << 20 {
                return Err(ConfigError::new(
                    format!("{at}.limit"),
                    "from 1 to 1048575 requests a window",
                ));
            }
            if !(400..=599).contains(&l.status) {
                return Err(ConfigError::new(
                    format!("{at}.status"),
                    "a 4xx or 5xx status",
                ));
            }
            let when = l
                .when
                .as_ref()
                .map(|w| Condition::parse(w).map_err(|e| e.within(&format!("{at}.when"))))
                .transpose()?;
            limits.push(Limit {
                name: l.name,
                key,
                limit: l.limit,
                window: l.window,
                when,
                status: l.status,
            });
        }
        Ok(RateLimit { limits })
    }
}

impl Module for RateLimit {
    /// A limit on a body field needs the zone to read bodies.
    fn wants_body(&self) -> bool {
        self.limits
            .iter()
            .any(|l| l.when.as_ref().is_some_and(|w| w.reads_body()))
    }

    fn on_request(&self, req: &dyn RequestView, ctx: &Context) -> Result<Decision, ModuleError> {
        let subject = Subject::new(req);
        // On the stack for a key of up to 128 bytes (a zone, a limit's
        // name, an address): no allocation a request.
        let mut key = SmallVec::<[u8; 128]>::new();
        for limit in &self.limits {
            if !limit.when.as_ref().is_none_or(|c| c.eval(&subject)) {
                continue;
            }
            key.clear();
            key.extend_from_slice(ctx.zone.as_bytes());
            key.push(0);
            key.extend_from_slice(limit.name.as_bytes());
            key.push(0);
            match &limit.key {
                // The address's own bytes after its family's tag, not its
                // text: no two clients, and no other kind of key, share one.
                Key::Client => match req.client_addr() {
                    Some(std::net::IpAddr::V4(ip)) => {
                        key.push(4);
                        key.extend_from_slice(&ip.octets());
                    }
                    Some(std::net::IpAddr::V6(ip)) => {
                        key.push(6);
                        key.extend_from_slice(&ip.octets());
                    }
                    None => continue,
                },
                Key::Header(name) => match req.header(name) {
                    Some(v) => key.extend_from_slice(v),
                    None => continue,
                },
            }
            let count = ctx.windows.incr(&key, limit.window, ctx.now_secs);
            if count > limit.limit {
                let retry = u64::from(limit.window) - ctx.now_secs % u64::from(limit.window);
                return Ok(Decision::Respond(Response {
                    status: limit.status,
                    headers: vec![(
                        HeaderName::new("Retry-After")?,
                        HeaderValue::new(retry.to_string())?,
                    )],
                    body: Vec::new(),
                    log: vec![format!("limit \"{}\" exceeded", limit.name)],
                }));
            }
        }
        Ok(Decision::Continue(Changes::default()))
    }
}

impl Configured for RateLimit {
    const NAME: &'static str = NAME;
    /// An access control: a request it cannot decide is not let through.
    const ON_FAILURE: FailurePolicy = FailurePolicy::CLOSED;

    fn configure(config: &serde_json::Value) -> Result<Self, ConfigError> {
        Self::from_config(config)
    }

    /// Regular expressions reach the Lua side in PCRE's reading of the
    /// same meaning (see `graft_conditions::pcre_pattern`).
    fn lua_config(config: &serde_json::Value) -> serde_json::Value {
        graft_conditions::lua_conditions_in(config, "limits")
    }
}

/// The registry's factory of this module.
pub static FACTORY: Factory<RateLimit> = Factory::new();

#[cfg(test)]
mod tests {
    use super::*;
    use graft_contract::{LocalWindows, OwnedRequest};
    use serde_json::json;

    #[test]
    fn answers_429_past_the_limit_until_the_window_ends() {
        let m = RateLimit::from_config(&json!({ "limits": [
            { "name": "api", "key": "client", "limit": 3, "window": 10,
              "when": { "field": "path", "op": "prefix", "value": "/api" } } ] }))
        .unwrap();
        let counters = LocalWindows::default();
        let mut req = OwnedRequest::get("a", "/api/x");
        req.client = Some("192.0.2.1".parse().unwrap());
        let at =
            |t: u64, req: &OwnedRequest| m.on_request(req, &Context::local(t, &counters)).unwrap();
        for _ in 0..3 {
            assert!(matches!(at(101, &req), Decision::Continue(_)));
        }
        let Decision::Respond(r) = at(104, &req) else {
            panic!("not limited")
        };
        assert_eq!(r.status, 429);
        assert_eq!(r.headers[0].1.as_bytes(), b"6");
        assert!(
            matches!(at(110, &req), Decision::Continue(_)),
            "a new window"
        );
        let other = OwnedRequest::get("a", "/www");
        for _ in 0..10 {
            assert!(matches!(at(111, &other), Decision::Continue(_)));
        }
    }

    #[test]
    fn refuses_bad_limits() {
        for (c, field) in [
            (
                json!({ "limits": [ { "name": "a", "key": "cookie", "limit": 1, "window": 1 } ] }),
                "limits[0].key",
            ),
            (
                json!({ "limits": [ { "name": "a", "key": "client", "limit": 1, "window": 0 } ] }),
                "limits[0].window",
            ),
            (
                json!({ "limits": [ { "name": "a", "key": "client", "limit": 0, "window": 1 } ] }),
                "limits[0].limit",
            ),
        ] {
            assert_eq!(RateLimit::from_config(&c).err().unwrap().field, field);
        }
    }
}
