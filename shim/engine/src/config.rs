//! graft's configuration: zones (hosts), each with an ordered list of
//! modules, each in a mode with its own configuration.
//!
//! ```json
//! { "zones": {
//!     "example.com": { "modules": [
//!         { "module": "redirects", "mode": "shadow",
//!           "config": { "rules": [ { "from": "/old", "to": "/new" } ] } } ] },
//!     "*": { "modules": [] } } }
//! ```
//!
//! A step in mode `canary` also has `"percent"` (0 to 100) and `"sticky"`
//! (`"client"`, the default, or `"header:<name>"`).
//!
//! The zone `"*"` serves hosts no other zone names. A file is parsed and
//! validated whole before anything uses it: an error names the file, zone,
//! module and field, and nothing of the file is applied.
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use graft_contract::{
    parse_config, Changes, ConfigError, Decision, FailurePolicy, Module, RequestView, Response,
    Windows,
};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::counters::{kill_key, Kill};
use crate::error::{Error, ErrorKind};
use crate::shared::{CounterTable, WindowTable};
use crate::{registry, Count, Counters};

/// Limits checked at load; a file over one is refused with the limit named.
pub const MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;
pub const MAX_ZONES: usize = 100_000;
pub const MAX_MODULES_PER_ZONE: usize = 64;
pub const DEFAULT_ZONE: &str = "*";

/// How a step serves requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The legacy Lua implementation only.
    Lua,
    /// The Rust implementation; Lua serves a request Rust declines, fails or panics on.
    Rust,
    /// Both run; Lua's decision is served and the two are compared.
    Shadow,
    /// A sticky share of clients on Rust (as `rust`), the others on Lua.
    Canary,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Lua => "lua",
            Mode::Rust => "rust",
            Mode::Shadow => "shadow",
            Mode::Canary => "canary",
        }
    }
}

/// One module of a zone, in its mode.
pub struct Step {
    pub module_name: &'static str,
    pub mode: Mode,
    pub canary: Option<Box<Canary>>,
    pub rollback: Option<Box<Rollback>>,
    /// How long one Rust call may take, and when too many calls over it
    /// send the step back to Lua.
    pub budget: Option<Box<Budget>>,
    /// What the step does with a request it cannot decide.
    pub on_failure: FailurePolicy,
    pub module: Box<dyn Module>,
    pub counters: Counters,
    /// Windowed counters every worker shares, for the rollback.
    windows: OnceLock<&'static WindowTable<'static>>,
    /// The window keys of its rollback and its budget's threshold start
    /// with this (empty without either).
    window_key: Box<[u8]>,
}

/// When to send a step back to Lua by itself: more than `max_rate` of the
/// requests it saw in the last `window` seconds went wrong (a fallback in
/// `rust` or `canary`, a difference in `shadow`), once at least
/// `min_requests` were seen.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    pub max_rate: f64,
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
    #[serde(default = "default_window")]
    pub window: u32,
}

/// A time budget for one call of the step's Rust side, in microseconds
/// (`us`). A call over it is counted (`over_budget`) and logged, and is
/// still served: the budget judges the step, not the request. With
/// `max_rate`, the step rolls itself back to Lua when more than that share
/// of its Rust calls in the last `window` seconds went over it, once at
/// least `min_requests` calls were made.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    pub us: u64,
    #[serde(default)]
    pub max_rate: Option<f64>,
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
    #[serde(default = "default_window")]
    pub window: u32,
}

/// The longest budget a step may have: ten seconds.
pub const MAX_BUDGET_US: u64 = 10_000_000;

impl Budget {
    fn check(&self) -> Result<(), ConfigError> {
        if !(1..=MAX_BUDGET_US).contains(&self.us) {
            return Err(ConfigError::new(
                "budget.us",
                format!("{} is not a time from 1 to {MAX_BUDGET_US} µs", self.us),
            ));
        }
        // A share of 1 could never be crossed: no more calls go over the
        // budget than are made.
        if self.max_rate.is_some_and(|r| !(0.0..1.0).contains(&r)) {
            return Err(ConfigError::new(
                "budget.max_rate",
                "is a share from 0 up to (not including) 1",
            ));
        }
        if self.window == 0 || self.window > 86_400 {
            return Err(ConfigError::new(
                "budget.window",
                "is seconds from 1 to 86400",
            ));
        }
        Ok(())
    }
}

