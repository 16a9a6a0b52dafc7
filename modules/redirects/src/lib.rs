//! Redirects: per zone, exact-path and prefix rules answered with
//! 301/302/307/308 and a `Location`.
//!
//! - An exact rule wins over any prefix rule; among prefix rules the longest
//!   prefix wins.
//! - A prefix rule matches whole path segments: `from` matches the path
//!   equal to it, and a path that goes on past it with `/`, or with anything
//!   when `from` itself ends in `/`. `/go` matches `/go` and `/go/x`, never
//!   `/gopher` or `/go.evil.com`.
//! - A prefix rule carries the rest of the path over: with `/blog/` to
//!   `/news/`, `/blog/a/b` goes to `/news/a/b`. The rest joins the target's
//!   path (before any `?` or `#` of the target) with exactly one `/`: its
//!   leading slashes are dropped, and one is put back unless the target's
//!   path ends in `/` already. `/shop` to `/` sends `/shop//evil.com/x` to
//!   `/evil.com/x`; `/go` to `https://example.com` sends `/go/x` to
//!   `https://example.com/x`. So the carried path never extends the target's
//!   host or starts a new one (`//`).
//! - A prefix rule's target is therefore one whose host ends where the path
//!   joins: a path with one leading `/`, or `//host...`, or
//!   `scheme://host...` with a non-empty host. Anything else (`https://`,
//!   `http:`, `//`, `news/`, `?x`, a `\` before the path) is refused at load.
//! - `query: "keep"` (the default) carries the query string over, joined
//!   with `&` when the target has one already; `"drop"` leaves it out.
//! - The path is nginx's decoded path, so the part carried over is encoded
//!   again: bytes that may not stand in a URI (controls, space, non-ASCII,
//!   `"#%<>?[\]^`{|}`) become `%XX`. The query is carried as sent, with the
//!   same bytes encoded but `%`, `?` and `#` kept. A `Location` can never
//!   hold a CR, LF or NUL.
//!
//! - `bulk` holds thousands of exact redirects that share a status and
//!   query mode: `{ "status": 301, "map": { "/from": "/to", ... } }`; like
//!   every exact rule, each is found in constant time.
//!
//! The Lua legacy implementation is `lua/graft/legacy/redirects.lua`.
#![forbid(unsafe_code)]

use hashbrown::hash_table::Entry;
use hashbrown::{DefaultHashBuilder, HashTable};
use std::hash::BuildHasher;

use graft_contract::{
    parse_config, ConfigError, Configured, Context, Decision, Factory, HeaderName, HeaderValue,
    Module, ModuleError, RequestView, Response,
};
use serde::Deserialize;

pub const NAME: &str = "redirects";

/// Limits checked at load: a configuration over them is refused.
pub const MAX_RULES: usize = 1_000_000;
pub const MAX_TARGET_LEN: usize = 4096;
pub const MAX_FROM_LEN: usize = 4096;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    rules: Vec<RuleConfig>,
    #[serde(default)]
    bulk: Option<BulkConfig>,
}

/// Thousands of exact redirects that share a status and query handling.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BulkConfig {
    #[serde(default = "default_status")]
    status: u16,
    #[serde(default)]
    query: QueryMode,
    map: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleConfig {
    from: String,
    to: String,
    #[serde(default, rename = "match")]
    kind: MatchKind,
    #[serde(default = "default_status")]
    status: u16,
    #[serde(default)]
    query: QueryMode,
}

fn default_status() -> u16 {
    301
}

#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum MatchKind {
    #[default]
    Exact,
    Prefix,
}

#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum QueryMode {
    #[default]
    Keep,
    Drop,
}

/// A checked rule, before it is packed into its table.
#[derive(Debug)]
struct Rule {
    to: Vec<u8>,
    /// Where the target's path ends (its first `?` or `#`, else its length):
    /// a prefix rule's carried path goes there.
    path_end: usize,
    status: u16,
    query: QueryMode,
    target_has_query: bool,
}

