//! What every request of graft-edge shares: the configuration serving,
//! its tables, each zone's origin, and graft-edge's own counts.
//!
//! nginx maps its counter and window tables in shared memory because its
//! workers are processes; graft-edge's workers are threads of one process,
//! so the same tables ([`CounterTable`], [`WindowTable`]) live in its own
//! memory, made once at start. graft-edge's own counts (requests per zone,
//! requests passed to FL1 per step and reason) are keys of the same
//! counter table: they outlive a new configuration as the steps' do.
//!
//! The configuration serving is swapped whole by a live apply
//! ([`Edge::swap`]): a request holds the [`Serving`] it started with to
//! its end, and a configuration attached to the same tables takes over
//! the counts, windows and kill switches of the steps it keeps (they are
//! keyed by zone, place and module names), as nginx's live apply does.
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, Weak};

use arc_swap::ArcSwap;
use graft_engine::shared::{CounterTable, WindowTable};
use graft_engine::Config;

use crate::access_log::AccessLog;
use crate::connections::Limit;
use crate::settings::Settings;

/// Why a request went to FL1 from a step: the engine's reasons
/// (`HandOver::name`). graft-edge runs every phase a module has, so none
/// goes to FL1 for a phase graft-edge lacks.
pub const REASONS: [&str; 4] = ["mode", "decline", "error", "panic"];

/// The statuses of the requests graft-edge refuses before any step, as
/// nginx does before any phase (`request::refused_head`, `Facts::of`).
pub const REFUSED: [u16; 3] = [400, 405, 414];

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
pub struct Serving {
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
    /// The configuration serving (see [`Edge::serving`]).
    serving: ArcSwap<Serving>,
    /// Configurations replaced that requests in flight still hold: what
    /// they count is flushed on every tick until the last one lets go.
    retired: Mutex<Vec<Weak<Serving>>>,
    pub counters: CounterTable<'static>,
    pub windows: WindowTable<'static>,
    /// The access log, when the settings name one (opened at start).
    pub access_log: Option<AccessLog>,
    /// The client connections open, within `limits.max_connections`.
    pub connections: Arc<Limit>,
}

/// The keys of requests for a Host no zone serves (zone `""` in the
/// metrics: no zone of graft's has an empty name).
pub fn unzoned_keys() -> ZoneKeys {
    zone_keys("", &[])
}

/// The key of the requests refused with `status` before any step.
pub fn refused_key(status: u16) -> u64 {
    key(("refused", status))
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
        let words =
            CounterTable::words_for(settings.tables.counter_bytes).max(counter_words(&config)?);
        let counters = CounterTable::new(leak_words(words));
        let windows = WindowTable::new(leak_words((settings.tables.window_bytes / 8).max(64)));
        config.attach(counters, windows);
        config.mark_started(now_ms());
        let first = Serving::new(&settings, config)?;
        let connections = Arc::new(Limit::new(settings.limits.max_connections));
        Ok(Edge {
            settings,
            unzoned: unzoned_keys(),
            serving: ArcSwap::from_pointee(first),
            retired: Mutex::new(Vec::new()),
            counters,
            windows,
            access_log: None,
            connections,
        })
    }

    /// The configuration serving now. A request keeps the one it took to
    /// its end, whatever a live apply swaps in meanwhile.
    pub fn serving(&self) -> Arc<Serving> {
        self.serving.load_full()
    }

    /// Serves `config` from now on (checked, and attached to this
    /// graft-edge's tables): the one it replaces is flushed now, and on
    /// every tick while requests hold it.
    pub fn swap(&self, config: Config) -> Result<(), String> {
        let next = Serving::new(&self.settings, config)?;
        let old = self.serving.swap(Arc::new(next));
        old.config.flush_counts(now_secs());
        if Arc::strong_count(&old) > 1 {
            lock(&self.retired).push(Arc::downgrade(&old));
        }
        Ok(())
    }

    /// Moves what the threads counted on the steps, of the configuration
    /// serving and of those requests still hold, into the counter table.
    pub fn flush(&self, now_secs: u64) {
        self.serving.load().config.flush_counts(now_secs);
        lock(&self.retired).retain(|weak| match weak.upgrade() {
            Some(snap) => {
                snap.config.flush_counts(now_secs);
                true
            }
            None => false,
        });
    }

    pub fn add(&self, key: u64) {
        self.counters.add(key, 1);
    }

    /// Counts a request refused with `status` before any step.
    pub fn refused(&self, status: u16) {
        self.add(refused_key(status));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Serving {
    fn new(settings: &Settings, config: Config) -> Result<Serving, String> {
        // A graft file, even one from a fleet's store, never chooses where
        // graft-edge writes: only under the settings' log_dirs.
        config
            .check_files_under(&settings.log_dirs, "log_dirs", "graft-edge's settings")
            .map_err(|e| {
                format!(
                    "{}: {e} ({}: field \"log_dirs\")",
                    config.source.display(),
                    settings.source.display()
                )
            })?;
        let mut origins = Vec::with_capacity(config.zones.len());
        let mut keys = Vec::with_capacity(config.zones.len());
        for zone in &config.zones {
            origins.push(settings.origin_of(&zone.name).ok_or_else(|| {
                format!(
                    "zone \"{}\" has no origin in {}, and there is no \"{}\"",
                    zone.name,
                    settings.source.display(),
                    crate::settings::DEFAULT_ORIGIN
                )
            })?);
            keys.push(zone_keys(&zone.name, &zone.steps));
        }
        Ok(Serving {
            config: Arc::new(config),
            origins,
            keys,
        })
    }
}

impl Drop for Serving {
    /// The last request on a replaced configuration keeps what it counted.
    fn drop(&mut self) {
        self.config.flush_counts(now_secs());
    }
}

/// Zeroed words that live as long as the process, as nginx's shared
/// memory does: the allocator's zeroed pages, so that words never used
/// cost no memory (a table is sized for the largest configuration a
/// live apply may bring).
fn leak_words(n: usize) -> &'static [AtomicU64] {
    Box::leak(bytemuck::allocation::zeroed_slice_box::<AtomicU64>(n))
}

/// The smallest counter table the engine's own check accepts for `config`
/// (`Config::fits`), doubled for graft-edge's keys beside the steps'
/// (fewer than half as many) and room to spare.
fn counter_words(config: &Config) -> Result<usize, String> {
    let mut words = 1024;
    loop {
        let probe: Vec<AtomicU64> = (0..words).map(|_| AtomicU64::new(0)).collect();
        if config.fits(&CounterTable::new(&probe)).is_ok() {
            return Ok(words * 2);
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
