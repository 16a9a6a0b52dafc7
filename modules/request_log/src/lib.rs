//! `request_log`: a structured record per request, written in the log
//! phase as one JSON line, with the fields configured, sampled, bounded in
//! size and rate. The Lua twin is `lua/graft/legacy/request_log.lua`; the
//! two write the same line for the same request, byte for byte.
//!
//! ```json
//! { "path": "/var/log/nginx/graft-requests.jsonl",
//!   "fields": ["time", "zone", "host", "method", "path", "query", "status",
//!              "bytes_sent", "client", "header:user-agent"],
//!   "sample": 0.1, "max_value_bytes": 512, "max_per_second": 1000 }
//! ```
//!
//! - A record is an object of the fields in their configured order. Texts
//!   are JSON strings: `"` and `\` escaped, and every byte outside
//!   printable ASCII written as `\u00XX` (so a line is ASCII and valid
//!   JSON whatever the request carries, and no request can break a line),
//!   each cut to `max_value_bytes` first. Numbers are numbers; a field
//!   the request does not have is `null`.
//! - `sample`: the share of requests recorded, chosen by a hash of the
//!   request's method, target and client, keyed per server
//!   ([`sampled`], [`sample_key`]): the same request is chosen on both
//!   sides and in every worker, and no client can choose to be recorded.
//! - `max_per_second`: records a worker writes a second at most; the
//!   others are dropped and counted (`dropped`).
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use graft_contract::{
    parse_config, Completed, ConfigError, Configured, Factory, Module, RequestView,
};
use serde::Deserialize;

pub const NAME: &str = "request_log";
pub const MAX_FIELDS: usize = 32;
pub const MAX_VALUE_BYTES: usize = 4096;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    path: String,
    fields: Vec<String>,
    #[serde(default = "one")]
    sample: f64,
    #[serde(default = "default_value_bytes")]
    max_value_bytes: usize,
    #[serde(default = "default_rate")]
    max_per_second: u32,
}

fn one() -> f64 {
    1.0
}
fn default_value_bytes() -> usize {
    512
}
fn default_rate() -> u32 {
    1000
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    Time,
    Zone,
    Host,
    Method,
    Path,
    Query,
    Status,
    BytesSent,
    Client,
    Header(Vec<u8>),
}

impl Field {
    fn parse(name: &str) -> Option<Field> {
        Some(match name {
            "time" => Field::Time,
            "zone" => Field::Zone,
            "host" => Field::Host,
            "method" => Field::Method,
            "path" => Field::Path,
            "query" => Field::Query,
            "status" => Field::Status,
            "bytes_sent" => Field::BytesSent,
            "client" => Field::Client,
            _ => match name.strip_prefix("header:") {
                Some(h) if !h.is_empty() => Field::Header(h.to_ascii_lowercase().into_bytes()),
                _ => return None,
            },
        })
    }
}

pub struct RequestLog {
    path: Arc<str>,
    fields: Vec<(String, Field)>,
    /// Out of 1,000,000.
    sample_ppm: u32,
    max_value_bytes: usize,
    max_per_second: u32,
    /// This process's current second (high 32 bits) and the records it
    /// wrote in it (low 32 bits).
    written: AtomicU64,
}

/// FNV-1a, 32 bits: the sampling hash both sides compute.
pub fn fnv1a(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in bytes {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// This server's sampling key: drawn once a process, from the system's
/// randomness (the master draws it when it loads the graft file, before
/// its workers fork, so every worker and both sides share it), never the
/// same on two servers. Unkeyed, a client could pick a target that is
/// always recorded, or never.
pub fn sample_key() -> &'static str {
    use std::hash::BuildHasher;
    static KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        let a = std::collections::hash_map::RandomState::new().hash_one(0x7361_6d70_6c65_u64);
        let b = std::collections::hash_map::RandomState::new().hash_one(a);
        format!("{a:016x}{b:016x}")
    })
}

/// Whether a request is recorded at `sample_ppm` per million: by the hash
/// of `key SP method SP target SP client`, with `key` this server's
/// [`sample_key`].
pub fn sampled(req: &dyn RequestView, sample_ppm: u32) -> bool {
    sampled_with(sample_key(), req, sample_ppm)
}

/// [`sampled`] with a given key (the Lua twin gets this server's in its
/// configuration, `sample_key`).
pub fn sampled_with(key: &str, req: &dyn RequestView, sample_ppm: u32) -> bool {
    if sample_ppm >= 1_000_000 {
        return true;
    }
    let client = req.client_addr().map(|a| a.to_string()).unwrap_or_default();
    let text = [
        key.as_bytes(),
        b" ",
        req.method(),
        b" ",
        req.raw_uri(),
        b" ",
        client.as_bytes(),
    ]
    .concat();
    fnv1a(&text) % 1_000_000 < sample_ppm
}

/// A text as a JSON string, cut to `max` bytes first (see the crate's doc).
pub fn push_text(out: &mut String, text: &[u8], max: usize) {
    out.push('"');
    for &b in &text[..text.len().min(max)] {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\u{b:04x}")),
        }
    }
    out.push('"');
}