/// A rule as a lookup returns it: its target borrowed from its table.
#[derive(Debug, Clone, Copy)]
struct Found<'a> {
    to: &'a [u8],
    path_end: usize,
    status: u16,
    query: QueryMode,
    target_has_query: bool,
}

/// A rule in its table: where its `from` and `to` lie in the table's
/// text, and the rest of it, in 16 bytes.
#[derive(Debug)]
struct Packed {
    at: u32,
    from_len: u16,
    to_len: u16,
    path_end: u16,
    status: u16,
    query: QueryMode,
    target_has_query: bool,
}

/// The rules of one match kind: every `from` and `to` back to back in one
/// text, the rules in one array, and a hash index of rule numbers.
#[derive(Debug, Default)]
struct Table {
    text: Vec<u8>,
    rules: Vec<Packed>,
    index: HashTable<u32>,
    hasher: DefaultHashBuilder,
}

/// A rule's `from` in its table's text.
fn source<'t>(text: &'t [u8], p: &Packed) -> &'t [u8] {
    let at = p.at as usize;
    &text[at..at + usize::from(p.from_len)]
}

impl Table {
    /// Adds a rule: `Ok(false)` when `from` has one already (nothing
    /// added), an error when the table's text would pass 4 GiB.
    fn insert(&mut self, from: &[u8], rule: Rule) -> Result<bool, ConfigError> {
        let hash = self.hasher.hash_one(from);
        let Table {
            text,
            rules,
            index,
            hasher,
        } = self;
        let from_of = |i: &u32| source(text, &rules[*i as usize]);
        match index.entry(
            hash,
            |i| from_of(i) == from,
            |i| hasher.hash_one(from_of(i)),
        ) {
            Entry::Occupied(_) => Ok(false),
            Entry::Vacant(vacant) => {
                let too_large = || ConfigError::new("rules", "over 4 GiB of redirect text");
                let n = u32::try_from(rules.len()).map_err(|_| too_large())?;
                let at = u32::try_from(text.len())
                    .ok()
                    .filter(|at| {
                        at.checked_add((from.len() + rule.to.len()) as u32)
                            .is_some()
                    })
                    .ok_or_else(too_large)?;
                // Lengths were checked against MAX_FROM_LEN and MAX_TARGET_LEN,
                // both under 65,536, before a rule reaches its table.
                text.extend_from_slice(from);
                text.extend_from_slice(&rule.to);
                rules.push(Packed {
                    at,
                    from_len: u16::try_from(from.len()).expect("from checked"),
                    to_len: u16::try_from(rule.to.len()).expect("to checked"),
                    path_end: u16::try_from(rule.path_end).expect("within to"),
                    status: rule.status,
                    query: rule.query,
                    target_has_query: rule.target_has_query,
                });
                vacant.insert(n);
                Ok(true)
            }
        }
    }

    /// Gives back what building the table reserved beyond its needs.
    fn shrink(&mut self) {
        self.text.shrink_to_fit();
        self.rules.shrink_to_fit();
        let Table {
            text,
            rules,
            index,
            hasher,
        } = self;
        index.shrink_to_fit(|i| hasher.hash_one(source(text, &rules[*i as usize])));
    }

    fn get(&self, from: &[u8]) -> Option<Found<'_>> {
        let hash = self.hasher.hash_one(from);
        let &i = self.index.find(hash, |i| {
            source(&self.text, &self.rules[*i as usize]) == from
        })?;
        let p = &self.rules[i as usize];
        let to_at = p.at as usize + usize::from(p.from_len);
        Some(Found {
            to: &self.text[to_at..to_at + usize::from(p.to_len)],
            path_end: usize::from(p.path_end),
            status: p.status,
            query: p.query,
            target_has_query: p.target_has_query,
        })
    }

    fn lengths(&self) -> impl Iterator<Item = usize> + '_ {
        self.rules.iter().map(|p| usize::from(p.from_len))
    }
}

/// The redirects of one zone, indexed for lookup.
#[derive(Debug)]
pub struct Redirects {
    exact: Table,
    prefix: Table,
    /// Distinct prefix lengths, longest first: a lookup tries each once.
    prefix_lengths: Vec<usize>,
}

