//! What a server's fleet agent (`graft-agent`) reports about it, kept in
//! the shared counter table so that `/graft/metrics` says it from any
//! worker: whether etcd is reachable, which configuration revision the
//! server serves, and where it stands in a staged rollout. The agent sends
//! a report as `name=value&...` to the admin API (`POST
//! /graft/admin/fleet`); the shim stamps it with the time it came.
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

use crate::shared::CounterTable;

/// A configuration's name, in the fleet's keys and in the metrics
/// (`graft_configuration_info{hash}`): the first 16 hex digits of the
/// SHA-256 of its text.
pub fn config_hash(text: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A rollout's state, as `rollout_state` gives it.
pub const ROLLOUT_STATES: [&str; 4] = ["none", "running", "done", "rolled_back"];

/// Where a staged rollout stands: in its key in etcd (by the names of
/// [`ROLLOUT_STATES`]), and in a report by its code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    Running,
    Done,
    /// A gate failed: every server went back to the fleet's
    /// configuration. `rolled_back` on the wire (etcd, metrics), as alert
    /// rules match it.
    #[serde(rename = "rolled_back")]
    Reverted,
}

impl RolloutState {
    /// The number `graft_fleet_rollout_state` gives it (0 is none): its
    /// place in [`ROLLOUT_STATES`].
    pub fn code(self) -> u64 {
        match self {
            RolloutState::Running => 1,
            RolloutState::Done => 2,
            RolloutState::Reverted => 3,
        }
    }
}

/// A fleet agent's report about its server: what `graft-agent` sends
/// ([`Report::text`]) and [`parse`] reads, by the names of [`FIELDS`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    pub etcd_up: bool,
    /// Unix time of the agent's last successful call to etcd.
    pub etcd_contact: u64,
    pub config_revision: i64,
    pub rollout_stage: usize,
    /// The state of the rollout the agent last saw (none: no rollout).
    pub rollout_state: Option<RolloutState>,
    pub rollout_serving: bool,
    pub healthy: bool,
    /// Whether its nginx serves another configuration than the keys say,
    /// and how often the agent put the keys' back; sent only to an nginx
    /// that names what it serves (an older one refuses the whole report
    /// for a name it does not know).
    pub drift: Option<(bool, u64)>,
    pub verify_keys: usize,
    pub config_unverified: bool,
}

impl Report {
    /// The report as the admin API takes it (`name=value&...`), the
    /// signature fields last.
    pub fn text(&self) -> String {
        format!(
            "{}&verify_keys={}&config_unverified={}",
            self.text_without_signatures(),
            self.verify_keys,
            u8::from(self.config_unverified)
        )
    }

    /// The report for an nginx older than the signature fields, which
    /// refuses the whole report for them: every other field.
    pub fn text_without_signatures(&self) -> String {
        let mut text = format!(
            "etcd_up={}&etcd_contact={}&config_revision={}&rollout_stage={}&rollout_state={}&rollout_serving={}&healthy={}",
            u8::from(self.etcd_up),
            self.etcd_contact,
            self.config_revision,
            self.rollout_stage,
            self.rollout_state.map_or(0, RolloutState::code),
            u8::from(self.rollout_serving),
            u8::from(self.healthy),
        );
        if let Some((drifted, repairs)) = self.drift {
            text.push_str(&format!(
                "&drift={}&drift_repairs={repairs}",
                u8::from(drifted)
            ));
        }
        text
    }
}

/// The fields a report may carry, each a whole number; what is not sent
/// keeps its last value.
pub const FIELDS: [(&str, &str); 11] = [
    ("etcd_up", "1 when the agent reached etcd at its last try, 0 while it serves its last good configuration without it"),
    ("etcd_contact", "Unix time of the agent's last successful call to etcd"),
    ("config_revision", "etcd revision of the configuration this server serves (0: none from etcd yet)"),
    ("rollout_stage", "The stage (from 0) of the rollout this server last saw"),
    ("rollout_state", "The state of the rollout this server last saw: 0 none, 1 running, 2 done, 3 reverted (rolled_back)"),
    ("rollout_serving", "1 when this server serves a rollout's configuration rather than the fleet's (while the rollout runs, or after it was reverted when its nginx refused the fleet's)"),
    ("healthy", "1 when this server's health gates pass (fallback and shadow-difference rates, refused configurations, worker restarts)"),
    ("drift", "1 when this server's nginx serves another configuration than the fleet's keys say (applied by hand through its admin API, or the keys' refused) and its agent could not apply the keys' again"),
    ("drift_repairs", "Times this server's agent found its nginx serving another configuration than the one it had applied from the keys, and applied the keys' again (since the agent started)"),
    ("verify_keys", "Operator keys this server's agent verifies configurations with (graft-agent run --verify-key); 0: it applies any configuration in etcd, signed or not"),
    ("config_unverified", "1 while the configuration the fleet's keys give this server is not applied because no operator key its agent holds verifies its signature (the server serves on what it served)"),
];

/// The last report as the shared table holds it: the time it came, and
/// each field's name, help and value.
pub type Stored = (u64, Vec<(&'static str, &'static str, u64)>);

/// Where the shim puts the time a report came.
const REPORTED: &str = "reported";

fn key(name: &str) -> u64 {
    let mut h = DefaultHasher::new();
    ("fleet", name).hash(&mut h);
    h.finish()
}

/// The key of the count of worker processes started (a restart after a
/// crash among them), in the shared counter table.
pub fn worker_starts_key() -> u64 {
    key("worker_starts")
}

