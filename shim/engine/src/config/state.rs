//! What a configuration keeps in the tables every worker shares: its
//! steps' counts and kill switches, the admin API's and the hand-offs'
//! counts, the fleet agent's report, when nginx and its workers started;
//! and the thresholds that kill a step's kill switch by themselves.
use std::collections::BTreeMap;

use graft_contract::Windows;

use super::Config;
use crate::counters::{kill_key, Kill};
use crate::error::{Error, ErrorKind};
use crate::shared::{CounterTable, WindowTable};
use crate::{registry, Counters};

impl Config {
    /// Checks that the shared counter table holds every counter this
    /// configuration's steps may use, with room to spare (a table fuller
    /// than three quarters starts losing counts to its probe limit).
    pub fn fits(&self, counters: &CounterTable<'_>) -> Result<(), Error> {
        let steps: usize = self.zones.iter().map(|z| z.steps.len()).sum();
        let modules: std::collections::HashSet<_> = self
            .zones
            .iter()
            .flat_map(|z| z.steps.iter().map(|s| s.module_name))
            .collect();
        let needed = steps * crate::counters::KEYS_PER_STEP
            + modules.len() * crate::counters::KEYS_PER_MODULE;
        let room = counters.capacity() / 4 * 3;
        if needed > room {
            return Err(Error::new(ErrorKind::Capacity, format!(
                "{steps} steps need {needed} shared counters, over the {room} that graft_shared_memory makes room for: raise it (a restart applies it)"
            )));
        }
        Ok(())
    }

    /// Counts every step in the tables every worker shares from now on.
    pub fn attach(&self, counters: CounterTable<'static>, windows: WindowTable<'static>) {
        let _ = self.shared.set(counters);
        let _ = self.windows.set(windows);
        let (counters, windows) = (
            crate::shared::interned_counters(counters),
            crate::shared::interned_windows(windows),
        );
        for step in self.zones.iter().flat_map(|z| &z.steps) {
            step.counters.share(counters);
            let _ = step.windows.set(windows);
        }
    }

    /// Moves what this process counted on every step into the shared
    /// table (see `Counters::flush`).
    pub fn flush_counts(&self, now_secs: u64) {
        for step in self.zones.iter().flat_map(|z| &z.steps) {
            step.counters.flush(now_secs);
        }
    }
    /// A module's latency histogram for one implementation (empty without
    /// a shared table).
    pub fn module_latency(&self, module: &str, imp: crate::Impl) -> crate::counters::Latency {
        match self.shared.get() {
            Some(t) => crate::counters::module_latency(t, module, imp),
            None => crate::counters::Latency {
                sum_secs: 0.0,
                count: 0,
                buckets: Vec::new(),
            },
        }
    }

    /// Counts that found no room in the shared table (0 unless the table
    /// is too small for the configuration).
    pub fn counters_lost(&self) -> u64 {
        self.shared.get().map_or(0, CounterTable::lost)
    }
    /// Counts a request of `zone` whose body was longer than the zone's
    /// `max_bytes` (in the shared table at once: it is rare).
    pub fn count_body_over(&self, zone: &str) {
        if let Some(t) = self.shared.get() {
            t.add(crate::counters::body_over_key(zone), 1);
        }
    }
    /// Counts an admin call refused (`crate::admin`), in every worker's view.
    pub fn count_admin_refused(&self, reason: crate::admin::Refusal) {
        if let Some(t) = self.shared.get() {
            t.add(crate::counters::admin_refused_key(reason), 1);
        }
    }

    /// Admin calls refused for `reason` since nginx started.
    pub fn admin_refused(&self, reason: crate::admin::Refusal) -> u64 {
        self.shared
            .get()
            .map_or(0, |t| t.get(crate::counters::admin_refused_key(reason)))
    }

    /// Counts a request with a `Graft-Edge` header: accepted (`None`), or
    /// refused for that reason (`crate::edge`).
    pub fn count_edge_handoff(&self, refused: Option<crate::edge::Refusal>) {
        if let Some(t) = self.shared.get() {
            t.add(crate::counters::edge_handoff_key(refused), 1);
        }
    }

    /// Requests with a `Graft-Edge` header since nginx started, accepted
    /// (`None`) or refused for that reason.
    pub fn edge_handoffs(&self, refused: Option<crate::edge::Refusal>) -> u64 {
        self.shared
            .get()
            .map_or(0, |t| t.get(crate::counters::edge_handoff_key(refused)))
    }

    /// Requests of `zone` whose body was longer than its `max_bytes`.
    pub fn bodies_over(&self, zone: &str) -> u64 {
        self.shared
            .get()
            .map_or(0, |t| t.get(crate::counters::body_over_key(zone)))
    }

    /// Stores a fleet agent's report (`name=value&...`, see [`crate::fleet_report`])
    /// for every worker's metrics; a report refused stores nothing.
    pub fn fleet_report(&self, report: &str, now_secs: u64) -> Result<(), String> {
        let fields = crate::fleet_report::parse(report)?;
        let table = self.shared.get().ok_or("no shared memory")?;
        crate::fleet_report::store(table, &fields, now_secs);
        Ok(())
    }

