//! Per-step counters of what happened to requests.
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::shared::{CounterTable, SwitchError};

/// What can happen to a request at one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Count {
    /// Served by the Lua twin (mode `lua`, or the served side of `shadow`).
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
    /// No implementation could decide (the Lua side missing or throwing,
    /// the Rust side failing with no Lua to fall back to): the step's
    /// failure policy served the request.
    Failed = 8,
    /// Served by the Rust implementation in the native pipeline (also
    /// counted as `Rust`): the step runs with no Lua in the request's path.
    Native = 9,
    /// A Rust call took longer than its step's time budget (it was still
    /// served; counted besides what served it).
    OverBudget = 10,
    /// A step with a response-body phase left a response as it was (not
    /// `text/html`, or compressed).
    Untouched = 11,
    /// A log phase's record over its module's rate: not written.
    Dropped = 12,
}

impl Count {
    pub const ALL: [Count; 13] = [
        Count::Lua,
        Count::Rust,
        Count::Fallback,
        Count::ShadowMatch,
        Count::ShadowDiff,
        Count::Decline,
        Count::Error,
        Count::Panic,
        Count::Failed,
        Count::Native,
        Count::OverBudget,
        Count::Untouched,
        Count::Dropped,
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
            Count::Failed => "failed",
            Count::Native => "native",
            Count::OverBudget => "over_budget",
            Count::Untouched => "untouched",
            Count::Dropped => "dropped",
        }
    }

    pub fn from_code(code: i32) -> Option<Count> {
        Count::ALL.get(usize::try_from(code).ok()?).copied()
    }
}

/// One step's counters. A count is first added in this process (`local`,
/// one uncontended add, no hashing and no shared memory on the request
/// path); once a shared table is attached (the nginx module attaches one
/// that every worker maps, so that counts are summed across workers and
/// survive a worker's restart and reloads) `flush` moves what this process
/// counted into it, with each module's per-minute series. The nginx module
/// flushes every step on each worker's 250 ms timer, before it reads the
/// table, when a worker exits, and when a configuration is dropped; a
/// worker killed outright loses what it counted since its last flush.
#[derive(Debug, Default)]
pub struct Counters {
    /// Names the step in the shared table: zone, position and module.
    key: u64,
    /// Where its module's per-minute series keys start.
    series_base: u64,
    /// The kill switches that concern the step: its module in its zone, and
    /// its module everywhere.
    zone_kill: u64,
    module_kill: u64,
    /// Counted in this process and not yet flushed to the shared table
    /// (everything, while there is none).
    local: [AtomicU64; Count::ALL.len()],
    /// Set by `add`, cleared by `flush`: a flush of many steps skips the
    /// ones that counted nothing.
    dirty: AtomicBool,
    local_kill: AtomicU64,
    shared: OnceLock<&'static CounterTable<'static>>,
}

impl Drop for Counters {
    /// A configuration replaced (by a live apply or a reload) keeps what
    /// this process counted on it.
    fn drop(&mut self) {
        if self.shared.get().is_none() {
            return;
        }
        // Whatever another thread left unmarked: every count goes.
        self.dirty.store(true, Ordering::Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.flush(now);
    }
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

/// Which implementation a latency was measured on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impl {
    Lua = 0,
    Rust = 1,
}

impl Impl {
    pub fn name(self) -> &'static str {
        match self {
            Impl::Lua => "lua",
            Impl::Rust => "rust",
        }
    }

    pub fn from_code(code: i32) -> Option<Impl> {
        match code {
            0 => Some(Impl::Lua),
            1 => Some(Impl::Rust),
            _ => None,
        }
    }
}

/// Upper bounds of the latency buckets, in microseconds (then +Inf).
pub const LATENCY_BUCKETS_US: [u64; 11] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000];

/// Counters one step may use in the shared table: one per [`Count`], and
/// per implementation the time its sampled calls took and how many.
pub const KEYS_PER_STEP: usize = Count::ALL.len() + 2 * 2;

/// Counters each module uses in the shared table beyond its steps': per
/// implementation, its latency histogram (the buckets, +Inf and the sum,
/// summed over its zones), and its per-minute series.
pub const KEYS_PER_MODULE: usize =
    2 * (LATENCY_BUCKETS_US.len() + 2) + SERVED.len() * SERIES_MINUTES as usize;

