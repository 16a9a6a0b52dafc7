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
//!
//! The file is read in [`parse`]; a step, its mode and its rollback are
//! [`step`]'s; what a configuration counts and switches in the tables
//! every worker shares is [`state`]'s.
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use crate::shared::{CounterTable, WindowTable};

mod parse;
mod state;
mod step;

pub use parse::{BodyLimit, OverLimit, MAX_BODY_BYTES};
pub use step::{Budget, Canary, Mode, OverBudget, Rollback, Step, MAX_BUDGET_US};

/// Limits checked at load; a file over one is refused with the limit named.
pub const MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;
pub const MAX_ZONES: usize = 100_000;
pub const MAX_MODULES_PER_ZONE: usize = 64;
pub const DEFAULT_ZONE: &str = "*";

pub struct Zone {
    pub name: String,
    pub steps: Vec<Step>,
    /// How the zone reads request bodies, when one of its modules reads
    /// them (`None` otherwise, even with a `"body"` in the file: no body is
    /// read that no module looks at).
    pub body: Option<BodyLimit>,
    /// Which phases after the request's the zone's steps have, known at
    /// load: a server does no work a request for a phase none of them has.
    pub later: LaterPhases,
    /// What the Lua side needs to build its Lua twins for this zone,
    /// serialized once at load and kept compressed (LZ4), expanded when the
    /// Lua side asks: at start, to check every zone's Lua twins, and
    /// when a worker's Lua side first serves the zone (never for a zone
    /// only native locations serve).
    plan: Box<[u8]>,
}

/// Whether any of a zone's steps edits response headers
/// (`Module::edits_responses`), rewrites response bodies
/// (`Module::rewrites_bodies`) or writes a record per request
/// (`Module::logs_requests`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LaterPhases {
    pub response_headers: bool,
    pub response_body: bool,
    pub log: bool,
}

impl LaterPhases {
    /// The phases `steps` have.
    pub fn of(steps: &[Step]) -> LaterPhases {
        LaterPhases {
            response_headers: steps.iter().any(|s| s.module.edits_responses()),
            response_body: steps.iter().any(|s| s.module.rewrites_bodies()),
            log: steps.iter().any(|s| s.module.logs_requests()),
        }
    }

    /// Whether the response (its headers or its body) is any step's.
    pub fn response(self) -> bool {
        self.response_headers || self.response_body
    }
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
    /// The name of the text it was parsed from ([`crate::fleet_report::config_hash`]):
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

impl Config {
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
                let h = crate::fleet_report::config_hash(&std::fs::read(&self.source).ok()?);
                *seen = Some((self.source.clone(), len, modified, h.clone()));
                h
            }
        };
        Some(hash != self.hash)
    }

    /// Checks that every file a module writes is under one of `dirs` (the
    /// directories nginx's `graft_log_dir` names): the first that is not,
    /// with its zone, module and field.
    pub fn check_files(&self, dirs: &[std::path::PathBuf]) -> Result<(), String> {
        self.check_files_under(dirs, "graft_log_dir", "nginx")
    }

    /// [`Config::check_files`] for a server whose setting `setting` names
    /// the directories (`server` names none: the text says so).
    pub fn check_files_under(
        &self,
        dirs: &[std::path::PathBuf],
        setting: &str,
        server: &str,
    ) -> Result<(), String> {
        for zone in &self.zones {
            for (i, step) in zone.steps.iter().enumerate() {
                for (field, file) in step.module.files() {
                    let path = std::path::Path::new(file);
                    if dirs.iter().any(|d| path.starts_with(d) && path != d) {
                        continue;
                    }
                    let named = match dirs {
                        [] => format!("{server} names none"),
                        dirs => dirs
                            .iter()
                            .map(|d| d.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", "),
                    };
                    return Err(format!(
                        "zone \"{}\": module #{i} \"{}\": field \"config.{field}\": \"{file}\" is not under a directory {setting} names ({named})",
                        zone.name, step.module_name
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
