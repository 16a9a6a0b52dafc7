//! WAF: per-zone custom rules, then signature lists.
//!
//! ```json
//! { "rules": [ { "id": "no-admin", "when": <condition>, "action": "block", "status": 403 },
//!              { "id": "office", "when": <condition>, "action": "allow" },
//!              { "id": "curl", "when": <condition>, "action": "log" } ],
//!   "signatures": [ "sql_injection", "path_traversal", "script_injection" ],
//!   "signature_action": "block", "signature_status": 403,
//!   "inspect_body": true,
//!   "decompress": { "max_bytes": 1048576, "max_ratio": 100 } }
//! ```
//!
//! Rules run in order: `block` answers with its status, `allow` lets the
//! request through and skips the rest (signatures included), `log` writes a
//! line and goes on. Then each signature list, in order, is matched against
//! the decoded path and the name and value of every query argument, however
//! many there are, and with `inspect_body` the name and value of every
//! argument of a form body, every string of a JSON body, and the bytes of
//! any other body (multipart, text, no `Content-Type`), as far as the zone
//! reads it (`graft_contract::body`). Rules read bodies through the
//! conditions' body fields (`body`, `body_args`, `body_arg:<name>`,
//! `json`).
//!
//! A body with a `Content-Encoding` is undecidable (the step fails, its
//! failure policy answers) unless the WAF has `decompress`: then a body in
//! one coding graft decodes (gzip, deflate, br) is decoded within
//! `max_bytes` out and `max_ratio` out per byte in
//! (`graft_contract::body::decode`; past them, or corrupt, cut short,
//! stacked or unknown codings: undecidable), the rules read the decoded
//! body, and the signatures match both the decoded body (its bytes, form
//! arguments or JSON strings) and the bytes as sent.
//!
//! Conditions are `graft-conditions`; the lists are
//! `signatures.json`, regular expressions in the subset PCRE and Rust's
//! linear-time engine read alike (`graft_conditions::check_portable`, as
//! for every regex), compiled once at load. The Lua side is handed each
//! pattern with `$` as PCRE's `\z` (`graft_conditions::pcre_pattern`).
//!
//! The Lua legacy implementation is `lua/graft/legacy/waf.lua`.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use graft_conditions::{
    compile_regex, lua_conditions_in, pcre_pattern, Condition, EqualsIndex, Subject,
};
use graft_contract::body::{self, decode};
use graft_contract::{
    parse_config, Changes, ConfigError, Configured, Context, Decision, Factory, FailurePolicy,
    HeaderVisitor, Module, ModuleError, RequestView, Response,
};
use serde::Deserialize;
use signatures::{Signatures, Targets};

mod signatures;

pub const NAME: &str = "waf";
pub const MAX_RULES: usize = 10_000;
const SIGNATURES_JSON: &str = include_str!("../signatures.json");

/// The built-in signature lists, by name.
pub fn signature_lists() -> &'static HashMap<String, Vec<String>> {
    static LISTS: OnceLock<HashMap<String, Vec<String>>> = OnceLock::new();
    LISTS.get_or_init(|| serde_json::from_str(SIGNATURES_JSON).expect("signatures.json is valid"))
}

/// The built-in lists as the Lua side's PCRE reads them ([`pcre_pattern`]),
/// translated once per process, not once per zone.
fn lua_signature_lists() -> &'static HashMap<String, Vec<String>> {
    static LISTS: OnceLock<HashMap<String, Vec<String>>> = OnceLock::new();
    LISTS.get_or_init(|| {
        signature_lists()
            .iter()
            .map(|(name, list)| (name.clone(), list.iter().map(|p| pcre_pattern(p)).collect()))
            .collect()
    })
}

