//! headers: rules that set, add or remove request and response headers,
//! each under an optional condition.
//!
//! ```json
//! { "rules": [ { "when": <condition>,
//!                "request":  [ { "set": "X-Zone", "value": "eu" }, { "remove": "X-Debug" } ],
//!                "response": [ { "add": "Cache-Control", "value": "no-store" } ] } ] }
//! ```
//!
//! A rule with `on_response` acts on the response instead, once its
//! status and headers are known (the upstream's, an error page's): its
//! `response` changes apply when the response has one of its `status`
//! codes (any, without the list), lacks the header `lacks` names and has
//! the one `has` names:
//!
//! ```json
//! { "on_response": { "lacks": "Vary" },
//!   "response": [ { "set": "Vary", "value": "Origin" } ] }
//! { "when": <condition>, "on_response": { "status": [401, 403] },
//!   "response": [ { "set": "Access-Control-Allow-Origin", "value": "*" } ] }
//! { "on_response": {}, "response": [ { "remove": "X-Powered-By" } ] }
//! ```
//!
//! Names and values are checked at load: a CR, LF or NUL is refused there
//! and can never be written. The changes of every matching rule apply, in
//! order. The Lua legacy implementation is `lua/graft/legacy/headers.lua`.
#![forbid(unsafe_code)]

use graft_conditions::{Condition, Subject};
use graft_contract::{
    parse_config, Changes, ConfigError, Configured, Context, Decision, Factory, HeaderAction,
    HeaderName, HeaderOp, HeaderValue, Module, ModuleError, RequestView, ResponseView,
};
use serde::Deserialize;

pub const NAME: &str = "headers";
pub const MAX_RULES: usize = 1_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    rules: Vec<RuleConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleConfig {
    #[serde(default)]
    when: Option<serde_json::Value>,
    #[serde(default)]
    request: Vec<OpConfig>,
    #[serde(default)]
    response: Vec<OpConfig>,
    #[serde(default)]
    on_response: Option<OnResponseConfig>,
}

/// When a rule on the response applies.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OnResponseConfig {
    #[serde(default)]
    status: Vec<u16>,
    #[serde(default)]
    lacks: Option<String>,
    #[serde(default)]
    has: Option<String>,
}

/// A rule on the response, checked: statuses (any when empty), a header
/// it must lack, one it must have.
struct OnResponse {
    status: Vec<u16>,
    lacks: Option<HeaderName>,
    has: Option<HeaderName>,
}

impl OnResponse {
    fn parse(c: &OnResponseConfig) -> Result<OnResponse, ConfigError> {
        if let Some(s) = c.status.iter().find(|s| !(100..=599).contains(*s)) {
            return Err(ConfigError::new(
                "status",
                format!("{s} is not a status from 100 to 599"),
            ));
        }
        let name = |field: &str, n: &Option<String>| {
            n.as_deref()
                .map(|n| HeaderName::new(n).map_err(|e| ConfigError::new(field, e.to_string())))
                .transpose()
        };
        Ok(OnResponse {
            status: c.status.clone(),
            lacks: name("lacks", &c.lacks)?,
            has: name("has", &c.has)?,
        })
    }

