//! Conditions over request fields, compiled once at load.
//!
//! ```json
//! { "all": [ C, ... ] }   { "any": [ C, ... ] }   { "not": C }
//! { "field": F, "op": O, "value": "..." }  or  "values": [ "...", ... ]
//! ```
//!
//! Fields: `method`, `path` (decoded, nginx's `$uri`), `host`, `query`
//! (raw), `client` (address), `arg:<name>` and `header:<name>` (any value
//! of that argument or header), `args` and `headers` (any value of any
//! argument or header; an argument's name counts as one of its values).
//! An argument without `=` has the empty value.
//!
//! Body fields, in zones that read request bodies (`graft_contract::body`;
//! no body: no value): `body` (the raw bytes, as far as the zone reads
//! them), `body_arg:<name>` and `body_args` (the arguments of an
//! `application/x-www-form-urlencoded` body, as query arguments are read),
//! `json` (every string of a JSON body, keys included, at any depth). Each
//! is decoded once per request, on first use.
//!
//! Operators: `equals`, `prefix`, `contains`, `regex` (a linear-time
//! engine, byte semantics, at most [`MAX_REGEX_LEN`] bytes, in the subset
//! the Rust engine and PCRE read alike: [`check_portable`]), `in` (a set of
//! strings), `in_prefix` (IPv4/IPv6 prefixes; the field's value is read as
//! an address).
//!
//! The Lua twin is `lua/graft/conditions.lua`.
#![forbid(unsafe_code)]

use std::cell::OnceCell;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::ops::ControlFlow;
use std::sync::{Mutex, OnceLock};

use graft_contract::body::{for_each_json_string, BodyKind};
use graft_contract::{args::decode_args, ConfigError, RequestView};
use ipnet::IpNet;
use prefix_trie::joint::set::JointPrefixSet;
use regex::bytes::{Regex, RegexBuilder};
use serde_json::Value;

mod equals_index;
mod portable;

pub use equals_index::{EqualsIndex, FieldRef};
use portable::REGEX_NEST_LIMIT;
pub use portable::{check_portable, lua_condition, lua_conditions_in, pcre_pattern};

pub const MAX_REGEX_LEN: usize = 4096;
pub const MAX_DEPTH: usize = 16;
pub const MAX_LIST: usize = 100_000;
/// Compiled size limit of one regular expression.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    Method,
    Path,
    Host,
    Query,
    Client,
    Arg(Vec<u8>),
    Args,
    Header(Vec<u8>),
    Headers,
    Body,
    BodyArg(Vec<u8>),
    BodyArgs,
    Json,
}

impl Field {
    fn reads_body(&self) -> bool {
        matches!(
            self,
            Field::Body | Field::BodyArg(_) | Field::BodyArgs | Field::Json
        )
    }
}

#[derive(Debug)]
enum Op {
    Equals(Vec<u8>),
    Prefix(Vec<u8>),
    Contains(Vec<u8>),
    Regex(Regex),
    In(HashSet<Vec<u8>>),
    InPrefix(Box<JointPrefixSet<IpNet>>),
}

/// A compiled condition.
#[derive(Debug)]
pub struct Condition(Node);

#[derive(Debug)]
enum Node {
    All(Vec<Node>),
    Any(Vec<Node>),
    Not(Box<Node>),
    Test { field: Field, op: Op },
}

/// Compiles a regular expression the way every graft module does: byte
/// semantics (as PCRE without UTF mode), size-limited, and only if the Lua
/// side's PCRE reads it alike ([`check_portable`]).
///
/// Compiled expressions are kept by pattern: a configuration with ten
/// thousand zones that share patterns compiles each once, zones share the
/// compiled program (a `Regex` clone is a reference count), and a reload
/// of the same file compiles nothing again. The cache holds what the last
/// loads used, not every pattern the process ever saw: [`end_regex_load`]
/// (called by the engine after each configuration it loads) drops the
/// expressions that load did not compile, and at most
/// [`MAX_CACHED_REGEXES`] are kept between two loads (each may be up to
/// [`REGEX_SIZE_LIMIT`] compiled: reloads with ever new patterns must not
/// grow a worker without bound).
pub fn compile_regex(pattern: &str) -> Result<Regex, String> {
    if pattern.len() > MAX_REGEX_LEN {
        return Err(format!("regex longer than {MAX_REGEX_LEN} bytes"));
    }
    if let Some(re) = regex_cache().get(pattern) {
        return Ok(re);
    }
    check_portable(pattern).map_err(|e| format!("bad regex: {e}"))?;
    let re = RegexBuilder::new(pattern)
        .unicode(false)
        .nest_limit(REGEX_NEST_LIMIT)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| format!("bad regex: {e}"))?;
    regex_cache().insert(pattern, &re);
    Ok(re)
}