/// Every pattern of the named lists, each compiled alone (so that a refused
/// one is named), and the index of the list it belongs to.
fn signature_patterns<'a>(
    names: &[String],
    lists: &'a HashMap<String, Vec<String>>,
) -> Result<(Vec<&'a str>, Vec<usize>), ConfigError> {
    let mut patterns = Vec::new();
    let mut pattern_list = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let at = || format!("signatures[{i}]");
        let list = lists.get(name).ok_or_else(|| {
            let mut known: Vec<_> = lists.keys().map(String::as_str).collect();
            known.sort_unstable();
            ConfigError::new(
                at(),
                format!("unknown list \"{name}\"; known: {}", known.join(", ")),
            )
        })?;
        for (j, p) in list.iter().enumerate() {
            compile_regex(p).map_err(|e| {
                ConfigError::new(at(), format!("list \"{name}\", pattern {j}: {e}"))
            })?;
            patterns.push(p.as_str());
            pattern_list.push(i);
        }
    }
    Ok((patterns, pattern_list))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    rules: Vec<RuleConfig>,
    #[serde(default)]
    signatures: Vec<String>,
    #[serde(default = "block")]
    signature_action: Action,
    #[serde(default = "forbidden")]
    signature_status: u16,
    /// Signatures are also matched against form and JSON bodies.
    #[serde(default)]
    inspect_body: bool,
    /// Compressed bodies are decoded within these limits (else undecidable).
    #[serde(default)]
    decompress: Option<decode::Limits>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleConfig {
    id: String,
    when: serde_json::Value,
    action: Action,
    #[serde(default = "forbidden")]
    status: u16,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
enum Action {
    Block,
    Allow,
    Log,
}

fn block() -> Action {
    Action::Block
}

fn forbidden() -> u16 {
    403
}

struct Rule {
    id: String,
    when: Condition,
    action: Action,
    status: u16,
}

/// A run of consecutive rules that each test one field for equality with
/// a value (rules `first..end`), answered together by one lookup per value
/// of that field.
struct Fold {
    first: usize,
    end: usize,
    index: EqualsIndex,
}

/// Runs shorter than this are tested rule by rule.
const FOLD_FROM: usize = 4;

/// The runs of at least [`FOLD_FROM`] same-field `equals` rules, in order.
/// A WAF with none keeps an empty list: no memory per zone for this.
fn folds(rules: &[Rule]) -> Vec<Fold> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < rules.len() {
        let Some((field, _)) = rules[i].when.equals_test() else {
            i += 1;
            continue;
        };
        let end = (i..rules.len())
            .find(|&j| rules[j].when.equals_test().is_none_or(|(f, _)| f != field))
            .unwrap_or(rules.len());
        if end - i >= FOLD_FROM {
            let mut index = EqualsIndex::new(field);
            for (j, rule) in rules.iter().enumerate().take(end).skip(i) {
                let (_, value) = rule.when.equals_test().expect("in the run");
                index.insert(value, j);
            }
            out.push(Fold {
                first: i,
                end,
                index,
            });
        }
        i = end;
    }
    out.shrink_to_fit();
    out
}

pub struct Waf {
    rules: Vec<Rule>,
    folds: Vec<Fold>,
    /// Every pattern of every enabled list, and the list each belongs to.
    signatures: Option<Arc<Signatures>>,
    pattern_list: Vec<usize>,
    list_names: Vec<String>,
    signature_action: Action,
    signature_status: u16,
    inspect_body: bool,
    /// Whether any rule or the signatures read the body.
    wants_body: bool,
    decompress: Option<decode::Limits>,
}

fn check_status(status: u16, field: &str) -> Result<(), ConfigError> {
    if (400..=599).contains(&status) {
        Ok(())
    } else {
        Err(ConfigError::new(
            field,
            format!("{status} is not a 4xx or 5xx status"),
        ))
    }
}