    fn matches(&self, resp: &dyn ResponseView) -> bool {
        (self.status.is_empty() || self.status.contains(&resp.status()))
            && self
                .lacks
                .as_ref()
                .is_none_or(|n| resp.header(n.as_str().as_bytes()).is_none())
            && self
                .has
                .as_ref()
                .is_none_or(|n| resp.header(n.as_str().as_bytes()).is_some())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpConfig {
    #[serde(default)]
    set: Option<String>,
    #[serde(default)]
    add: Option<String>,
    #[serde(default)]
    remove: Option<String>,
    #[serde(default)]
    value: Option<String>,
}

fn op(c: &OpConfig) -> Result<HeaderOp, ConfigError> {
    let (action, name) = match (&c.set, &c.add, &c.remove) {
        (Some(n), None, None) => (HeaderAction::Set, n),
        (None, Some(n), None) => (HeaderAction::Add, n),
        (None, None, Some(n)) => (HeaderAction::Remove, n),
        _ => {
            return Err(ConfigError::new(
                "",
                "one of set, add or remove, with the header's name",
            ))
        }
    };
    let name_key = match action {
        HeaderAction::Set => "set",
        HeaderAction::Add => "add",
        HeaderAction::Remove => "remove",
    };
    let name = HeaderName::new(name).map_err(|e| ConfigError::new(name_key, e.to_string()))?;
    let value = match (action, &c.value) {
        (HeaderAction::Remove, None) => HeaderValue::new("").expect("empty is a value"),
        (HeaderAction::Remove, Some(_)) => {
            return Err(ConfigError::new("value", "remove takes no value"))
        }
        (_, None) => return Err(ConfigError::new("value", "missing")),
        (_, Some(v)) => {
            HeaderValue::new(v.as_bytes()).map_err(|e| ConfigError::new("value", e.to_string()))?
        }
    };
    Ok(HeaderOp {
        action,
        name,
        value,
    })
}

struct Rule {
    when: Option<Condition>,
    request: Vec<HeaderOp>,
    response: Vec<HeaderOp>,
    /// A rule on the response: its `response` changes apply in the
    /// response-header phase, not with the request's.
    on_response: Option<OnResponse>,
}

pub struct Headers {
    rules: Vec<Rule>,
}

impl Headers {
    pub fn from_config(config: &serde_json::Value) -> Result<Headers, ConfigError> {
        let c: Config = parse_config(config)?;
        if c.rules.len() > MAX_RULES {
            return Err(ConfigError::new(
                "rules",
                format!("{} rules, over the limit of {MAX_RULES}", c.rules.len()),
            ));
        }
        let mut rules = Vec::with_capacity(c.rules.len());
        for (i, r) in c.rules.iter().enumerate() {
            let at = format!("rules[{i}]");
            let when = r
                .when
                .as_ref()
                .map(|w| Condition::parse(w).map_err(|e| e.within(&format!("{at}.when"))))
                .transpose()?;
            let ops = |list: &[OpConfig], key: &str| {
                list.iter()
                    .enumerate()
                    .map(|(j, o)| op(o).map_err(|e| e.within(&format!("{at}.{key}[{j}]"))))
                    .collect::<Result<Vec<_>, _>>()
            };
            let on_response = r
                .on_response
                .as_ref()
                .map(|o| OnResponse::parse(o).map_err(|e| e.within(&format!("{at}.on_response"))))
                .transpose()?;
            if on_response.is_some() && !r.request.is_empty() {
                return Err(ConfigError::new(
                    format!("{at}.request"),
                    "a rule on the response changes response headers only",
                ));
            }
            rules.push(Rule {
                when,
                request: ops(&r.request, "request")?,
                response: ops(&r.response, "response")?,
                on_response,
            });
        }
        Ok(Headers { rules })
    }
}

impl Module for Headers {
    /// A rule on a body field needs the zone to read bodies.
    fn wants_body(&self) -> bool {
        self.rules
            .iter()
            .any(|r| r.when.as_ref().is_some_and(|w| w.reads_body()))
    }

    fn on_request(&self, req: &dyn RequestView, _ctx: &Context) -> Result<Decision, ModuleError> {
        let subject = Subject::new(req);
        let mut changes = Changes::default();
        for rule in self.rules.iter().filter(|r| r.on_response.is_none()) {
            if rule.when.as_ref().is_none_or(|c| c.eval(&subject)) {
                changes.request_headers.extend(rule.request.iter().cloned());
                changes
                    .response_headers
                    .extend(rule.response.iter().cloned());
            }
        }
        Ok(Decision::Continue(changes))
    }

    fn on_response(
        &self,
        req: &dyn RequestView,
        resp: &dyn ResponseView,
        _ctx: &Context,
    ) -> Result<Vec<HeaderOp>, ModuleError> {
        let subject = Subject::new(req);
        let mut ops = Vec::new();
        for rule in &self.rules {
            let Some(on) = &rule.on_response else {
                continue;
            };
            if on.matches(resp) && rule.when.as_ref().is_none_or(|c| c.eval(&subject)) {
                ops.extend(rule.response.iter().cloned());
            }
        }
        Ok(ops)
    }

    fn edits_responses(&self) -> bool {
        self.rules.iter().any(|r| r.on_response.is_some())
    }
}

impl Configured for Headers {
    const NAME: &'static str = NAME;

    fn configure(config: &serde_json::Value) -> Result<Self, ConfigError> {
        Self::from_config(config)
    }

    /// Regular expressions reach the Lua side in PCRE's reading of the
    /// same meaning (see `graft_conditions::pcre_pattern`).
    fn lua_config(config: &serde_json::Value) -> serde_json::Value {
        graft_conditions::lua_conditions_in(config, "rules")
    }
}

/// The registry's factory of this module.
pub static FACTORY: Factory<Headers> = Factory::new();

#[cfg(test)]
mod tests {
    use super::*;
    use graft_contract::{LocalWindows, OwnedRequest};
    use serde_json::json;

    #[test]
    fn matching_rules_apply_in_order() {
        let h = Headers::from_config(&json!({ "rules": [
            { "request": [ { "set": "X-Edge", "value": "graft" } ] },
            { "when": { "field": "path", "op": "prefix", "value": "/api" },
              "request": [ { "remove": "Cookie" } ],
              "response": [ { "add": "Cache-Control", "value": "no-store" } ] },
        ]}))
        .unwrap();
        let counters = LocalWindows::default();
        let ctx = Context::local(0, &counters);
        let Decision::Continue(c) = h
            .on_request(&OwnedRequest::get("a", "/api/x"), &ctx)
            .unwrap()
        else {
            panic!()
        };
        let names: Vec<_> = c
            .request_headers
            .iter()
            .map(|o| (o.action, o.name.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                (HeaderAction::Set, "X-Edge"),
                (HeaderAction::Remove, "Cookie")
            ]
        );
        assert_eq!(c.response_headers[0].value.as_bytes(), b"no-store");
        let Decision::Continue(c) = h.on_request(&OwnedRequest::get("a", "/www"), &ctx).unwrap()
        else {
            panic!()
        };
        assert_eq!(c.request_headers.len(), 1);
        assert!(c.response_headers.is_empty());
    }

    #[test]
    fn rules_on_the_response_read_its_status_and_headers() {
        use graft_contract::OwnedResponse;
        let h = Headers::from_config(&json!({ "rules": [
            { "on_response": { "lacks": "Vary" },
              "response": [ { "set": "Vary", "value": "Origin" } ] },
            { "when": { "field": "path", "op": "prefix", "value": "/api" },
              "on_response": { "status": [401, 403] },
              "response": [ { "set": "Access-Control-Allow-Origin", "value": "*" } ] },
            { "on_response": { "has": "X-Powered-By" },
              "response": [ { "remove": "X-Powered-By" } ] },
        ]}))
        .unwrap();
        assert!(h.edits_responses());
        let windows = LocalWindows::default();
        let ctx = Context::local(0, &windows);
        let names = |path: &str, resp: &OwnedResponse| -> Vec<String> {
            h.on_response(&OwnedRequest::get("a", path), resp, &ctx)
                .unwrap()
                .iter()
                .map(|o| format!("{:?} {}", o.action, o.name.as_str()))
                .collect()
        };
        let plain = OwnedResponse::new(200, &[]);
        assert_eq!(names("/api/x", &plain), ["Set Vary"]);
        let denied = OwnedResponse::new(401, &[("vary", "Accept"), ("X-Powered-By", "php")]);
        assert_eq!(
            names("/api/x", &denied),
            ["Set Access-Control-Allow-Origin", "Remove X-Powered-By"]
        );
        assert!(names("/www", &denied) == ["Remove X-Powered-By"]);
        // Rules on the response change nothing in the request phase.
        let Decision::Continue(c) = h
            .on_request(&OwnedRequest::get("a", "/api/x"), &ctx)
            .unwrap()
        else {
            panic!()
        };
        assert!(c.is_empty());
    }

    #[test]
    fn refuses_line_breaks_and_bad_ops() {
        let cases = [
            (
                json!({ "rules": [ { "response": [ { "set": "X-A", "value": "a\r\nSet-Cookie: x" } ] } ] }),
                "rules[0].response[0].value",
            ),
            (
                json!({ "rules": [ { "request": [ { "set": "X A", "value": "1" } ] } ] }),
                "rules[0].request[0].set",
            ),
            (
                json!({ "rules": [ { "request": [ { "set": "X-A", "add": "X-B", "value": "1" } ] } ] }),
                "rules[0].request[0]",
            ),
            (
                json!({ "rules": [ { "request": [ { "remove": "X-A", "value": "1" } ] } ] }),
                "rules[0].request[0].value",
            ),
            (
                json!({ "rules": [ { "request": [ { "add": "X-A" } ] } ] }),
                "rules[0].request[0].value",
            ),
            (
                json!({ "rules": [ { "on_response": { "status": [99] }, "response": [] } ] }),
                "rules[0].on_response.status",
            ),
            (
                json!({ "rules": [ { "on_response": { "lacks": "X A" }, "response": [] } ] }),
                "rules[0].on_response.lacks",
            ),
            (
                json!({ "rules": [ { "on_response": {}, "request": [ { "remove": "X-A" } ] } ] }),
                "rules[0].request",
            ),
        ];
        for (c, field) in cases {
            let e = Headers::from_config(&c).err().unwrap();
            assert_eq!(e.field, field, "{c}: {e}");
        }
    }
}