    /// The last fleet report, if an agent ever sent one.
    pub fn fleet(&self) -> Option<crate::fleet_report::Stored> {
        crate::fleet_report::read(self.shared.get()?)
    }

    /// Marks the time this nginx started, the first time a configuration
    /// is attached to its shared table (in the master, before the workers
    /// fork): a reload keeps it.
    pub fn mark_started(&self, now_ms: u64) {
        if let Some(t) = self.shared.get() {
            if t.get(crate::fleet_report::started_key()) == 0 {
                t.set(crate::fleet_report::started_key(), now_ms);
            }
        }
    }

    /// When this nginx started (Unix milliseconds), 0 if unknown.
    pub fn started_ms(&self) -> u64 {
        self.shared
            .get()
            .map_or(0, |t| t.get(crate::fleet_report::started_key()))
    }

    /// Counts a worker process started by the master's `cycle` (a number
    /// each configuration the master read has its own), which runs
    /// `workers` of them: one started past those is a worker started
    /// again after one died; a reload's new workers are a new cycle's.
    pub fn count_worker_start(&self, cycle: u64, workers: u64) {
        if let Some(t) = self.shared.get() {
            t.add(crate::fleet_report::worker_starts_key(), 1);
            let key = crate::fleet_report::cycle_workers_key();
            t.add_in_minute(key, cycle, 1);
            if t.get_in_minute(key, cycle) > workers {
                t.add(crate::fleet_report::worker_restarts_key(), 1);
            }
        }
    }

    /// Worker processes started again after one died, since nginx started.
    pub fn worker_restarts(&self) -> u64 {
        self.shared
            .get()
            .map_or(0, |t| t.get(crate::fleet_report::worker_restarts_key()))
    }

    /// Worker processes started since the shared table was mapped (nginx's
    /// start): each reload starts its workers, and so does a restart after
    /// a worker died.
    pub fn worker_starts(&self) -> u64 {
        self.shared
            .get()
            .map_or(0, |t| t.get(crate::fleet_report::worker_starts_key()))
    }

    /// Graft files a running nginx refused (on reload or in a live apply)
    /// since it started.
    pub fn configurations_refused(&self) -> u64 {
        self.shared
            .get()
            .map_or(0, |t| t.get(crate::counters::refused_key()))
    }

    /// Windowed counts (rate limits, rollback windows) that took over a
    /// slot still in use: the shared table is too small for the traffic.
    pub fn window_evictions(&self) -> u64 {
        self.windows.get().map_or(0, WindowTable::evictions)
    }

    /// Kills (or revives, with `Kill::Off`) `module`, in
    /// `zone` or, without one, in every zone.
    pub fn set_kill(&self, zone: Option<&str>, module: &str, kill: Kill) -> Result<(), Error> {
        let not_found = |what: String| Error::new(ErrorKind::NotFound, what);
        let not_stored = |e| Error::with_source(ErrorKind::Switch, "", e);
        if registry::factory(module).is_none() {
            return Err(not_found(format!("no module \"{module}\"")));
        }
        match zone {
            Some(z) => {
                let steps: Vec<_> = self
                    .zone_named(z)
                    .map(|i| &self.zones[i])
                    .into_iter()
                    .flat_map(|zone| zone.steps.iter())
                    .filter(|s| s.module_name == module)
                    .collect();
                if steps.is_empty() {
                    // A switch outlives the configuration it was killed
                    // in (it is keyed by zone and module names): reviving
                    // one whose zone or step a later configuration dropped
                    // clears it, so that it cannot come back with them.
                    if kill == Kill::Off {
                        if let Some(t) = self.shared.get() {
                            t.set_switch(kill_key(Some(z), module), 0)
                                .map_err(not_stored)?;
                        }
                        return Ok(());
                    }
                    return Err(not_found(match self.zone_named(z) {
                        Some(_) => format!("zone \"{z}\" has no module \"{module}\""),
                        None => format!("no zone \"{z}\""),
                    }));
                }
                for s in steps {
                    s.counters.set_kill(kill).map_err(not_stored)?;
                }
            }
            None => match self.shared.get() {
                Some(t) => t
                    .set_switch(kill_key(None, module), kill as u64)
                    .map_err(not_stored)?,
                None => {
                    return Err(Error::new(
                        ErrorKind::Capacity,
                        "no shared memory for kill switches",
                    ))
                }
            },
        }
        Ok(())
    }