impl Waf {
    pub fn from_config(config: &serde_json::Value) -> Result<Waf, ConfigError> {
        let config: Config = parse_config(config)?;
        if config.rules.len() > MAX_RULES {
            return Err(ConfigError::new(
                "rules",
                format!(
                    "{} rules, over the limit of {MAX_RULES}",
                    config.rules.len()
                ),
            ));
        }
        let mut rules = Vec::with_capacity(config.rules.len());
        for (i, rc) in config.rules.into_iter().enumerate() {
            let at = format!("rules[{i}]");
            let when = Condition::parse(&rc.when).map_err(|e| e.within(&format!("{at}.when")))?;
            check_status(rc.status, &format!("{at}.status"))?;
            rules.push(Rule {
                id: rc.id,
                when,
                action: rc.action,
                status: rc.status,
            });
        }
        check_status(config.signature_status, "signature_status")?;
        if config.signature_action == Action::Allow {
            return Err(ConfigError::new("signature_action", "is block or log"));
        }
        let (patterns, pattern_list) = signature_patterns(&config.signatures, signature_lists())?;
        let signatures = if patterns.is_empty() {
            None
        } else {
            Some(signature_set(&config.signatures, &patterns)?)
        };
        let wants_body = rules.iter().any(|r| r.when.reads_body())
            || (config.inspect_body && !config.signatures.is_empty());
        if let Some(limits) = &config.decompress {
            limits.check().map_err(|e| e.within("decompress"))?;
            if !wants_body {
                return Err(ConfigError::new(
                    "decompress",
                    "this WAF reads no body to decode: set inspect_body (with signatures) or a rule on a body field",
                ));
            }
        }
        Ok(Waf {
            decompress: config.decompress,
            inspect_body: config.inspect_body,
            wants_body,
            folds: folds(&rules),
            rules,
            signatures,
            pattern_list,
            list_names: config.signatures,
            signature_action: config.signature_action,
            signature_status: config.signature_status,
        })
    }

    /// The first enabled list (in configuration order) that any target
    /// matches; `sent`, the body's bytes as sent when the subject's are
    /// their decoding.
    fn signature_hit(&self, subject: &Subject, sent: Option<&[u8]>) -> Option<usize> {
        let set = self.signatures.as_ref()?;
        let mut targets = Targets::default();
        targets.push(subject.req.path());
        for (name, value) in subject.args() {
            targets.push(name);
            targets.push(value);
        }
        if self.inspect_body {
            for (name, value) in subject.body_args() {
                targets.push(name);
                targets.push(value);
            }
            subject.json_strings().for_each(|s| targets.push(s));
            // And the bytes themselves, whatever the Content-Type says:
            // a backend that reads a JSON or form body more leniently than
            // graft's decoders still never gets a payload graft's
            // signatures did not see.
            if let Some(raw) = subject.req.body() {
                targets.push_apart(raw);
            }
            if let Some(sent) = sent {
                targets.push_apart(sent);
            }
        }
        let mut first: Option<usize> = None;
        set.matches(&targets, |p| {
            let list = self.pattern_list[p];
            first = Some(first.map_or(list, |f| f.min(list)));
        });
        first
    }

    /// Why the request's body is undecidable, or its decoding (`None`: it
    /// is read as sent).
    fn read_body(&self, req: &dyn RequestView, raw: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let Some(limits) = self.decompress else {
            return body::undecidable(req).map_or(Ok(None), Err);
        };
        if let Some(why) = body::undecidable_type(req) {
            return Err(why);
        }
        decode::decode(&decode::content_encoding(req), raw, limits)
    }
}

/// The request with its body decoded: what the rules and signatures read.
struct Decoded<'a> {
    req: &'a dyn RequestView,
    body: &'a [u8],
}

impl RequestView for Decoded<'_> {
    fn method(&self) -> &[u8] {
        self.req.method()
    }
    fn path(&self) -> &[u8] {
        self.req.path()
    }
    fn raw_uri(&self) -> &[u8] {
        self.req.raw_uri()
    }
    fn query(&self) -> Option<&[u8]> {
        self.req.query()
    }
    fn host(&self) -> &[u8] {
        self.req.host()
    }
    fn header(&self, name: &[u8]) -> Option<&[u8]> {
        self.req.header(name)
    }
    fn for_each_header(&self, f: &mut HeaderVisitor<'_>) {
        self.req.for_each_header(f)
    }
    fn client_addr(&self) -> Option<std::net::IpAddr> {
        self.req.client_addr()
    }
    fn body(&self) -> Option<&[u8]> {
        Some(self.body)
    }
}

/// The compiled lists for a choice of lists, compiled once per choice for
/// the life of the process and shared by every zone that makes it.
fn signature_set(lists: &[String], patterns: &[&str]) -> Result<Arc<Signatures>, ConfigError> {
    static SETS: OnceLock<Mutex<HashMap<Vec<String>, Arc<Signatures>>>> = OnceLock::new();
    let sets = SETS.get_or_init(Default::default);
    if let Some(set) = sets.lock().unwrap_or_else(|e| e.into_inner()).get(lists) {
        return Ok(set.clone());
    }
    let set = Arc::new(Signatures::new(patterns).map_err(|e| ConfigError::new("signatures", e))?);
    sets.lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(lists.to_vec(), set.clone());
    Ok(set)
}