/// Minutes a module's time series keeps (a ring of per-minute counts, per
/// module, summed over its zones and every worker).
pub const SERIES_MINUTES: u64 = 16;
/// The paths that serve a request at a step (the `path` of
/// `graft_requests_total`, and what the time series count).
pub const SERVED: [Count; 6] = [
    Count::Lua,
    Count::Rust,
    Count::Fallback,
    Count::ShadowMatch,
    Count::ShadowDiff,
    Count::Failed,
];

/// Where a module's series keys start: one hash of its name, made once
/// per step at load (not per request).
fn series_base(module: &str) -> u64 {
    let mut h = DefaultHasher::new();
    ("series", module).hash(&mut h);
    h.finish()
}

/// A 64-bit mixer (splitmix64's finalizer): derives the keys of one step
/// or module from its base hash with a few operations per request.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn series_key(base: u64, what: Count, minute: u64) -> u64 {
    mix(base ^ ((u64::from(what as u8) << 8) | (minute % SERIES_MINUTES)))
}

/// A module's count of `what` in each of the `n` minutes up to the one
/// holding `now_secs`, oldest first.
pub fn series(
    table: &CounterTable<'_>,
    module: &str,
    what: Count,
    now_secs: u64,
    n: u64,
) -> Vec<u64> {
    let now = now_secs / 60;
    (0..n.min(SERIES_MINUTES))
        .rev()
        .map(|back| {
            let minute = now.saturating_sub(back);
            table.get_in_minute(series_key(series_base(module), what, minute), minute)
        })
        .collect()
}