/// A Rust call that went over its step's budget: the budget, and when
/// the call sent the step back to Lua, why (`Ok`) or why it could not
/// (`Err`).
#[derive(Debug, PartialEq)]
pub struct OverBudget {
    pub budget_us: u64,
    pub rollback: Option<Result<String, String>>,
}

fn default_min_requests() -> u64 {
    100
}

fn default_window() -> u32 {
    60
}

impl Step {
    /// Counts what served a request at this step and, with a rollback
    /// configured, throws the step's kill switch when the share that went
    /// wrong crosses it. Returns the reason when it did (`Ok`), or why the
    /// switch could not be thrown (`Err`: the step goes on in its mode).
    pub fn record(&self, what: Count, now_secs: u64) -> Option<Result<String, String>> {
        self.counters.add(what);
        let rollback = self.rollback.as_ref()?;
        let windows = self.windows.get()?;
        let bad = matches!(what, Count::Fallback | Count::ShadowDiff);
        if !bad && !matches!(what, Count::Rust | Count::ShadowMatch) {
            return None;
        }
        let mut key = self.window_key.to_vec();
        key.push(b't');
        let total = windows.incr(&key, rollback.window, now_secs);
        key.pop();
        key.push(b'b');
        let wrong = if bad {
            windows.incr(&key, rollback.window, now_secs)
        } else {
            windows.get(&key, rollback.window, now_secs)
        };
        let crossed =
            total >= rollback.min_requests && (wrong as f64) > rollback.max_rate * total as f64;
        if crossed && self.counters.kill() == Kill::Off {
            let why = format!(
                "{wrong} of {total} requests went wrong in {} s, over {}%",
                rollback.window,
                rollback.max_rate * 100.0
            );
            return Some(match self.counters.set_kill(Kill::Automatic) {
                Ok(()) => Ok(format!("rolled back to lua: {why}")),
                Err(e) => Err(format!("could not roll back to lua ({why}): {e}")),
            });
        }
        None
    }

    /// Judges one Rust call's time against the step's budget (nothing to
    /// do without one): a call over it is counted; with a threshold, every
    /// call is counted in the budget's window and the step's kill switch is
    /// thrown when the share over it crosses the threshold.
    pub fn check_budget(&self, nanos: u64, now_secs: u64) -> Option<OverBudget> {
        let budget = self.budget.as_ref()?;
        let over = nanos > budget.us.saturating_mul(1000);
        if over {
            self.counters.add(Count::OverBudget);
        }
        let rollback = match (budget.max_rate, self.windows.get()) {
            (Some(max_rate), Some(windows)) => {
                let mut key = self.window_key.to_vec();
                key.push(b'C');
                let calls = windows.incr(&key, budget.window, now_secs);
                key.pop();
                key.push(b'O');
                let slow = if over {
                    windows.incr(&key, budget.window, now_secs)
                } else {
                    windows.get(&key, budget.window, now_secs)
                };
                let crossed =
                    over && calls >= budget.min_requests && (slow as f64) > max_rate * calls as f64;
                (crossed && self.counters.kill() == Kill::Off).then(|| {
                    let why = format!(
                        "{slow} of {calls} calls went over its time budget of {} µs in {} s, over {}%",
                        budget.us,
                        budget.window,
                        max_rate * 100.0
                    );
                    match self.counters.set_kill(Kill::Automatic) {
                        Ok(()) => Ok(format!("rolled back to lua: {why}")),
                        Err(e) => Err(format!("could not roll back to lua ({why}): {e}")),
                    }
                })
            }
            _ => None,
        };
        over.then_some(OverBudget {
            budget_us: budget.us,
            rollback,
        })
    }

    /// What the step serves for a request it cannot decide, by its
    /// failure policy.
    pub fn failure_decision(&self) -> Decision {
        match self.on_failure {
            FailurePolicy::Continue => Decision::Continue(Changes::default()),
            FailurePolicy::Respond(status) => Decision::Respond(Response {
                status,
                headers: Vec::new(),
                body: Vec::new(),
                log: Vec::new(),
            }),
        }
    }

