//! Per-step counters of what happened to requests.
//!
//! Plain atomics: an nginx worker is one thread, so these are never
//! contended; atomics keep [`crate::Config`] `Sync` for the day it is shared.
use std::sync::atomic::{AtomicU64, Ordering};

/// What can happen to a request at one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Count {
    /// Served by the Lua implementation (mode `lua`, or the served side of `shadow`).
    Lua = 0,
    /// Served by the Rust implementation.
    Rust = 1,
    /// Mode `rust`, but served by Lua because Rust declined, failed or panicked.
    Fallback = 2,
    /// Mode `shadow`: both decided the same.
    ShadowMatch = 3,
    /// Mode `shadow`: the decisions differ (Lua's was served).
    ShadowDiff = 4,
    /// The Rust implementation declined.
    Decline = 5,
    /// The Rust implementation returned an error.
    Error = 6,
    /// The Rust implementation panicked.
    Panic = 7,
}

impl Count {
    pub const ALL: [Count; 8] = [
        Count::Lua,
        Count::Rust,
        Count::Fallback,
        Count::ShadowMatch,
        Count::ShadowDiff,
        Count::Decline,
        Count::Error,
        Count::Panic,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Count::Lua => "lua",
            Count::Rust => "rust",
            Count::Fallback => "fallback",
            Count::ShadowMatch => "shadow_match",
            Count::ShadowDiff => "shadow_diff",
            Count::Decline => "decline",
            Count::Error => "error",
            Count::Panic => "panic",
        }
    }

    pub fn from_code(code: i32) -> Option<Count> {
        Count::ALL.get(usize::try_from(code).ok()?).copied()
    }
}

#[derive(Debug, Default)]
pub struct Counters([AtomicU64; Count::ALL.len()]);

impl Counters {
    pub fn add(&self, what: Count) {
        self.0[what as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, what: Count) -> u64 {
        self.0[what as usize].load(Ordering::Relaxed)
    }

    pub fn to_json(&self) -> serde_json::Map<String, serde_json::Value> {
        Count::ALL
            .iter()
            .map(|&c| (c.name().to_string(), self.get(c).into()))
            .collect()
    }
}
