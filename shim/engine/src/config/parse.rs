//! Reading a configuration file: its outer shape, each zone, each step,
//! every error naming the file, zone, module and field.
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use graft_contract::{parse_config, ConfigError, FailurePolicy};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{
    Budget, Canary, Config, LaterPhases, Mode, Rollback, Step, Zone, DEFAULT_ZONE, MAX_FILE_BYTES,
    MAX_MODULES_PER_ZONE, MAX_ZONES,
};
use crate::error::{Error, ErrorKind};
use crate::{registry, Counters};

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
        // The expressions only the configurations before this one used
        // leave the cache (those still running keep their own).
        graft_conditions::end_regex_load();
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
            hash: crate::fleet_report::config_hash(text),
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
            zones,
            by_host,
            default_zone,
        })
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
        later: LaterPhases::of(&steps),
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