    /// How this request is served at this step: `Lua`, `Rust` or `Shadow`
    /// (a canary step resolves to `Rust` or `Lua` for the request's client;
    /// a thrown kill switch makes it `Lua`).
    pub fn mode_for(&self, req: &dyn RequestView) -> Mode {
        if self.mode != Mode::Lua && self.counters.kill() != Kill::Off {
            return Mode::Lua;
        }
        self.configured_mode_for(req)
    }

    /// How this request is served at this step where no Lua can serve it
    /// (a location with the native pipeline alone): as [`Step::mode_for`],
    /// but an automatic rollback (a time budget's or an error rate's) does
    /// not send the step back to Lua there. With no Lua to go back to, it
    /// would send every request to the step's failure policy (a 503 for an
    /// access control), and a client able to trip the threshold (slow or
    /// big requests) would turn the control into an outage. `true` with
    /// the mode: an automatic rollback is thrown and was passed over (the
    /// caller counts and logs it). An operator's kill switch still holds.
    pub fn mode_where_no_lua(&self, req: &dyn RequestView) -> (Mode, bool) {
        match self.counters.kill() {
            Kill::Automatic if self.mode != Mode::Lua && !self.counters.killed_by_hand() => {
                (self.configured_mode_for(req), true)
            }
            _ => (self.mode_for(req), false),
        }
    }

    fn configured_mode_for(&self, req: &dyn RequestView) -> Mode {
        match (&self.mode, &self.canary) {
            (Mode::Canary, Some(c)) if c.picks_rust(req) => Mode::Rust,
            (Mode::Canary, _) => Mode::Lua,
            (mode, _) => *mode,
        }
    }
}

/// A canary's share: the same client (address, or the value of a header)
/// always lands on the same side, in every worker and across reloads.
pub struct Canary {
    pub percent: u8,
    key: StickyKey,
}

enum StickyKey {
    Client,
    Header(Vec<u8>),
}

impl Canary {
    fn parse(percent: Option<u8>, sticky: Option<&str>) -> Result<Canary, ConfigError> {
        let percent = percent
            .ok_or_else(|| ConfigError::new("percent", "a canary needs a percent, 0 to 100"))?;
        if percent > 100 {
            return Err(ConfigError::new(
                "percent",
                format!("{percent} is over 100"),
            ));
        }
        let key = match sticky.unwrap_or("client") {
            "client" => StickyKey::Client,
            s => match s.strip_prefix("header:") {
                Some(h) if !h.is_empty() => StickyKey::Header(h.as_bytes().to_vec()),
                _ => {
                    return Err(ConfigError::new(
                        "sticky",
                        "is \"client\" or \"header:<name>\"",
                    ))
                }
            },
        };
        Ok(Canary { percent, key })
    }

    pub fn picks_rust(&self, req: &dyn RequestView) -> bool {
        // DefaultHasher::new() has fixed keys: the same answer everywhere.
        let mut h = DefaultHasher::new();
        let header = match &self.key {
            StickyKey::Header(name) => req.header(name),
            StickyKey::Client => None,
        };
        match header {
            Some(v) => v.hash(&mut h),
            None => req.client_addr().hash(&mut h),
        }
        h.finish() % 100 < u64::from(self.percent)
    }
}

pub struct Zone {
    pub name: String,
    pub steps: Vec<Step>,
    /// How the zone reads request bodies, when one of its modules reads
    /// them (`None` otherwise, even with a `"body"` in the file: no body is
    /// read that no module looks at).
    pub body: Option<BodyLimit>,
    /// What the Lua side needs to build its legacy modules for this zone,
    /// serialized once at load and kept compressed (LZ4), expanded when the
    /// Lua side asks: at start, to check every zone's legacy modules, and
    /// when a worker's Lua side first serves the zone (never for a zone
    /// only native locations serve).
    plan: Box<[u8]>,
}

