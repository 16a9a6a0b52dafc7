//! What every request of graft-edge shares: the configuration serving,
//! its tables, each zone's origin, and graft-edge's own counts.
//!
//! nginx maps its counter and window tables in shared memory because its
//! workers are processes; graft-edge's workers are threads of one process,
//! so the same tables ([`CounterTable`], [`WindowTable`]) live in its own
//! memory, made once at start. graft-edge's own counts (requests per zone,
//! requests passed to FL1 per step and reason) are keys of the same
//! counter table: they outlive a new configuration as the steps' do.
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use graft_engine::shared::{CounterTable, WindowTable};
use graft_engine::Config;

use crate::settings::Settings;

/// Words of the window table (rate limits, rollback): nginx's default
/// `graft_shared_memory` second size, 4m.
const WINDOW_WORDS: usize = 4 * 1024 * 1024 / 8;

/// Why a request went to FL1 from a step: the engine's reasons
/// (`HandOver::name`), and `phase`: the step has a phase graft-edge does
/// not run yet (a response body's, the log's), so FL1 serves it.
pub const REASONS: [&str; 5] = ["mode", "decline", "error", "panic", "phase"];

/// The index of a reason's name in [`REASONS`].
pub fn reason_index(name: &str) -> usize {
    REASONS.iter().position(|r| *r == name).unwrap_or(0)
}

fn key(parts: impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    ("graft_edge", parts).hash(&mut h);
    h.finish()
}

/// One zone's keys in the counter table, made once per configuration.
pub struct ZoneKeys {
    pub requests: u64,
    pub fl1_unreachable: u64,
    /// Per step, per reason.
    pub passed: Vec<[u64; REASONS.len()]>,
}

/// A configuration with what graft-edge adds to it.
pub struct Snapshot {
    pub config: Arc<Config>,
    /// Per zone (by index), its origin.
    pub origins: Vec<SocketAddr>,
    pub keys: Vec<ZoneKeys>,
}

/// graft-edge, shared by every request.
pub struct Edge {
    pub settings: Settings,
    /// The keys of requests for a Host no zone serves.
    pub unzoned: ZoneKeys,
    pub snapshot: Arc<Snapshot>,
    pub counters: CounterTable<'static>,
    pub windows: WindowTable<'static>,
}

/// The keys of requests for a Host no zone serves (zone `""` in the
/// metrics: no zone of graft's has an empty name).
pub fn unzoned_keys() -> ZoneKeys {
    zone_keys("", &[])
}

fn zone_keys(zone: &str, steps: &[graft_engine::Step]) -> ZoneKeys {
    ZoneKeys {
        requests: key(("requests", zone)),
        fl1_unreachable: key(("fl1_unreachable", zone)),
        passed: steps
            .iter()
            .enumerate()
            .map(|(i, s)| REASONS.map(|r| key(("passed", zone, i, s.module_name, r))))
            .collect(),
    }
}

impl Edge {
    /// graft-edge serving `config` with `settings` (the origins checked).
    pub fn new(settings: Settings, config: Config) -> Result<Edge, String> {
        let counters = CounterTable::new(counter_words(&config)?);
        let windows = WindowTable::new(leak_words(WINDOW_WORDS));
        config.attach(counters, windows);
        config.mark_started(now_ms());
        let snapshot = Arc::new(Snapshot::new(&settings, config)?);
        Ok(Edge {
            settings,
            unzoned: unzoned_keys(),
            snapshot,
            counters,
            windows,
        })
    }

    pub fn add(&self, key: u64) {
        self.counters.add(key, 1);
    }
}

impl Snapshot {
    fn new(settings: &Settings, config: Config) -> Result<Snapshot, String> {
        let mut origins = Vec::with_capacity(config.zones.len());
        let mut keys = Vec::with_capacity(config.zones.len());
        for zone in &config.zones {
            origins.push(
                settings
                    .origin_of(&zone.name)
                    .ok_or_else(|| format!("zone \"{}\" has no origin", zone.name))?,
            );
            keys.push(zone_keys(&zone.name, &zone.steps));
        }
        Ok(Snapshot {
            config: Arc::new(config),
            origins,
            keys,
        })
    }
}

/// Zeroed words that live as long as the process, as nginx's shared
/// memory does.
fn leak_words(n: usize) -> &'static [AtomicU64] {
    Box::leak((0..n).map(|_| AtomicU64::new(0)).collect())
}

/// The counter table for `config`: twice the smallest that the engine's
/// own check accepts (`Config::fits`), for graft-edge's keys beside the
/// steps' (fewer than half as many) and room to spare.
fn counter_words(config: &Config) -> Result<&'static [AtomicU64], String> {
    let mut words = 1024;
    loop {
        let probe: Vec<AtomicU64> = (0..words).map(|_| AtomicU64::new(0)).collect();
        if config.fits(&CounterTable::new(&probe)).is_ok() {
            return Ok(leak_words(words * 2));
        }
        if words >= 1 << 31 {
            return Err(
                "the configuration needs more counters than graft-edge makes room for".into(),
            );
        }
        words *= 2;
    }
}

pub fn now_secs() -> u64 {
    now_ms() / 1000
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