impl Redirects {
    pub fn from_config(config: &serde_json::Value) -> Result<Self, ConfigError> {
        let config: Config = parse_config(config)?;
        let bulk_len = config.bulk.as_ref().map_or(0, |b| b.map.len());
        if config.rules.len() + bulk_len > MAX_RULES {
            return Err(ConfigError::new(
                "rules",
                format!(
                    "{} rules, over the limit of {MAX_RULES}",
                    config.rules.len() + bulk_len
                ),
            ));
        }
        let mut exact = Table::default();
        let mut prefix = Table::default();
        for (i, rc) in config.rules.into_iter().enumerate() {
            let at = format!("rules[{i}]");
            let (from, kind) = (rc.from.clone(), rc.kind);
            let rule = validate(rc).map_err(|e| e.within(&at))?;
            let table = match kind {
                MatchKind::Exact => &mut exact,
                MatchKind::Prefix => &mut prefix,
            };
            if !table.insert(from.as_bytes(), rule)? {
                return Err(ConfigError::new(
                    format!("{at}.from"),
                    format!("\"{from}\" has a rule of the same match kind already"),
                ));
            }
        }
        if let Some(bulk) = config.bulk {
            for (from, to) in bulk.map {
                let at = format!("bulk.map[\"{from}\"]");
                let to = to
                    .as_str()
                    .ok_or_else(|| ConfigError::new(&at, "the target is a string"))?
                    .to_string();
                let rule = validate(RuleConfig {
                    from: from.clone(),
                    to,
                    kind: MatchKind::Exact,
                    status: bulk.status,
                    query: bulk.query,
                })
                .map_err(|e| ConfigError::new(&at, e.to_string()))?;
                if !exact.insert(from.as_bytes(), rule)? {
                    return Err(ConfigError::new(at, "has an exact rule already"));
                }
            }
        }
        exact.shrink();
        prefix.shrink();
        let mut prefix_lengths: Vec<usize> = prefix.lengths().collect();
        prefix_lengths.sort_unstable_by(|a, b| b.cmp(a));
        prefix_lengths.dedup();
        Ok(Redirects {
            exact,
            prefix,
            prefix_lengths,
        })
    }

    fn find<'a>(&'a self, path: &'a [u8]) -> Option<(Found<'a>, &'a [u8])> {
        if let Some(rule) = self.exact.get(path) {
            return Some((rule, &[]));
        }
        self.prefix_lengths
            .iter()
            .filter(|&&len| len <= path.len())
            .find_map(|&len| {
                let (from, rest) = path.split_at(len);
                // Whole segments only: `/go` is no prefix of `/go.evil.com`.
                let at_boundary = rest.is_empty() || from.last() == Some(&b'/') || rest[0] == b'/';
                if !at_boundary {
                    return None;
                }
                self.prefix.get(from).map(|r| (r, rest))
            })
    }
}

/// Whether a prefix rule's target ends its host where the carried path
/// joins: `/path` (not `//` or `/\`), `//host...` or `scheme://host...`,
/// the host non-empty and ended by `/`, `?`, `#` or the end.
fn joinable_target(to: &[u8]) -> bool {
    let scheme_len = match to.iter().position(|&b| b == b':') {
        Some(n)
            if n > 0
                && to[0].is_ascii_alphabetic()
                && to[..n]
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')) =>
        {
            n + 1
        }
        _ => 0,
    };
    let rest = &to[scheme_len..];
    match rest {
        [b'/', b'/', authority @ ..] => {
            let end = authority
                .iter()
                .position(|&b| matches!(b, b'/' | b'?' | b'#'))
                .unwrap_or(authority.len());
            end > 0 && !authority[..end].contains(&b'\\')
        }
        [b'/', second, ..] => scheme_len == 0 && !matches!(second, b'/' | b'\\'),
        [b'/'] => scheme_len == 0,
        _ => false,
    }
}

