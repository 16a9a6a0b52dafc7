//! Per-step counters of what happened to requests.
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::shared::CounterTable;

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

/// One step's counters: in this process until a shared table is attached
/// (the nginx module attaches one that every worker maps, so that counts
/// are summed across workers and survive a worker's restart and reloads).
#[derive(Debug, Default)]
pub struct Counters {
    /// Names the step in the shared table: zone, position and module.
    key: u64,
    /// The kill switches that concern the step: its module in its zone, and
    /// its module everywhere.
    zone_kill: u64,
    module_kill: u64,
    local: [AtomicU64; Count::ALL.len()],
    local_kill: AtomicU64,
    shared: OnceLock<CounterTable<'static>>,
}

/// A kill switch's state: what sent a module back to Lua.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kill {
    Off = 0,
    /// An operator threw it.
    Manual = 1,
    /// An automatic rollback threshold was crossed.
    Automatic = 2,
}

impl Kill {
    pub fn from_value(v: u64) -> Kill {
        match v {
            0 => Kill::Off,
            1 => Kill::Manual,
            _ => Kill::Automatic,
        }
    }
}

/// The key of a kill switch: `zone` None for the module in every zone.
pub fn kill_key(zone: Option<&str>, module: &str) -> u64 {
    let mut h = DefaultHasher::new();
    ("kill", zone.unwrap_or("*"), module).hash(&mut h);
    h.finish()
}

impl Counters {
    pub fn new(zone: &str, index: usize, module: &str) -> Self {
        let mut h = DefaultHasher::new();
        (zone, index, module).hash(&mut h);
        Counters {
            key: h.finish(),
            zone_kill: kill_key(Some(zone), module),
            module_kill: kill_key(None, module),
            ..Counters::default()
        }
    }

    /// Counts in `table` from now on.
    pub fn share(&self, table: CounterTable<'static>) {
        let _ = self.shared.set(table);
    }

    fn slot_key(&self, what: Count) -> u64 {
        self.key ^ (u64::from(what as u8) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    pub fn add(&self, what: Count) {
        match self.shared.get() {
            Some(t) => t.add(self.slot_key(what), 1),
            None => {
                self.local[what as usize].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn get(&self, what: Count) -> u64 {
        match self.shared.get() {
            Some(t) => t.get(self.slot_key(what)),
            None => self.local[what as usize].load(Ordering::Relaxed),
        }
    }

    /// Whether a kill switch sends this step back to Lua: the zone's own,
    /// else the module's everywhere.
    pub fn kill(&self) -> Kill {
        match self.shared.get() {
            Some(t) => match t.get(self.zone_kill) {
                0 => Kill::from_value(t.get(self.module_kill)),
                v => Kill::from_value(v),
            },
            None => Kill::from_value(self.local_kill.load(Ordering::Relaxed)),
        }
    }

    /// Throws or resets this step's own kill switch (its module in its zone).
    pub fn set_kill(&self, kill: Kill) {
        match self.shared.get() {
            Some(t) => t.set(self.zone_kill, kill as u64),
            None => self.local_kill.store(kill as u64, Ordering::Relaxed),
        }
    }

    /// The shared table, once attached.
    pub fn table(&self) -> Option<CounterTable<'static>> {
        self.shared.get().copied()
    }

    pub fn to_json(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m: serde_json::Map<_, _> = Count::ALL
            .iter()
            .map(|&c| (c.name().to_string(), self.get(c).into()))
            .collect();
        m.insert("killed".into(), (self.kill() as u64).into());
        m
    }
}