/// Ends a configuration load for the cache of compiled expressions: those
/// the load did not compile are dropped (a configuration still running
/// keeps its own; they are freed with it).
pub fn end_regex_load() {
    let mut cache = regex_cache();
    let load = cache.load;
    cache.by_pattern.retain(|_, (_, used)| *used == load);
    cache.load += 1;
}

/// The most compiled expressions kept between two loads.
pub const MAX_CACHED_REGEXES: usize = 10_000;

/// Compiled expressions by pattern, each with the load that last used it.
#[derive(Default)]
struct RegexCache {
    load: u64,
    by_pattern: HashMap<String, (Regex, u64)>,
}

impl RegexCache {
    fn get(&mut self, pattern: &str) -> Option<Regex> {
        let load = self.load;
        self.by_pattern.get_mut(pattern).map(|(re, used)| {
            *used = load;
            re.clone()
        })
    }

    fn insert(&mut self, pattern: &str, re: &Regex) {
        if self.by_pattern.len() >= MAX_CACHED_REGEXES {
            self.by_pattern.clear();
        }
        self.by_pattern
            .insert(pattern.to_string(), (re.clone(), self.load));
    }
}

fn regex_cache() -> std::sync::MutexGuard<'static, RegexCache> {
    static CACHE: OnceLock<Mutex<RegexCache>> = OnceLock::new();
    CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Parses an address prefix (`10.0.0.0/8`, `2001:db8::/32`, or a bare address).
pub fn parse_prefix(s: &str) -> Result<IpNet, String> {
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    s.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("\"{s}\" is not an IP prefix"))
}

