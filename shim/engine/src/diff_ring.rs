//! The last few shadow differences, both decisions side by side, for the
//! dashboard: a ring of entries in memory every worker maps (the shim maps
//! it before the fork). Each entry is written and read by the snapshot
//! protocol (`crate::snapshot`), so a read never sees half an entry.
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;

use crate::snapshot::{Snapshot, HEADER_WORDS};

/// How many differences the ring keeps.
pub const ENTRIES: usize = 16;
/// The largest entry, in bytes (longer descriptions are cut).
pub const ENTRY_BYTES: usize = 2048;
/// The longest description of one decision kept in an entry.
const FIELD_BYTES: usize = 600;

/// Words the ring needs.
pub const fn words() -> usize {
    1 + ENTRIES * (HEADER_WORDS + ENTRY_BYTES / 8)
}

/// One difference: where, on which request, and both decisions described.
pub struct Difference<'s> {
    pub at_secs: u64,
    pub zone: &'s str,
    pub module: &'s str,
    pub request: &'s str,
    pub lua: &'s str,
    pub rust: &'s str,
}

pub struct DiffRing<'a> {
    next: &'a AtomicU64,
    entries: Vec<Snapshot<'a>>,
}

fn cut(s: &str, limit: usize) -> &str {
    if s.len() <= limit {
        return s;
    }
    let mut end = limit;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl<'a> DiffRing<'a> {
    /// Over `words` (zeroed when first mapped), at least [`words()`] long.
    pub fn new(words: &'a [AtomicU64]) -> Self {
        assert!(
            words.len() >= self::words(),
            "a diff ring needs words() words"
        );
        let (next, rest) = words.split_first().expect("checked above");
        let entries = rest
            .chunks(HEADER_WORDS + ENTRY_BYTES / 8)
            .take(ENTRIES)
            .map(Snapshot::new)
            .collect();
        DiffRing { next, entries }
    }

    /// Keeps one difference, over the oldest one kept.
    pub fn push(&self, d: &Difference<'_>, me: u64, alive: impl Fn(u64) -> bool) {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        // Cut the descriptions until the entry fits, escapes included.
        let mut limit = FIELD_BYTES;
        let entry = loop {
            let entry = serde_json::json!({
                "seq": seq, "at": d.at_secs, "zone": cut(d.zone, limit), "module": d.module,
                "request": cut(d.request, limit), "lua": cut(d.lua, limit), "rust": cut(d.rust, limit),
            })
            .to_string();
            if entry.len() <= ENTRY_BYTES || limit < 16 {
                break entry;
            }
            limit /= 2;
        };
        let place = &self.entries[(seq % ENTRIES as u64) as usize];
        // Never waits for a place another writer holds: that entry is left
        // out (the counters still count the difference).
        let _ = place.publish_within(entry.as_bytes(), me, alive, std::time::Duration::ZERO);
    }

    /// The differences kept, newest first.
    pub fn recent(&self) -> Vec<Value> {
        let mut entries: Vec<Value> = self
            .entries
            .iter()
            .filter_map(|s| s.read())
            .filter(|(epoch, _)| *epoch > 0)
            .filter_map(|(_, text)| serde_json::from_slice(&text).ok())
            .collect();
        entries.sort_by_key(|e| std::cmp::Reverse(e["seq"].as_u64().unwrap_or(0)));
        entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_ones_newest_first_and_cuts_long_descriptions() {
        let w: Vec<AtomicU64> = (0..words()).map(|_| AtomicU64::new(0)).collect();
        let ring = DiffRing::new(&w);
        assert!(ring.recent().is_empty());
        let long = "x".repeat(5000);
        for i in 0..40u64 {
            let request = format!("GET /{i}");
            let d = Difference {
                at_secs: i,
                zone: "z",
                module: "m",
                request: &request,
                lua: &long,
                rust: "rust",
            };
            ring.push(&d, 1, |_| true);
        }
        let recent = ring.recent();
        assert_eq!(recent.len(), ENTRIES);
        assert_eq!(recent[0]["request"], "GET /39");
        assert_eq!(
            recent[ENTRIES - 1]["request"],
            format!("GET /{}", 40 - ENTRIES)
        );
        assert_eq!(recent[0]["lua"].as_str().unwrap().len(), FIELD_BYTES);
    }

    #[test]
    fn an_entry_of_escapes_still_fits() {
        let w: Vec<AtomicU64> = (0..words()).map(|_| AtomicU64::new(0)).collect();
        let ring = DiffRing::new(&w);
        let nasty = "\u{1}".repeat(3000);
        let d = Difference {
            at_secs: 1,
            zone: &nasty,
            module: "m",
            request: &nasty,
            lua: &nasty,
            rust: &nasty,
        };
        ring.push(&d, 1, |_| true);
        assert_eq!(ring.recent().len(), 1, "the entry was left out");
    }
}