    /// The modules killed (1 by an operator, 2 by a rollback), as
    /// this configuration can name them: each registered module's in
    /// every zone, and each of its zones' own for the modules it has.
    /// What a fleet agent checks its switches against.
    pub fn switches_killed(&self) -> BTreeMap<(&'static str, Option<&str>), u64> {
        let mut killed = BTreeMap::new();
        let Some(t) = self.shared.get() else {
            return killed;
        };
        if !t.any_switch() {
            return killed;
        }
        for module in registry::names() {
            let v = t.switch(kill_key(None, module));
            if v != 0 {
                killed.insert((module, None), v);
            }
        }
        for zone in &self.zones {
            for step in &zone.steps {
                let v = step.counters.zone_switch();
                if v != 0 {
                    killed.insert((step.module_name, Some(zone.name.as_str())), v);
                }
            }
        }
        killed
    }

    /// The counters of every step, as JSON.
    pub fn counters_json(&self, now_secs: u64) -> String {
        self.counters_value(now_secs).to_string()
    }

    /// The counters of every step, and each module's time series over the
    /// last ten minutes (`series`: per module, per count, oldest first).
    pub fn counters_value(&self, now_secs: u64) -> serde_json::Value {
        let zones: serde_json::Map<_, _> = self
            .zones
            .iter()
            .map(|z| {
                let steps: Vec<_> = z
                    .steps
                    .iter()
                    .map(|s| {
                        let mut m = s.counters.to_json();
                        m.insert("module".into(), s.module_name.into());
                        m.insert("mode".into(), s.mode.name().into());
                        if let Some(b) = &s.budget {
                            m.insert("budget_us".into(), b.us.into());
                        }
                        serde_json::Value::Object(m)
                    })
                    .collect();
                (z.name.clone(), steps.into())
            })
            .collect();
        let mut series = serde_json::Map::new();
        if let Some(table) = self.shared.get() {
            for step in self.zones.iter().flat_map(|z| &z.steps) {
                if series.contains_key(step.module_name) {
                    continue;
                }
                let counts: serde_json::Map<_, _> = crate::counters::SERVED
                    .iter()
                    .map(|&what| {
                        let values =
                            crate::counters::series(table, step.module_name, what, now_secs, 10);
                        (what.name().to_string(), values.into())
                    })
                    .collect();
                series.insert(step.module_name.to_string(), counts.into());
            }
        }
        let mut value =
            serde_json::json!({ "generation": self.generation, "zones": zones, "series": series });
        if let Some((reported, fields)) = self.fleet() {
            let mut fleet: serde_json::Map<_, _> = fields
                .into_iter()
                .map(|(name, _, v)| (name.to_string(), v.into()))
                .collect();
            fleet.insert("reported".into(), reported.into());
            value["fleet"] = fleet.into();
        }
        value
    }
}

/// The test behind a step's rollback and behind its budget's `max_rate`:
/// more than `max_rate` of the events of the last `window` seconds were
/// bad, once at least `min_events` were seen. Counted in the window table
/// every worker shares, under the step's window key followed by one
/// letter for every event and one for the bad ones: each threshold has
/// its own two, so that a step's two thresholds never share a count.
pub(crate) struct Threshold {
    pub max_rate: f64,
    pub min_events: u64,
    pub window: u32,
    /// The letters of its window keys: every event, the bad ones.
    pub keys: [u8; 2],
}

/// What a threshold counted in its window, this event included.
pub(crate) struct Tally {
    pub events: u64,
    pub bad: u64,
    /// The share of bad events is over the threshold.
    pub crossed: bool,
}

impl Threshold {
    /// A rollback's letters: requests (`t`), the ones that went wrong (`b`).
    pub const ROLLBACK_KEYS: [u8; 2] = [b't', b'b'];
    /// A budget's letters: Rust calls (`C`), the ones over the budget (`O`).
    pub const BUDGET_KEYS: [u8; 2] = [b'C', b'O'];

    /// Counts one event, bad or not, under `step_key`.
    pub fn count(
        &self,
        windows: &WindowTable<'_>,
        step_key: &[u8],
        bad: bool,
        now_secs: u64,
    ) -> Tally {
        let mut key = step_key.to_vec();
        key.push(self.keys[0]);
        let events = windows.incr(&key, self.window, now_secs);
        key.pop();
        key.push(self.keys[1]);
        let bad = if bad {
            windows.incr(&key, self.window, now_secs)
        } else {
            windows.get(&key, self.window, now_secs)
        };
        Tally {
            events,
            bad,
            crossed: events >= self.min_events && (bad as f64) > self.max_rate * events as f64,
        }
    }

    /// Kills a step's kill switch as a rollback, unless it is killed
    /// already: the reason (`Ok`, with `why` the threshold crossed), or why
    /// it could not be killed (`Err`: the step goes on in its mode).
    pub fn kill(
        counters: &Counters,
        why: impl FnOnce() -> String,
    ) -> Option<Result<String, String>> {
        if counters.kill() != Kill::Off {
            return None;
        }
        let why = why();
        Some(match counters.set_kill(Kill::Automatic) {
            Ok(()) => Ok(format!("rolled back to lua: {why}")),
            Err(e) => Err(format!("could not roll back to lua ({why}): {e}")),
        })
    }
}