impl Zone {
    /// The zone's plan for the Lua side, as JSON.
    pub fn plan_json(&self) -> String {
        // Compressed by this process from a String at load: an error here
        // is a bug, and the Lua side refuses the empty plan it gets.
        match lz4_flex::decompress_size_prepended(&self.plan)
            .map_err(|e| e.to_string())
            .and_then(|bytes| String::from_utf8(bytes).map_err(|e| e.to_string()))
        {
            Ok(json) => json,
            Err(e) => {
                tracing::error!("zone \"{}\": its plan cannot be read back: {e}", self.name);
                String::new()
            }
        }
    }
}

pub struct Config {
    shared: OnceLock<CounterTable<'static>>,
    windows: OnceLock<WindowTable<'static>>,
    pub source: PathBuf,
    /// The name of the text it was parsed from ([`crate::fleet::config_hash`]):
    /// what a fleet agent compares with its keys, and what tells whether
    /// the file on disk is still this configuration
    /// ([`Config::file_unapplied`]).
    pub hash: String,
    /// Distinguishes one loaded configuration from the next in this process.
    pub generation: u64,
    pub zones: Vec<Zone>,
    by_host: HashMap<Vec<u8>, usize>,
    default_zone: Option<usize>,
}

/// The file's outer layer; each zone stays raw text until its turn, so that
/// a file of ten thousand zones is never one tree of values in memory.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig<'a> {
    #[serde(borrow)]
    zones: BTreeMap<String, &'a RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ZoneConfig {
    modules: Vec<serde_json::Value>,
    #[serde(default)]
    body: Option<BodyConfig>,
}

/// The largest `max_bytes` a zone may read of a request body.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// A zone's `"body": { "max_bytes": N, "over": "inspect" | { "respond": S } }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BodyConfig {
    max_bytes: usize,
    over: OnFailure,
}

/// How much of a request body a zone's modules read, and what a longer
/// body gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimit {
    pub max_bytes: usize,
    pub over: OverLimit,
}

/// What a request whose body is longer than the zone's `max_bytes` gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverLimit {
    /// Its first `max_bytes` are inspected (and the whole body is passed on).
    Inspect,
    /// An answer with this status, before any step runs.
    Respond(u16),
}

impl BodyConfig {
    fn limit(&self) -> Result<BodyLimit, ConfigError> {
        if !(1..=MAX_BODY_BYTES).contains(&self.max_bytes) {
            return Err(ConfigError::new(
                "body.max_bytes",
                format!(
                    "{} is not a size from 1 to {MAX_BODY_BYTES} bytes",
                    self.max_bytes
                ),
            ));
        }
        let over = match &self.over {
            OnFailure::Word(w) if w == "inspect" => OverLimit::Inspect,
            OnFailure::Respond { respond } if (400..=599).contains(respond) => {
                OverLimit::Respond(*respond)
            }
            _ => {
                return Err(ConfigError::new(
                    "body.over",
                    "is \"inspect\" (the first max_bytes) or { \"respond\": <status 400-599> }",
                ))
            }
        };
        Ok(BodyLimit {
            max_bytes: self.max_bytes,
            over,
        })
    }
}