fn strings(v: &Value, at: &str) -> Result<Vec<Vec<u8>>, ConfigError> {
    let list = v
        .as_array()
        .ok_or_else(|| ConfigError::new(at, "must be a list of strings"))?;
    if list.len() > MAX_LIST {
        return Err(ConfigError::new(
            at,
            format!("more than {MAX_LIST} entries"),
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, s)| {
            s.as_str()
                .map(|s| s.as_bytes().to_vec())
                .ok_or_else(|| ConfigError::new(format!("{at}[{i}]"), "must be a string"))
        })
        .collect()
}

fn parse_field(name: &str) -> Result<Field, String> {
    Ok(match name {
        "method" => Field::Method,
        "path" => Field::Path,
        "host" => Field::Host,
        "query" => Field::Query,
        "client" => Field::Client,
        "args" => Field::Args,
        "headers" => Field::Headers,
        "body" => Field::Body,
        "body_args" => Field::BodyArgs,
        "json" => Field::Json,
        _ => match name.split_once(':') {
            Some(("arg", a)) if !a.is_empty() => Field::Arg(a.as_bytes().to_vec()),
            Some(("body_arg", a)) if !a.is_empty() => Field::BodyArg(a.as_bytes().to_vec()),
            Some(("header", h)) if !h.is_empty() => Field::Header(h.to_ascii_lowercase().into_bytes()),
            _ => {
                return Err(format!(
                    "unknown field \"{name}\"; known: method, path, host, query, client, args, headers, arg:<name>, header:<name>, body, body_args, body_arg:<name>, json"
                ))
            }
        },
    })
}

impl Condition {
    /// The field and value when the condition is one `equals` test: such
    /// conditions over one field can be answered together by an
    /// [`EqualsIndex`].
    pub fn equals_test(&self) -> Option<(FieldRef<'_>, &[u8])> {
        match &self.0 {
            Node::Test {
                field,
                op: Op::Equals(v),
            } => Some((FieldRef(field), v)),
            _ => None,
        }
    }

    /// Compiles a condition; errors name the path inside it (`any[1].op`).
    pub fn parse(v: &Value) -> Result<Condition, ConfigError> {
        Node::parse_at(v, 0).map(Condition)
    }

    pub fn eval(&self, subject: &Subject) -> bool {
        self.0.eval(subject)
    }

    /// Whether the condition tests a field of the request body.
    pub fn reads_body(&self) -> bool {
        self.0.reads_body()
    }
}

impl Node {
    fn parse_at(v: &Value, depth: usize) -> Result<Node, ConfigError> {
        if depth > MAX_DEPTH {
            return Err(ConfigError::new(
                "",
                format!("nested deeper than {MAX_DEPTH}"),
            ));
        }
        let obj = v
            .as_object()
            .ok_or_else(|| ConfigError::new("", "a condition is an object"))?;
        if let Some(node) = Node::parse_combination(obj, depth)? {
            return Ok(node);
        }
        Node::parse_test(obj)
    }

    /// `{ "all": [...] }`, `{ "any": [...] }` or `{ "not": {...} }`, each
    /// alone in its object; `None` for anything else.
    fn parse_combination(
        obj: &serde_json::Map<String, Value>,
        depth: usize,
    ) -> Result<Option<Node>, ConfigError> {
        for (key, list) in [("all", true), ("any", false)] {
            if let Some(items) = obj.get(key) {
                if obj.len() != 1 {
                    return Err(ConfigError::new(
                        "",
                        format!("\"{key}\" stands alone in its object"),
                    ));
                }
                let items = items
                    .as_array()
                    .ok_or_else(|| ConfigError::new(key, "must be a list of conditions"))?;
                let parsed = items
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        Node::parse_at(c, depth + 1).map_err(|e| e.within(&format!("{key}[{i}]")))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                return Ok(Some(if list {
                    Node::All(parsed)
                } else {
                    Node::Any(parsed)
                }));
            }
        }
        if let Some(inner) = obj.get("not") {
            if obj.len() != 1 {
                return Err(ConfigError::new("", "\"not\" stands alone in its object"));
            }
            let inner = Node::parse_at(inner, depth + 1).map_err(|e| e.within("not"))?;
            return Ok(Some(Node::Not(Box::new(inner))));
        }
        Ok(None)
    }

    /// `{ "field": ..., "op": ..., "value" | "values": ... }`.
    fn parse_test(obj: &serde_json::Map<String, Value>) -> Result<Node, ConfigError> {
        for key in obj.keys() {
            if !["field", "op", "value", "values"].contains(&key.as_str()) {
                return Err(ConfigError::new(
                    key.as_str(),
                    "unknown key; a condition has all, any, not, or field, op and value(s)",
                ));
            }
        }
        let field_name = obj
            .get("field")
            .and_then(Value::as_str)
            .ok_or_else(|| ConfigError::new("field", "missing, or not a string"))?;
        let field = parse_field(field_name).map_err(|e| ConfigError::new("field", e))?;
        let op_name = obj
            .get("op")
            .and_then(Value::as_str)
            .ok_or_else(|| ConfigError::new("op", "missing, or not a string"))?;
        Ok(Node::Test {
            field,
            op: parse_op(obj, op_name)?,
        })
    }

    fn reads_body(&self) -> bool {
        match self {
            Node::All(c) | Node::Any(c) => c.iter().any(Node::reads_body),
            Node::Not(c) => c.reads_body(),
            Node::Test { field, .. } => field.reads_body(),
        }
    }

    fn eval(&self, subject: &Subject) -> bool {
        match self {
            Node::All(c) => c.iter().all(|c| c.eval(subject)),
            Node::Any(c) => c.iter().any(|c| c.eval(subject)),
            Node::Not(c) => !c.eval(subject),
            Node::Test { field, op } => test(field, op, subject),
        }
    }
}

/// The operator `op_name` with the value(s) it needs from `obj`.
fn parse_op(obj: &serde_json::Map<String, Value>, op_name: &str) -> Result<Op, ConfigError> {
    let value = || {
        obj.get("value").and_then(Value::as_str).ok_or_else(|| {
            ConfigError::new("value", format!("\"{op_name}\" needs a string \"value\""))
        })
    };
    let values = || {
        obj.get("values")
            .ok_or_else(|| {
                ConfigError::new("values", format!("\"{op_name}\" needs a list \"values\""))
            })
            .and_then(|v| strings(v, "values"))
    };
    Ok(match op_name {
        "equals" => Op::Equals(value()?.as_bytes().to_vec()),
        "prefix" => Op::Prefix(value()?.as_bytes().to_vec()),
        "contains" => Op::Contains(value()?.as_bytes().to_vec()),
        "regex" => Op::Regex(compile_regex(value()?).map_err(|e| ConfigError::new("value", e))?),
        "in" => Op::In(values()?.into_iter().collect()),
        "in_prefix" => {
            let mut set = JointPrefixSet::new();
            for (i, p) in values()?.iter().enumerate() {
                let p = String::from_utf8_lossy(p);
                let net =
                    parse_prefix(&p).map_err(|e| ConfigError::new(format!("values[{i}]"), e))?;
                set.insert(net);
            }
            Op::InPrefix(Box::new(set))
        }
        other => {
            return Err(ConfigError::new(
                "op",
                format!("unknown operator \"{other}\"; known: equals, prefix, contains, regex, in, in_prefix"),
            ))
        }
    })
}

fn op_matches(op: &Op, v: &[u8]) -> bool {
    match op {
        Op::Equals(x) => v == x.as_slice(),
        Op::Prefix(x) => v.starts_with(x),
        Op::Contains(x) => x.is_empty() || v.windows(x.len()).any(|w| w == x.as_slice()),
        Op::Regex(re) => re.is_match(v),
        Op::In(set) => set.contains(v),
        Op::InPrefix(set) => std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.trim().parse::<IpAddr>().ok())
            .is_some_and(|ip| in_prefix(set, ip)),
    }
}