impl RequestLog {
    pub fn from_config(config: &serde_json::Value) -> Result<Self, ConfigError> {
        let c: Config = parse_config(config)?;
        if c.path.is_empty() || !c.path.starts_with('/') {
            return Err(ConfigError::new("path", "an absolute file path"));
        }
        // A server checks the path against the directories it may write
        // to (graft_log_dir) by its text: no `..` may lead out of them.
        if c.path.split('/').any(|part| part == ".." || part == ".") || c.path.ends_with('/') {
            return Err(ConfigError::new(
                "path",
                "a file path with no \".\" or \"..\" part",
            ));
        }
        if c.fields.is_empty() || c.fields.len() > MAX_FIELDS {
            return Err(ConfigError::new(
                "fields",
                format!("1 to {MAX_FIELDS} fields"),
            ));
        }
        let mut fields = Vec::with_capacity(c.fields.len());
        for (i, name) in c.fields.iter().enumerate() {
            let f = Field::parse(name).ok_or_else(|| {
                ConfigError::new(
                    format!("fields[{i}]"),
                    "one of time, zone, host, method, path, query, status, bytes_sent, client, header:<name>",
                )
            })?;
            if fields.iter().any(|(n, _)| n == name) {
                return Err(ConfigError::new(format!("fields[{i}]"), "named twice"));
            }
            fields.push((name.clone(), f));
        }
        if !(0.0..=1.0).contains(&c.sample) {
            return Err(ConfigError::new("sample", "a share from 0 to 1"));
        }
        if !(1..=MAX_VALUE_BYTES).contains(&c.max_value_bytes) {
            return Err(ConfigError::new(
                "max_value_bytes",
                format!("from 1 to {MAX_VALUE_BYTES}"),
            ));
        }
        if c.max_per_second == 0 {
            return Err(ConfigError::new("max_per_second", "at least 1"));
        }
        Ok(RequestLog {
            written: AtomicU64::new(0),
            path: c.path.into(),
            fields,
            sample_ppm: (c.sample * 1_000_000.0).round() as u32,
            max_value_bytes: c.max_value_bytes,
            max_per_second: c.max_per_second,
        })
    }

    /// The record of a request, whether sampled or not.
    pub fn record(&self, req: &dyn RequestView, done: &Completed<'_>) -> String {
        let mut out = String::with_capacity(64 * self.fields.len());
        out.push('{');
        for (i, (name, field)) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_text(&mut out, name.as_bytes(), usize::MAX);
            out.push(':');
            let max = self.max_value_bytes;
            match field {
                Field::Time => out.push_str(&done.time.to_string()),
                Field::Zone => push_text(&mut out, done.zone.as_bytes(), max),
                Field::Host => push_text(&mut out, req.host(), max),
                Field::Method => push_text(&mut out, req.method(), max),
                Field::Path => push_text(&mut out, req.path(), max),
                Field::Query => match req.query() {
                    Some(q) => push_text(&mut out, q, max),
                    None => out.push_str("null"),
                },
                Field::Status => out.push_str(&done.status.to_string()),
                Field::BytesSent => out.push_str(&done.bytes_sent.to_string()),
                Field::Client => match req.client_addr() {
                    Some(a) => push_text(&mut out, a.to_string().as_bytes(), max),
                    None => out.push_str("null"),
                },
                Field::Header(h) => match req.header(h) {
                    Some(v) => push_text(&mut out, v, max),
                    None => out.push_str("null"),
                },
            }
        }
        out.push('}');
        out
    }
}

impl Module for RequestLog {
    fn logs_requests(&self) -> bool {
        true
    }

    fn files(&self) -> Vec<(&'static str, &str)> {
        vec![("path", &self.path)]
    }

    fn on_log(
        &self,
        req: &dyn RequestView,
        done: &Completed<'_>,
    ) -> Result<graft_contract::LogOutcome, graft_contract::ModuleError> {
        use graft_contract::LogOutcome;
        if !sampled(req, self.sample_ppm) {
            return Ok(LogOutcome::NotSampled);
        }
        let line = self.record(req, done);
        let allowed = self
            .written
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
                let (second, n) = (w >> 32, w & 0xffff_ffff);
                let now = done.time & 0xffff_ffff;
                let n = if second == now { n } else { 0 };
                (n < u64::from(self.max_per_second)).then_some((now << 32) | (n + 1))
            })
            .is_ok();
        Ok(if allowed {
            LogOutcome::Write {
                path: self.path.clone(),
                line,
            }
        } else {
            LogOutcome::Dropped { line }
        })
    }
}

impl Configured for RequestLog {
    const NAME: &'static str = NAME;

    fn configure(config: &serde_json::Value) -> Result<Self, ConfigError> {
        Self::from_config(config)
    }

    /// The Lua twin samples with this server's key (`sample_key`), so both
    /// sides choose the same requests.
    fn lua_config(config: &serde_json::Value) -> serde_json::Value {
        let mut config = config.clone();
        if let Some(c) = config.as_object_mut() {
            c.insert("sample_key".into(), sample_key().into());
        }
        config
    }
}

/// The registry's factory of this module.
pub static FACTORY: Factory<RequestLog> = Factory::new();

#[cfg(test)]
mod tests;

#[cfg(test)]
mod sampling_tests {
    use super::{sample_key, sampled_with};
    use graft_contract::OwnedRequest;

    /// Keyed: which targets a server records depends on its key, so a
    /// client cannot pick a target that is recorded (or never is) on
    /// every server; the same key always chooses alike.
    #[test]
    fn the_requests_recorded_depend_on_the_servers_key() {
        let chosen = |key: &str| -> Vec<bool> {
            (0..200)
                .map(|i| {
                    sampled_with(
                        key,
                        &OwnedRequest::get("a.test", &format!("/p/{i}")),
                        300_000,
                    )
                })
                .collect()
        };
        assert_eq!(chosen("k1"), chosen("k1"));
        assert_ne!(chosen("k1"), chosen("k2"));
        let n = chosen("k1").iter().filter(|&&c| c).count();
        assert!((30..90).contains(&n), "{n} of 200 at 30 %");
        assert_eq!(sample_key(), sample_key());
        assert_eq!(sample_key().len(), 32);
    }
}