fn blocked(status: u16, line: String) -> Decision {
    Decision::Respond(Response {
        status,
        headers: Vec::new(),
        body: Vec::new(),
        log: vec![line],
    })
}

impl Module for Waf {
    fn wants_body(&self) -> bool {
        self.wants_body
    }

    fn on_request(&self, req: &dyn RequestView, _ctx: &Context) -> Result<Decision, ModuleError> {
        // A body this WAF reads but cannot read as a backend may is
        // undecidable: the step fails, and its failure policy answers.
        let mut decoded = None;
        if let Some(raw) = req.body().filter(|_| self.wants_body) {
            decoded = self
                .read_body(req, raw)
                .map_err(|why| ModuleError::new(format!("an undecidable body: {why}")))?;
        }
        let view = decoded.as_deref().map(|body| Decoded { req, body });
        let sent = view.as_ref().and_then(|_| req.body());
        let read: &dyn RequestView = match &view {
            Some(v) => v,
            None => req,
        };
        let subject = Subject::new(read);
        let mut log = Vec::new();
        // What a matching rule does: answer (block, allow) or log and go on.
        let apply = |rule: &Rule, log: &mut Vec<String>| match rule.action {
            Action::Block => Some(blocked(
                rule.status,
                format!("rule \"{}\" blocked the request", rule.id),
            )),
            Action::Allow => Some(Decision::Continue(Changes {
                log: std::mem::take(log),
                ..Changes::default()
            })),
            Action::Log => {
                log.push(format!("rule \"{}\" matched", rule.id));
                None
            }
        };
        let mut folds = self.folds.iter().peekable();
        let mut i = 0;
        while i < self.rules.len() {
            if let Some(fold) = folds.next_if(|f| f.first == i) {
                let hits = fold.index.matching(&subject);
                if let Some(d) = hits
                    .into_iter()
                    .find_map(|j| apply(&self.rules[j], &mut log))
                {
                    return Ok(d);
                }
                i = fold.end;
                continue;
            }
            let rule = &self.rules[i];
            if rule.when.eval(&subject) {
                if let Some(d) = apply(rule, &mut log) {
                    return Ok(d);
                }
            }
            i += 1;
        }
        if let Some(list) = self.signature_hit(&subject, sent) {
            let name = &self.list_names[list];
            if self.signature_action == Action::Block {
                return Ok(blocked(
                    self.signature_status,
                    format!("signature \"{name}\" blocked the request"),
                ));
            }
            log.push(format!("signature \"{name}\" matched"));
        }
        Ok(Decision::Continue(Changes {
            log,
            ..Changes::default()
        }))
    }
}

impl Configured for Waf {
    const NAME: &'static str = NAME;
    /// An access control: a request it cannot decide is not let through.
    const ON_FAILURE: FailurePolicy = FailurePolicy::CLOSED;

    fn configure(config: &serde_json::Value) -> Result<Self, ConfigError> {
        Self::from_config(config)
    }

    /// The Lua side gets the lists' patterns, not just their names: one
    /// source for the signatures. Every regex it gets, in the rules'
    /// conditions and in the lists, has each `$` anchor as `\z`: PCRE's `$`
    /// also matches before a final newline, graft's only at the very end.
    fn lua_config(config: &serde_json::Value) -> serde_json::Value {
        let mut config = lua_conditions_in(config, "rules");
        if let Some(names) = config.get("signatures").and_then(|s| s.as_array()).cloned() {
            let lists: Vec<_> = names
                .iter()
                .filter_map(|n| n.as_str())
                .map(|n| serde_json::json!({ "name": n, "patterns": lua_signature_lists().get(n) }))
                .collect();
            config["signatures"] = serde_json::Value::Array(lists);
        }
        config
    }
}

/// The registry's factory of this module.
pub static FACTORY: Factory<Waf> = Factory::new();

#[cfg(test)]
mod tests;
