//! headers: rules that set, add or remove request and response headers,
//! each under an optional condition.
//!
//! ```json
//! { "rules": [ { "when": <condition>,
//!                "request":  [ { "set": "X-Zone", "value": "eu" }, { "remove": "X-Debug" } ],
//!                "response": [ { "add": "Cache-Control", "value": "no-store" } ] } ] }
//! ```
//!
//! Names and values are checked at load: a CR, LF or NUL is refused there
//! and can never be written. The changes of every matching rule apply, in
//! order. The Lua legacy implementation is `lua/graft/legacy/headers.lua`.
#![forbid(unsafe_code)]

use graft_conditions::{Condition, Subject};
use graft_contract::{
    parse_config, Changes, ConfigError, Configured, Context, Decision, Factory, HeaderAction,
    HeaderName, HeaderOp, HeaderValue, Module, ModuleError, RequestView,
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
            rules.push(Rule {
                when,
                request: ops(&r.request, "request")?,
                response: ops(&r.response, "response")?,
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
        for rule in &self.rules {
            if rule.when.as_ref().is_none_or(|c| c.eval(&subject)) {
                changes.request_headers.extend(rule.request.iter().cloned());
                changes
                    .response_headers
                    .extend(rule.response.iter().cloned());
            }
        }
        Ok(Decision::Continue(changes))
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
        ];
        for (c, field) in cases {
            let e = Headers::from_config(&c).err().unwrap();
            assert_eq!(e.field, field, "{c}: {e}");
        }
    }
}