fn latency_key(base: u64, imp: Impl, bucket: u64) -> u64 {
    const LATENCY: u64 = 0x6C61_7465_6E63_7900; // "latency"
    mix(base ^ LATENCY ^ (u64::from(imp as u8) << 48) ^ bucket.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// A module's latency histogram for one implementation, summed over its
/// zones and every worker.
pub fn module_latency(table: &CounterTable<'_>, module: &str, imp: Impl) -> Latency {
    let base = series_base(module);
    let mut buckets = Vec::with_capacity(LATENCY_BUCKETS_US.len() + 1);
    let mut count = 0;
    for (i, &b) in LATENCY_BUCKETS_US.iter().enumerate() {
        let n = table.get(latency_key(base, imp, i as u64));
        count += n;
        buckets.push((b as f64 / 1e6, n));
    }
    let n = table.get(latency_key(base, imp, LATENCY_BUCKETS_US.len() as u64));
    count += n;
    buckets.push((f64::INFINITY, n));
    Latency {
        sum_secs: table.get(latency_key(base, imp, u64::MAX)) as f64 / 1e9,
        count,
        buckets,
    }
}

/// A latency histogram as Prometheus wants it: sum (seconds), count, and
/// per-bucket (upper bound in seconds, count) pairs, the last +Inf.
pub struct Latency {
    pub sum_secs: f64,
    pub count: u64,
    pub buckets: Vec<(f64, u64)>,
}

/// The key of the count of graft files refused by a running nginx (on
/// reload or in a live apply), in the shared counter table.
pub fn refused_key() -> u64 {
    let mut h = DefaultHasher::new();
    ("refused",).hash(&mut h);
    h.finish()
}

/// The key of the count of admin calls refused for `reason`.
pub fn admin_refused_key(reason: crate::admin::Refusal) -> u64 {
    let mut h = DefaultHasher::new();
    ("admin_refused", reason as u8).hash(&mut h);
    h.finish()
}

/// The key of the count of requests graft-edge passed to this server:
/// `None` accepted, else refused for that reason.
pub fn edge_handoff_key(refused: Option<crate::edge::Refusal>) -> u64 {
    let mut h = DefaultHasher::new();
    ("edge_handoff", refused.map(|r| r as u8)).hash(&mut h);
    h.finish()
}

/// The key of the count of a zone's request bodies over its `max_bytes`.
pub fn body_over_key(zone: &str) -> u64 {
    let mut h = DefaultHasher::new();
    ("body_over", zone).hash(&mut h);
    h.finish()
}

/// The key of a kill switch: `zone` None for the module in every zone
/// (never the key of the `"*"` zone's own switch).
pub fn kill_key(zone: Option<&str>, module: &str) -> u64 {
    let mut h = DefaultHasher::new();
    ("kill", zone, module).hash(&mut h);
    h.finish()
}

impl Counters {
    pub fn new(zone: &str, index: usize, module: &str) -> Self {
        let mut h = DefaultHasher::new();
        (zone, index, module).hash(&mut h);
        let mut c = Counters::default();
        c.key = h.finish();
        c.series_base = series_base(module);
        c.zone_kill = kill_key(Some(zone), module);
        c.module_kill = kill_key(None, module);
        c
    }

    /// Counts in `table` from now on.
    pub fn share(&self, table: &'static CounterTable<'static>) {
        let _ = self.shared.set(table);
    }

    fn count_key(&self, what: Count) -> u64 {
        self.key ^ (u64::from(what as u8) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    /// Counts one `what`, in this process until the next `flush`.
    pub fn add(&self, what: Count) {
        self.local[what as usize].fetch_add(1, Ordering::Relaxed);
        if !self.dirty.load(Ordering::Relaxed) {
            self.dirty.store(true, Ordering::Relaxed);
        }
    }

    /// Moves what this process counted into the shared table (nothing to
    /// do without one), the paths that served into their module's series
    /// for the minute holding `now_secs`.
    pub fn flush(&self, now_secs: u64) {
        let Some(t) = self.shared.get() else {
            return;
        };
        if !self.dirty.load(Ordering::Relaxed) {
            return;
        }
        self.dirty.store(false, Ordering::Relaxed);
        let minute = now_secs / 60;
        for what in Count::ALL {
            let n = self.local[what as usize].swap(0, Ordering::Relaxed);
            if n == 0 {
                continue;
            }
            t.add(self.count_key(what), n);
            if SERVED.contains(&what) {
                t.add_in_minute(series_key(self.series_base, what, minute), minute, n);
            }
        }
    }

    /// The count of `what`: every process's flushed counts and this
    /// process's own not yet flushed.
    pub fn get(&self, what: Count) -> u64 {
        let local = self.local[what as usize].load(Ordering::Relaxed);
        match self.shared.get() {
            Some(t) => t.get(self.count_key(what)) + local,
            None => local,
        }
    }

    /// Whether a kill switch sends this step back to Lua: the zone's own,
    /// else the module's everywhere.
    pub fn kill(&self) -> Kill {
        match self.shared.get() {
            Some(t) if !t.any_switch() => Kill::Off,
            Some(t) => match t.switch(self.zone_kill) {
                0 => Kill::from_value(t.switch(self.module_kill)),
                v => Kill::from_value(v),
            },
            None => Kill::from_value(self.local_kill.load(Ordering::Relaxed)),
        }
    }

    /// Whether an operator's kill switch is thrown for this step (the
    /// zone's own, or the module's everywhere), whatever an automatic
    /// rollback did besides.
    pub fn killed_by_hand(&self) -> bool {
        match self.shared.get() {
            Some(t) if !t.any_switch() => false,
            Some(t) => [self.zone_kill, self.module_kill]
                .iter()
                .any(|&k| Kill::from_value(t.switch(k)) == Kill::Manual),
            None => Kill::from_value(self.local_kill.load(Ordering::Relaxed)) == Kill::Manual,
        }
    }

    /// The value of this step's own switch (its module in its zone), not
    /// counting the module's everywhere.
    pub fn zone_switch(&self) -> u64 {
        match self.shared.get() {
            Some(t) => t.switch(self.zone_kill),
            None => self.local_kill.load(Ordering::Relaxed),
        }
    }

    /// Throws or resets this step's own kill switch (its module in its
    /// zone). An error means the switch is NOT thrown (the shared table has
    /// no room left for it); resetting never fails.
    pub fn set_kill(&self, kill: Kill) -> Result<(), SwitchError> {
        match self.shared.get() {
            Some(t) => t.set_switch(self.zone_kill, kill as u64),
            None => {
                self.local_kill.store(kill as u64, Ordering::Relaxed);
                Ok(())
            }
        }
    }

    /// A step's total sampled time (`which` 0) and sample count (1).
    fn step_latency_key(&self, imp: Impl, which: u64) -> u64 {
        latency_key(self.key, imp, which)
    }

    /// Records how long one implementation took at this step: in the
    /// step's total and count, and in its module's histogram (shared
    /// memory only: without it, latencies are not kept).
    pub fn observe(&self, imp: Impl, nanos: u64) {
        let Some(t) = self.shared.get() else {
            return;
        };
        t.add(self.step_latency_key(imp, 0), nanos);
        t.add(self.step_latency_key(imp, 1), 1);
        let micros = nanos / 1000;
        let bucket = LATENCY_BUCKETS_US
            .iter()
            .position(|&b| micros <= b)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        t.add(latency_key(self.series_base, imp, bucket as u64), 1);
        t.add(latency_key(self.series_base, imp, u64::MAX), nanos);
    }

    /// The time one implementation's sampled calls took at this step, in
    /// seconds, and how many were sampled.
    pub fn latency(&self, imp: Impl) -> (f64, u64) {
        self.shared.get().map_or((0.0, 0), |t| {
            (
                t.get(self.step_latency_key(imp, 0)) as f64 / 1e9,
                t.get(self.step_latency_key(imp, 1)),
            )
        })
    }

    pub fn to_json(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m: serde_json::Map<_, _> = Count::ALL
            .iter()
            .map(|&c| (c.name().to_string(), self.get(c).into()))
            .collect();
        m.insert("killed".into(), (self.kill() as u64).into());
        for imp in [Impl::Lua, Impl::Rust] {
            let (sum_secs, count) = self.latency(imp);
            let mean_us = if count == 0 {
                0.0
            } else {
                sum_secs * 1e6 / count as f64
            };
            m.insert(format!("{}_mean_us", imp.name()), mean_us.into());
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    fn leaked(words: usize) -> &'static CounterTable<'static> {
        crate::shared::interned_counters(CounterTable::new(Box::leak(
            (0..words).map(|_| AtomicU64::new(0)).collect(),
        )))
    }

    #[test]
    fn a_kill_switch_with_no_room_is_an_error_not_a_silent_no() {
        // Two words of switches, both taken by switches thrown elsewhere.
        let table = leaked(2 * (1 + 16));
        table.set_switch(kill_key(Some("x.com"), "waf"), 1).unwrap();
        table.set_switch(kill_key(Some("y.com"), "waf"), 1).unwrap();
        let step = Counters::new("a.com", 0, "waf");
        step.share(table);
        assert_eq!(step.set_kill(Kill::Automatic), Err(SwitchError::Full));
        assert_eq!(step.kill(), Kill::Off, "refused, so not thrown");
        assert_eq!(step.set_kill(Kill::Off), Ok(()), "resetting never fails");
        table.set_switch(kill_key(Some("y.com"), "waf"), 0).unwrap();
        assert_eq!(step.set_kill(Kill::Automatic), Ok(()));
        assert_eq!(step.kill(), Kill::Automatic);
    }

    #[test]
    fn counts_reach_the_shared_table_on_flush_and_when_dropped() {
        let table = leaked(2 * 1024);
        let a = Counters::new("a.com", 0, "waf");
        a.share(table);
        a.add(Count::Rust);
        a.add(Count::Rust);
        a.add(Count::Decline);
        // This process sees its own counts at once; the table not yet.
        assert_eq!(a.get(Count::Rust), 2);
        let other = Counters::new("a.com", 0, "waf");
        other.share(table);
        assert_eq!(other.get(Count::Rust), 0);
        a.flush(600);
        assert_eq!(other.get(Count::Rust), 2, "flushed for every process");
        assert_eq!(a.get(Count::Rust), 2, "and not counted twice here");
        assert_eq!(other.get(Count::Decline), 1);
        assert_eq!(series(table, "waf", Count::Rust, 600, 1), vec![2]);
        assert_eq!(
            series(table, "waf", Count::Decline, 600, 1),
            vec![0],
            "a decline serves nothing: no series"
        );
        a.flush(600);
        assert_eq!(other.get(Count::Rust), 2, "a second flush adds nothing");
        a.add(Count::Fallback);
        drop(a);
        assert_eq!(other.get(Count::Fallback), 1, "dropped counters flush");
    }

    #[test]
    fn step_counters_filling_the_table_leave_the_kill_switches_room() {
        let table = leaked(2 * (1 + 32));
        let steps: Vec<_> = (0..200)
            .map(|i| Counters::new(&format!("z{i}.com"), 0, "waf"))
            .collect();
        for s in &steps {
            s.share(table);
            for c in Count::ALL {
                s.add(c);
            }
            s.flush(0);
        }
        assert!(table.lost() > 0, "the table is full of counters");
        assert_eq!(steps[7].set_kill(Kill::Manual), Ok(()));
        assert_eq!(steps[7].kill(), Kill::Manual);
        assert_eq!(steps[8].kill(), Kill::Off);
        let module_wide = kill_key(None, "waf");
        assert_eq!(table.set_switch(module_wide, Kill::Manual as u64), Ok(()));
        assert_eq!(steps[8].kill(), Kill::Manual);
    }
}