fn in_prefix(set: &JointPrefixSet<IpNet>, ip: IpAddr) -> bool {
    set.get_lpm(&IpNet::from(ip)).is_some()
}

fn test(field: &Field, op: &Op, s: &Subject) -> bool {
    let req = s.req;
    match field {
        Field::Method => op_matches(op, req.method()),
        Field::Path => op_matches(op, req.path()),
        Field::Host => op_matches(op, req.host()),
        Field::Query => op_matches(op, req.query().unwrap_or_default()),
        Field::Client => match (op, req.client_addr()) {
            (Op::InPrefix(set), Some(ip)) => in_prefix(set, ip),
            (_, Some(ip)) => op_matches(op, ip.to_string().as_bytes()),
            (_, None) => false,
        },
        Field::Arg(name) => s
            .args()
            .any(|(n, v)| n == name.as_slice() && op_matches(op, v)),
        Field::Args => s
            .args()
            .any(|(n, v)| op_matches(op, n) || op_matches(op, v)),
        Field::Body => req.body().is_some_and(|b| op_matches(op, b)),
        Field::BodyArg(name) => s
            .body_args()
            .any(|(n, v)| n == name.as_slice() && op_matches(op, v)),
        Field::BodyArgs => s
            .body_args()
            .any(|(n, v)| op_matches(op, n) || op_matches(op, v)),
        Field::Json => s.json_strings().any(|v| op_matches(op, v)),
        Field::Header(name) => {
            let mut hit = false;
            req.for_each_header(&mut |n, v| {
                if n.eq_ignore_ascii_case(name) && op_matches(op, v) {
                    hit = true;
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            });
            hit
        }
        Field::Headers => {
            let mut hit = false;
            req.for_each_header(&mut |_, v| {
                if op_matches(op, v) {
                    hit = true;
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            });
            hit
        }
    }
}

/// A request as conditions see it: the view, and its query arguments
/// decoded on first use, once.
pub struct Subject<'a> {
    pub req: &'a dyn RequestView,
    args: OnceCell<DecodedArgs>,
    body_args: OnceCell<DecodedArgs>,
    json: OnceCell<DecodedArgs>,
}

/// A request's query arguments, decoded: every name and value back to back
/// in one buffer, with where each ends (a few allocations for them all,
/// not two an argument).
#[derive(Default)]
struct DecodedArgs {
    bytes: Vec<u8>,
    /// Per argument, where its name ends and where its value ends.
    ends: Vec<(usize, usize)>,
}

impl<'a> Subject<'a> {
    pub fn new(req: &'a dyn RequestView) -> Self {
        Subject {
            req,
            args: OnceCell::new(),
            body_args: OnceCell::new(),
            json: OnceCell::new(),
        }
    }

    /// Every query argument, decoded (no value: empty), in order.
    pub fn args(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        let decoded = self
            .args
            .get_or_init(|| DecodedArgs::of_query(self.req.query()));
        decoded.pairs()
    }

    /// Every argument of a form body, decoded as query arguments are (none
    /// without a body, or for another `Content-Type`), in order.
    pub fn body_args(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        let decoded = self.body_args.get_or_init(|| {
            let form = self
                .req
                .body()
                .filter(|_| BodyKind::of(self.req.header(b"content-type")) == BodyKind::Form);
            DecodedArgs::of_query(form)
        });
        decoded.pairs()
    }

    /// Every string of a JSON body, decoded (`graft_contract::body`), in
    /// order (none without a body, or for another `Content-Type`).
    pub fn json_strings(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let decoded = self.json.get_or_init(|| {
            let mut out = DecodedArgs::default();
            if let Some(body) = self
                .req
                .body()
                .filter(|_| BodyKind::of(self.req.header(b"content-type")) == BodyKind::Json)
            {
                for_each_json_string(body, |s| {
                    let start = out.bytes.len();
                    out.bytes.extend_from_slice(s);
                    out.ends.push((start, out.bytes.len()));
                });
            }
            out
        });
        decoded.pairs().map(|(_, v)| v)
    }
}

impl DecodedArgs {
    fn of_query(query: Option<&[u8]>) -> DecodedArgs {
        let mut out = DecodedArgs::default();
        if let Some(q) = query {
            decode_args(q, &mut out.bytes, &mut out.ends);
        }
        out
    }

    /// Each entry's two parts (a name and a value; for strings, empty and
    /// the string).
    fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        let decoded = self;
        let mut start = 0;
        decoded.ends.iter().map(move |&(name_end, end)| {
            let arg = (
                &decoded.bytes[start..name_end],
                &decoded.bytes[name_end..end],
            );
            start = end;
            arg
        })
    }
}

#[cfg(test)]
mod tests;