impl BodyLimit {
    fn plan(&self) -> serde_json::Value {
        let over = match self.over {
            OverLimit::Inspect => "inspect".into(),
            OverLimit::Respond(status) => serde_json::json!({ "respond": status }),
        };
        serde_json::json!({ "max_bytes": self.max_bytes, "over": over })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepConfig {
    module: String,
    mode: Mode,
    #[serde(default = "empty_object")]
    config: serde_json::Value,
    /// Mode `canary`: the share of clients on Rust.
    #[serde(default)]
    percent: Option<u8>,
    /// Mode `canary`: what keeps a client on one side.
    #[serde(default)]
    sticky: Option<String>,
    /// Send the step back to Lua by itself when too much goes wrong.
    #[serde(default)]
    rollback: Option<Rollback>,
    /// How long one Rust call may take.
    #[serde(default)]
    budget: Option<Budget>,
    /// What to do with a request the step cannot decide; the module's
    /// default when absent.
    #[serde(default)]
    on_failure: Option<OnFailure>,
}

/// `"on_failure": "continue"` or `"on_failure": { "respond": 503 }`.
#[derive(Deserialize)]
#[serde(untagged)]
enum OnFailure {
    Word(String),
    Respond { respond: u16 },
}

impl OnFailure {
    fn policy(&self) -> Result<FailurePolicy, ConfigError> {
        match self {
            OnFailure::Word(w) if w == "continue" => Ok(FailurePolicy::Continue),
            OnFailure::Respond { respond } if (400..=599).contains(respond) => {
                Ok(FailurePolicy::Respond(*respond))
            }
            OnFailure::Respond { respond } => Err(ConfigError::new(
                "on_failure.respond",
                format!("{respond} is not a status from 400 to 599"),
            )),
            OnFailure::Word(_) => Err(ConfigError::new(
                "on_failure",
                "is \"continue\" or { \"respond\": <status 400-599> }",
            )),
        }
    }
}

/// The failure policy as the Lua side reads it in a plan.
fn policy_json(p: FailurePolicy) -> serde_json::Value {
    match p {
        FailurePolicy::Continue => "continue".into(),
        FailurePolicy::Respond(status) => serde_json::json!({ "respond": status }),
    }
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

/// A refused configuration: where (file, zone, module) and why (the
/// field and what is wrong with it).
fn refused(
    file: &Path,
    zone: Option<&str>,
    module: Option<(usize, &str)>,
    error: ConfigError,
) -> Error {
    let mut at = file.display().to_string();
    if let Some(zone) = zone {
        at.push_str(&format!(": zone \"{zone}\""));
    }
    if let Some((i, name)) = module {
        at.push_str(&format!(": module #{i} \"{name}\""));
    }
    Error::with_source(ErrorKind::Config, at, error)
}

static GENERATION: AtomicU64 = AtomicU64::new(1);

fn valid_host(host: &str) -> bool {
    host == DEFAULT_ZONE
        || (!host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._:[]".contains(&b)))
}

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, Error> {
        let err = |e: ConfigError| refused(path, None, None, e);
        let meta = std::fs::metadata(path).map_err(|e| err(ConfigError::new("", e.to_string())))?;
        if meta.len() > MAX_FILE_BYTES {
            return Err(err(ConfigError::new(
                "",
                format!(
                    "file is {} bytes, over the limit of {MAX_FILE_BYTES}",
                    meta.len()
                ),
            )));
        }
        let text = std::fs::read(path).map_err(|e| err(ConfigError::new("", e.to_string())))?;
        Config::parse(path, &text)
    }

    /// Parses and validates a configuration held in memory; `source` names it in errors.
    pub fn parse(source: &Path, text: &[u8]) -> Result<Config, Error> {
        // request_log's sampling key is drawn by the first parse (nginx's
        // master, before its workers fork), so that every worker shares it
        // even when a live apply brings the module in later.
        graft_request_log::sample_key();
        let started = std::time::Instant::now();
        let config = Config::parse_inner(source, text)?;
        tracing::info!(
            "loaded {} zones and {} steps from {} in {} ms (generation {})",
            config.zones.len(),
            config.zones.iter().map(|z| z.steps.len()).sum::<usize>(),
            source.display(),
            started.elapsed().as_millis(),
            config.generation
        );
        Ok(config)
    }

    fn parse_inner(source: &Path, text: &[u8]) -> Result<Config, Error> {
        let at = |zone: Option<&str>, module: Option<(usize, &str)>, e: ConfigError| {
            refused(source, zone, module, e)
        };
        let file = read_file(text).map_err(|e| at(None, None, e))?;
        let mut zones = Vec::with_capacity(file.zones.len());
        let mut by_host = HashMap::with_capacity(file.zones.len());
        let mut default_zone = None;
        for (host, zone_raw) in &file.zones {
            let zone = parse_zone(host, zone_raw).map_err(|(module, e)| {
                at(
                    Some(host),
                    module.as_ref().map(|(i, n)| (*i, n.as_str())),
                    e,
                )
            })?;
            let index = zones.len();
            if host == DEFAULT_ZONE {
                default_zone = Some(index);
            } else {
                by_host.insert(host.as_bytes().to_vec(), index);
            }
            zones.push(zone);
        }
        Ok(Config {
            shared: OnceLock::new(),
            windows: OnceLock::new(),
            source: source.to_path_buf(),
            hash: crate::fleet::config_hash(text),
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
            zones,
            by_host,
            default_zone,
        })
    }

    /// The zone of that name exactly (a `graft_scope`, or a Lua handler's
    /// scope): no fallback to `"*"` unless that is the name.
    pub fn zone_named(&self, name: &str) -> Option<usize> {
        if name == DEFAULT_ZONE {
            return self.default_zone;
        }
        self.by_host.get(name.as_bytes()).copied()
    }

    /// The zone serving `host`, if any (the `"*"` zone when no other names it).
    pub fn zone_index(&self, host: &[u8]) -> Option<usize> {
        self.by_host.get(host).copied().or(self.default_zone)
    }

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

    /// The modules this configuration uses, each once, in the order they
    /// first appear.
    pub fn module_names(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = Vec::new();
        for step in self.zones.iter().flat_map(|z| &z.steps) {
            if !names.contains(&step.module_name) {
                names.push(step.module_name);
            }
        }
        names
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

    /// Whether the file this configuration came from now holds another
    /// text: a reload or live apply refused it, or none was made since it
    /// changed. `None` when the file cannot be read. The file is read again
    /// only when its size or modification time moved since this process
    /// last looked.
    pub fn file_unapplied(&self) -> Option<bool> {
        static SEEN: std::sync::Mutex<Option<(PathBuf, u64, std::time::SystemTime, String)>> =
            std::sync::Mutex::new(None);
        let meta = std::fs::metadata(&self.source).ok()?;
        let (len, modified) = (meta.len(), meta.modified().ok()?);
        let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
        let hash = match &*seen {
            Some((path, l, m, h)) if *path == self.source && *l == len && *m == modified => {
                h.clone()
            }
            _ => {
                let h = crate::fleet::config_hash(&std::fs::read(&self.source).ok()?);
                *seen = Some((self.source.clone(), len, modified, h.clone()));
                h
            }
        };
        Some(hash != self.hash)
    }

    /// Counts a request of `zone` whose body was longer than the zone's
    /// `max_bytes` (in the shared table at once: it is rare).
    pub fn count_body_over(&self, zone: &str) {
        if let Some(t) = self.shared.get() {
            t.add(crate::counters::body_over_key(zone), 1);
        }
    }

    /// Checks that every file a module writes is under one of `dirs` (the
    /// directories nginx's `graft_log_dir` names): the first that is not,
    /// with its zone, module and field.
    pub fn check_files(&self, dirs: &[std::path::PathBuf]) -> Result<(), String> {
        for zone in &self.zones {
            for (i, step) in zone.steps.iter().enumerate() {
                for (field, file) in step.module.files() {
                    let path = std::path::Path::new(file);
                    if dirs.iter().any(|d| path.starts_with(d) && path != d) {
                        continue;
                    }
                    let named = match dirs {
                        [] => "nginx names none".to_string(),
                        dirs => dirs
                            .iter()
                            .map(|d| d.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", "),
                    };
                    return Err(format!(
                        "zone \"{}\": module #{i} \"{}\": field \"config.{field}\": \"{file}\" is not under a directory graft_log_dir names ({named})",
                        zone.name, step.module_name
                    ));
                }
            }
        }
        Ok(())
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

    /// Stores a fleet agent's report (`name=value&...`, see [`crate::fleet`])
    /// for every worker's metrics; a report refused stores nothing.
    pub fn fleet_report(&self, report: &str, now_secs: u64) -> Result<(), String> {
        let fields = crate::fleet::parse(report)?;
        let table = self.shared.get().ok_or("no shared memory")?;
        crate::fleet::store(table, &fields, now_secs);
        Ok(())
    }

    /// The last fleet report, if an agent ever sent one.
    pub fn fleet(&self) -> Option<crate::fleet::Report> {
        crate::fleet::read(self.shared.get()?)
    }

    /// Marks the time this nginx started, the first time a configuration
    /// is attached to its shared table (in the master, before the workers
    /// fork): a reload keeps it.
    pub fn mark_started(&self, now_ms: u64) {
        if let Some(t) = self.shared.get() {
            if t.get(crate::fleet::started_key()) == 0 {
                t.set(crate::fleet::started_key(), now_ms);
            }
        }
    }

    /// When this nginx started (Unix milliseconds), 0 if unknown.
    pub fn started_ms(&self) -> u64 {
        self.shared
            .get()
            .map_or(0, |t| t.get(crate::fleet::started_key()))
    }

    /// Counts a worker process started by the master's `cycle` (a number
    /// each configuration the master read has its own), which runs
    /// `workers` of them: one started past those is a worker started
    /// again after one died; a reload's new workers are a new cycle's.
    pub fn count_worker_start(&self, cycle: u64, workers: u64) {
        if let Some(t) = self.shared.get() {
            t.add(crate::fleet::worker_starts_key(), 1);
            let key = crate::fleet::cycle_workers_key();
            t.add_in_minute(key, cycle, 1);
            if t.get_in_minute(key, cycle) > workers {
                t.add(crate::fleet::worker_restarts_key(), 1);
            }
        }
    }

    /// Worker processes started again after one died, since nginx started.
    pub fn worker_restarts(&self) -> u64 {
        self.shared
            .get()
            .map_or(0, |t| t.get(crate::fleet::worker_restarts_key()))
    }

    /// Worker processes started since the shared table was mapped (nginx's
    /// start): each reload starts its workers, and so does a restart after
    /// a worker died.
    pub fn worker_starts(&self) -> u64 {
        self.shared
            .get()
            .map_or(0, |t| t.get(crate::fleet::worker_starts_key()))
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

    /// Throws (or resets, with `Kill::Off`) the kill switch of `module`, in
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
                    // A switch outlives the configuration it was thrown
                    // in (it is keyed by zone and module names): resetting
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

    /// The kill switches thrown (1 by an operator, 2 by a rollback), as
    /// this configuration can name them: each registered module's in
    /// every zone, and each of its zones' own for the modules it has.
    /// What a fleet agent checks its switches against.
    pub fn switches_thrown(&self) -> BTreeMap<(&'static str, Option<&str>), u64> {
        let mut thrown = BTreeMap::new();
        let Some(t) = self.shared.get() else {
            return thrown;
        };
        if !t.any_switch() {
            return thrown;
        }
        for module in registry::names() {
            let v = t.switch(kill_key(None, module));
            if v != 0 {
                thrown.insert((module, None), v);
            }
        }
        for zone in &self.zones {
            for step in &zone.steps {
                let v = step.counters.zone_switch();
                if v != 0 {
                    thrown.insert((step.module_name, Some(zone.name.as_str())), v);
                }
            }
        }
        thrown
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

/// The file's outer shape: valid JSON, an object of zones, within the
/// zone limit. The zones stay raw, each parsed on its own.
fn read_file(text: &[u8]) -> Result<FileConfig<'_>, ConfigError> {
    let mut de = serde_json::Deserializer::from_slice(text);
    let file: FileConfig = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ConfigError::new("", format!("invalid JSON: {inner}"))
        } else {
            ConfigError::new(
                if field == "." { String::new() } else { field },
                inner.to_string(),
            )
        }
    })?;
    de.end()
        .map_err(|e| ConfigError::new("", format!("invalid JSON: {e}")))?;
    if file.zones.len() > MAX_ZONES {
        return Err(ConfigError::new(
            "zones",
            format!("{} zones, over the limit of {MAX_ZONES}", file.zones.len()),
        ));
    }
    Ok(file)
}

/// Where in a zone an error is: the step's position and module name, when
/// it is in a step.
type InZone = (Option<(usize, String)>, ConfigError);

/// One zone: its name checked, its steps built, its plan for the Lua side.
fn parse_zone(host: &str, raw: &RawValue) -> Result<Zone, InZone> {
    let zone_value: serde_json::Value =
        serde_json::from_str(raw.get()).map_err(|e| (None, ConfigError::new("", e.to_string())))?;
    if !valid_host(host) {
        return Err((
            None,
            ConfigError::new(
                "",
                "a zone is a lower-case host name (letters, digits, \"-\", \".\") or \"*\"",
            ),
        ));
    }
    let zc: ZoneConfig = parse_config(&zone_value).map_err(|e| (None, e))?;
    if zc.modules.len() > MAX_MODULES_PER_ZONE {
        return Err((
            None,
            ConfigError::new(
                "modules",
                format!(
                    "{} modules, over the limit of {MAX_MODULES_PER_ZONE}",
                    zc.modules.len()
                ),
            ),
        ));
    }
    let limit = zc
        .body
        .as_ref()
        .map(BodyConfig::limit)
        .transpose()
        .map_err(|e| (None, e))?;
    let mut steps = Vec::with_capacity(zc.modules.len());
    let mut plan = Vec::with_capacity(zc.modules.len());
    for (i, step_value) in zc.modules.iter().enumerate() {
        let named = step_value
            .get("module")
            .and_then(|v| v.as_str())
            .unwrap_or("?");
        let (step, step_plan) =
            parse_step(host, i, step_value).map_err(|e| (Some((i, named.to_string())), e))?;
        if step.module.wants_body() && limit.is_none() {
            return Err((
                Some((i, named.to_string())),
                ConfigError::new(
                    "body",
                    "this module reads request bodies: give the zone a \"body\": { \"max_bytes\": <bytes>, \"over\": \"inspect\" or { \"respond\": 413 } }",
                ),
            ));
        }
        steps.push(step);
        plan.push(step_plan);
    }
    let body = limit.filter(|_| steps.iter().any(|s| s.module.wants_body()));
    let mut zone_plan = serde_json::json!({ "zone": host, "steps": plan });
    if let Some(b) = &body {
        zone_plan["body"] = b.plan();
    }
    Ok(Zone {
        name: host.to_string(),
        plan: lz4_flex::compress_prepend_size(zone_plan.to_string().as_bytes()).into_boxed_slice(),
        steps,
        body,
    })
}

/// Step `i` of zone `host`: its module built from its configuration, its
/// mode, canary, rollback and failure policy checked; and its entry in the
/// zone's plan for the Lua side.
fn parse_step(
    host: &str,
    i: usize,
    step_value: &serde_json::Value,
) -> Result<(Step, serde_json::Value), ConfigError> {
    let sc: StepConfig = parse_config(step_value)?;
    let factory = registry::factory(&sc.module).ok_or_else(|| {
        let known: Vec<_> = registry::names().collect();
        ConfigError::new(
            "module",
            format!("unknown module; known: {}", known.join(", ")),
        )
    })?;
    let module = factory.build(&sc.config).map_err(|e| e.within("config"))?;
    let canary = match sc.mode {
        Mode::Canary => Some(Canary::parse(sc.percent, sc.sticky.as_deref())?),
        _ if sc.percent.is_some() || sc.sticky.is_some() => {
            return Err(ConfigError::new(
                "percent",
                "percent and sticky are for mode canary",
            ))
        }
        _ => None,
    };
    let on_failure = match &sc.on_failure {
        Some(p) => p.policy()?,
        None => factory.on_failure(),
    };
    let plan = serde_json::json!({
        "module": factory.name(), "mode": sc.mode.name(),
        "config": factory.lua_config(&sc.config), "on_failure": policy_json(on_failure),
    });
    if let Some(r) = &sc.rollback {
        if !(0.0..=1.0).contains(&r.max_rate) || r.window == 0 || r.window > 86_400 {
            return Err(ConfigError::new(
                "rollback",
                "max_rate is a share from 0 to 1, window seconds from 1 to 86400",
            ));
        }
    }
    if let Some(b) = &sc.budget {
        b.check()?;
    }
    let budget_threshold = sc.budget.as_ref().is_some_and(|b| b.max_rate.is_some());
    let window_key = if sc.rollback.is_some() || budget_threshold {
        format!("rollback\0{host}\0{i}\0{}\0", factory.name()).into_bytes()
    } else {
        Vec::new()
    };
    let step = Step {
        module_name: factory.name(),
        mode: sc.mode,
        canary: canary.map(Box::new),
        rollback: sc.rollback.map(Box::new),
        budget: sc.budget.map(Box::new),
        on_failure,
        module,
        counters: Counters::new(host, i, factory.name()),
        windows: OnceLock::new(),
        window_key: window_key.into_boxed_slice(),
    };
    Ok((step, plan))
}

#[cfg(test)]
mod tests;