fn validate(rc: RuleConfig) -> Result<Rule, ConfigError> {
    if !rc.from.starts_with('/') {
        return Err(ConfigError::new("from", "must start with \"/\""));
    }
    if rc.from.len() > MAX_FROM_LEN {
        return Err(ConfigError::new(
            "from",
            format!("longer than {MAX_FROM_LEN} bytes"),
        ));
    }
    if rc.from.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err(ConfigError::new("from", "has a control character"));
    }
    if rc.to.is_empty() {
        return Err(ConfigError::new("to", "is empty"));
    }
    if rc.to.len() > MAX_TARGET_LEN {
        return Err(ConfigError::new(
            "to",
            format!("longer than {MAX_TARGET_LEN} bytes"),
        ));
    }
    HeaderValue::new(rc.to.as_bytes()).map_err(|e| ConfigError::new("to", e.to_string()))?;
    if rc.kind == MatchKind::Prefix && !joinable_target(rc.to.as_bytes()) {
        return Err(ConfigError::new(
            "to",
            format!(
                "\"{}\": a prefix rule's target is a path starting with one \"/\", \
                 \"//host...\" or \"scheme://host...\"",
                rc.to
            ),
        ));
    }
    if !matches!(rc.status, 301 | 302 | 307 | 308) {
        return Err(ConfigError::new(
            "status",
            format!("{} is not one of 301, 302, 307, 308", rc.status),
        ));
    }
    Ok(Rule {
        target_has_query: rc.to.contains('?'),
        path_end: rc.to.find(['?', '#']).unwrap_or(rc.to.len()),
        to: rc.to.into_bytes(),
        status: rc.status,
        query: rc.query,
    })
}

/// Bytes that may not stand in a `Location` as they are.
fn needs_escape(b: u8, in_query: bool) -> bool {
    match b {
        0..=0x20 | 0x7f..=0xff => true,
        b'%' | b'?' | b'#' => !in_query,
        b'"' | b'<' | b'>' | b'[' | b'\\' | b']' | b'^' | b'`' | b'{' | b'|' | b'}' => true,
        _ => false,
    }
}

fn push_escaped(out: &mut Vec<u8>, bytes: &[u8], in_query: bool) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if needs_escape(b, in_query) {
            out.extend_from_slice(&[b'%', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        } else {
            out.push(b);
        }
    }
}

impl Module for Redirects {
    fn on_request(&self, req: &dyn RequestView, _ctx: &Context) -> Result<Decision, ModuleError> {
        let Some((rule, rest)) = self.find(req.path()) else {
            return Ok(Decision::Continue(Default::default()));
        };
        let query = match rule.query {
            QueryMode::Keep => req.query(),
            QueryMode::Drop => None,
        };
        let mut location = Vec::with_capacity(rule.to.len() + rest.len() + 64);
        if rest.is_empty() {
            location.extend_from_slice(rule.to);
        } else {
            // The rest joins the target's path with exactly one `/`, so it
            // can neither extend the target's host nor start with `//`.
            let (target_path, target_tail) = rule.to.split_at(rule.path_end);
            location.extend_from_slice(target_path);
            if target_path.last() != Some(&b'/') {
                location.push(b'/');
            }
            let segments = rest.iter().position(|&b| b != b'/').unwrap_or(rest.len());
            push_escaped(&mut location, &rest[segments..], false);
            location.extend_from_slice(target_tail);
        }
        if let Some(q) = query {
            location.push(if rule.target_has_query { b'&' } else { b'?' });
            push_escaped(&mut location, q, true);
        }
        Ok(Decision::Respond(Response {
            status: rule.status,
            headers: vec![(HeaderName::new("Location")?, HeaderValue::new(location)?)],
            body: Vec::new(),
            log: Vec::new(),
        }))
    }
}

/// Registers the module under [`NAME`].
impl Configured for Redirects {
    const NAME: &'static str = NAME;

    fn configure(config: &serde_json::Value) -> Result<Self, ConfigError> {
        Self::from_config(config)
    }
}

/// The registry's factory of this module.
pub static FACTORY: Factory<Redirects> = Factory::new();

#[cfg(test)]
mod tests;