/// The key of the count of worker processes started again after one
/// died (not a reload's new workers).
pub fn worker_restarts_key() -> u64 {
    key("worker_restarts")
}

/// The key of the workers each cycle started: the cycle's number (high 32
/// bits) and its count (low 32 bits).
pub fn cycle_workers_key() -> u64 {
    key("cycle_workers")
}

/// The key of the time (Unix milliseconds) this nginx's shared memory was
/// first used: a reload keeps it, a restart starts it again.
pub fn started_key() -> u64 {
    key("started_ms")
}

/// Parses a report (`etcd_up=1&config_revision=42`): every name known,
/// every value a whole number, no name twice. Nothing is stored from a
/// report that is refused.
pub fn parse(report: &str) -> Result<Vec<(&'static str, u64)>, String> {
    let mut fields: Vec<(&'static str, u64)> = Vec::new();
    for pair in report.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("\"{pair}\" is not name=value"))?;
        let name = FIELDS
            .iter()
            .map(|(n, _)| *n)
            .find(|n| *n == name)
            .ok_or_else(|| {
                format!(
                    "no fleet field \"{name}\" (known: {})",
                    FIELDS.map(|(n, _)| n).join(", ")
                )
            })?;
        let value: u64 = value
            .parse()
            .map_err(|_| format!("{name}: \"{value}\" is not a whole number"))?;
        if name == "rollout_state" && value as usize >= ROLLOUT_STATES.len() {
            return Err(format!("rollout_state: {value} is not 0 to 3"));
        }
        if fields.iter().any(|(n, _)| *n == name) {
            return Err(format!("{name} given twice"));
        }
        fields.push((name, value));
    }
    if fields.is_empty() {
        return Err("an empty report".into());
    }
    Ok(fields)
}

/// Stores a parsed report, stamped with `now` (Unix seconds).
pub fn store(table: &CounterTable<'_>, fields: &[(&'static str, u64)], now: u64) {
    for (name, value) in fields {
        table.set(key(name), *value);
    }
    table.set(key(REPORTED), now);
}

/// The last report: the time it came and every field's value, `None` when
/// no agent ever reported to this nginx.
pub fn read(table: &CounterTable<'_>) -> Option<Stored> {
    let reported = table.get(key(REPORTED));
    if reported == 0 {
        return None;
    }
    Some((
        reported,
        FIELDS
            .iter()
            .map(|(name, help)| (*name, *help, table.get(key(name))))
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn a_report_is_stored_whole_or_not_at_all() {
        let words: Vec<AtomicU64> = (0..2 * 64).map(|_| AtomicU64::new(0)).collect();
        let table = CounterTable::new(&words);
        assert!(read(&table).is_none(), "no agent reported yet");
        let fields = parse("etcd_up=1&config_revision=42&rollout_state=1").unwrap();
        assert_eq!(
            parse("verify_keys=2&config_unverified=1").unwrap(),
            [("verify_keys", 2), ("config_unverified", 1)],
            "an agent's signature fields"
        );
        store(&table, &fields, 1000);
        let (at, values) = read(&table).unwrap();
        assert_eq!(at, 1000);
        let get = |n: &str| values.iter().find(|(name, _, _)| *name == n).unwrap().2;
        assert_eq!(
            (get("etcd_up"), get("config_revision"), get("rollout_state")),
            (1, 42, 1)
        );
        for bad in [
            "",
            "etcd_up",
            "etcd_up=yes",
            "nope=1",
            "etcd_up=1&etcd_up=0",
            "rollout_state=4",
            "config_revision=-1",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was taken");
        }
        store(&table, &parse("etcd_up=0").unwrap(), 1001);
        let (at, values) = read(&table).unwrap();
        let get = |n: &str| values.iter().find(|(name, _, _)| *name == n).unwrap().2;
        assert_eq!((at, get("etcd_up"), get("config_revision")), (1001, 0, 42));
    }

    #[test]
    fn an_agents_report_is_read_back_field_for_field() {
        let mut report = Report {
            etcd_up: true,
            etcd_contact: 1_795_000_000,
            config_revision: 42,
            rollout_stage: 2,
            rollout_state: Some(RolloutState::Reverted),
            rollout_serving: true,
            healthy: false,
            drift: Some((true, 3)),
            verify_keys: 2,
            config_unverified: true,
        };
        assert_eq!(
            parse(&report.text()).unwrap(),
            [
                ("etcd_up", 1),
                ("etcd_contact", 1_795_000_000),
                ("config_revision", 42),
                ("rollout_stage", 2),
                ("rollout_state", 3),
                ("rollout_serving", 1),
                ("healthy", 0),
                ("drift", 1),
                ("drift_repairs", 3),
                ("verify_keys", 2),
                ("config_unverified", 1),
            ]
        );
        report.drift = None;
        let older = parse(&report.text_without_signatures()).unwrap();
        assert_eq!(older.len(), 7, "{older:?}");
        assert_eq!(older.last(), Some(&("healthy", 0)));
    }

    #[test]
    fn a_rollout_states_code_names_it_as_its_key_does() {
        for state in [
            RolloutState::Running,
            RolloutState::Done,
            RolloutState::Reverted,
        ] {
            assert_eq!(
                serde_json::to_value(state).unwrap(),
                ROLLOUT_STATES[state.code() as usize]
            );
        }
        assert_eq!(
            Report::default().text().split('&').nth(4),
            Some("rollout_state=0")
        );
    }
}
