//! The fleet's keys in etcd and what they hold, and the rules of a staged
//! rollout, as plain functions of what the agent read: every agent
//! computes the same answers from the same keys.
//!
//! Under the fleet's prefix `P`:
//!
//! - `P/config`: the graft file every server serves (when no rollout gives
//!   it another);
//! - `P/config.sig`: its signature, by an operator's key (see
//!   [`crate::sign`]);
//! - `P/kill/<module>` and `P/kill/<module>/<zone>`: kill switches, thrown
//!   while the key exists (its value is free text: who, why);
//! - `P/rollout`: the rollout under way or the last one ([`Rollout`]),
//!   and `P/rollout.sig` the signature of its configuration;
//! - `P/servers/<name>`: each server's own key, its state as its agent
//!   last wrote it ([`Status`]), under a lease: it goes when the agent
//!   stops renewing it.
use serde::{Deserialize, Serialize};

/// A configuration's name in the status keys, the same nginx gives the
/// one it serves (`graft_configuration_info{hash}`): the first 16 hex
/// digits of the SHA-256 of its text.
pub use graft_engine::fleet_report::config_hash;

/// The keys of one fleet.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// The keys under `prefix` (a trailing `/` is dropped).
    pub fn new(prefix: &str) -> Result<Keys, String> {
        let prefix = prefix.trim_end_matches('/');
        if !prefix.starts_with('/') || prefix.len() < 2 {
            return Err(format!(
                "the key prefix \"{prefix}\" must start with / and name something (/graft/prod)"
            ));
        }
        Ok(Keys {
            prefix: prefix.to_string(),
        })
    }

    /// Everything of the fleet: what an agent reads and watches.
    pub fn all(&self) -> String {
        format!("{}/", self.prefix)
    }

    pub fn config(&self) -> String {
        format!("{}/config", self.prefix)
    }

    pub fn rollout(&self) -> String {
        format!("{}/rollout", self.prefix)
    }

    /// The signature of `P/config`.
    pub fn config_sig(&self) -> String {
        format!("{}/config.sig", self.prefix)
    }

    /// The signature of the rollout's configuration.
    pub fn rollout_sig(&self) -> String {
        format!("{}/rollout.sig", self.prefix)
    }

    /// The prefix, as a signature covers it.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn kills(&self) -> String {
        format!("{}/kill/", self.prefix)
    }

    /// The kill switch of `module`, in `zone` or in every zone.
    pub fn kill(&self, module: &str, zone: Option<&str>) -> String {
        match zone {
            Some(zone) => format!("{}/kill/{module}/{zone}", self.prefix),
            None => format!("{}/kill/{module}", self.prefix),
        }
    }

    pub fn servers(&self) -> String {
        format!("{}/servers/", self.prefix)
    }

    pub fn server(&self, name: &str) -> String {
        format!("{}/servers/{name}", self.prefix)
    }

    /// The kill switch a key under `P/kill/` throws: (module, zone).
    pub fn kill_of(&self, key: &str) -> Option<(String, Option<String>)> {
        let rest = key.strip_prefix(&self.kills())?;
        let (module, zone) = match rest.split_once('/') {
            Some((module, zone)) => (module, Some(zone.to_string())),
            None => (rest, None),
        };
        if module.is_empty() || zone.as_deref() == Some("") {
            return None;
        }
        Some((module.to_string(), zone))
    }

    /// The server whose key this is.
    pub fn server_of<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(&self.servers()).filter(|n| !n.is_empty())
    }
}

/// A server's name: what its key is called.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 128
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(format!(
            "the server name \"{name}\" must be 1 to 128 letters, digits, '-', '_' or '.'"
        ));
    }
    Ok(())
}

/// The health gates of a rollout: a server that took the new
/// configuration fails one when, since it took it, ...
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gates {
    /// ... more than this share of its steps were served by a fallback or
    /// a failure policy (once `min_requests` steps ran);
    pub max_fallback_rate: f64,
    /// ... more than this share of its shadow comparisons differed (once
    /// `min_requests` were made);
    pub max_shadow_diff_rate: f64,
    pub min_requests: u64,
    /// ... its nginx refused more configurations than this (a reload's
    /// file, a live apply; the rollout's own refused is a failure at once);
    pub max_refused: u64,
    /// ... more worker processes started than this (a worker that died).
    pub max_worker_restarts: u64,
    /// ... it has not been heard for this long, in seconds: its nginx
    /// does not answer its agent, or (judged by every agent) the server
    /// of a stage has no part in the rollout in etcd this long after the
    /// stage started (its agent stopped, cannot reach etcd, or its nginx
    /// never took the configuration). A server whose health cannot be
    /// read is not healthy.
    #[serde(default = "default_max_silent_secs")]
    pub max_silent_secs: u64,
}

fn default_max_silent_secs() -> u64 {
    30
}

impl Default for Gates {
    fn default() -> Gates {
        Gates {
            max_fallback_rate: 0.01,
            max_shadow_diff_rate: 0.01,
            min_requests: 100,
            max_refused: 0,
            max_worker_restarts: 0,
            max_silent_secs: default_max_silent_secs(),
        }
    }
}

/// Where a rollout stands: the engine's, whose codes the agent reports.
pub use graft_engine::fleet_report::RolloutState;

/// A staged rollout, as `P/rollout` holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    pub id: String,
    /// The new graft file.
    pub config: String,
    /// The servers, in the order they take it (fixed when it started).
    pub servers: Vec<String>,
    /// How many servers have it at each stage: growing, the last all.
    pub stages: Vec<usize>,
    /// How long every server of a stage must stay healthy, in seconds,
    /// before the next stage starts.
    pub hold_secs: u64,
    pub gates: Gates,
    /// The stage under way (from 0).
    pub stage: usize,
    /// When it started, in seconds since the epoch (0: not said, and the
    /// silence of its servers is not judged).
    #[serde(default)]
    pub stage_started: u64,
    pub state: RolloutState,
    /// Why it ended as it did.
    #[serde(default)]
    pub reason: Option<String>,
    /// What happened, one line a step.
    #[serde(default)]
    pub history: Vec<String>,
}

impl Rollout {
    /// The servers that serve the new configuration now.
    pub fn members(&self) -> &[String] {
        match self.state {
            RolloutState::Running => {
                let n = self.stages.get(self.stage).copied().unwrap_or(0);
                &self.servers[..n.min(self.servers.len())]
            }
            RolloutState::Done => &self.servers,
            RolloutState::Reverted => &[],
        }
    }

    /// Whether `server` serves the rollout's configuration while it runs.
    pub fn serves(&self, server: &str) -> bool {
        self.state == RolloutState::Running && self.members().iter().any(|s| s == server)
    }

    /// Checks a rollout read from etcd: what a bad one would do is refuse
    /// to move, never serve half of something.
    pub fn check(&self) -> Result<(), String> {
        if self.servers.is_empty() {
            return Err("no servers".into());
        }
        if self.stages.is_empty()
            || self.stages.windows(2).any(|w| w[0] >= w[1])
            || self.stages[0] == 0
            || *self.stages.last().unwrap() != self.servers.len()
        {
            return Err(format!(
                "stages {:?} must grow from 1 to the {} servers",
                self.stages,
                self.servers.len()
            ));
        }
        if self.stage >= self.stages.len() {
            return Err(format!("stage {} of {}", self.stage, self.stages.len()));
        }
        Ok(())
    }
}

impl Gates {
    /// A rate gate is a share under 1 (0.01 is 1 %): 1 or more, or not a
    /// number, would never fail, and a gate that cannot fail is refused
    /// when a rollout starts (not when one is read: a rollout in etcd,
    /// over or running, is never made unreadable by a newer agent).
    pub fn check(&self) -> Result<(), String> {
        for (name, rate) in [
            ("max_fallback_rate", self.max_fallback_rate),
            ("max_shadow_diff_rate", self.max_shadow_diff_rate),
        ] {
            if !(0.0..1.0).contains(&rate) {
                return Err(format!(
                    "gate {name}: {rate} is not a share from 0 to under 1 (0.01 is 1%)"
                ));
            }
        }
        Ok(())
    }
}

/// Turns stage specs (`1`, `10%`, `50%`, `all`) into growing server
/// counts for `n` servers: a share is rounded up, a stage that adds no
/// server is dropped, and the last stage is always every server.
pub fn stage_counts(specs: &[String], n: usize) -> Result<Vec<usize>, String> {
    if n == 0 {
        return Err("no servers are registered under the fleet's prefix".into());
    }
    let mut counts: Vec<usize> = Vec::new();
    for spec in specs {
        let count = if spec == "all" {
            n
        } else if let Some(p) = spec.strip_suffix('%') {
            let p: f64 = p
                .parse()
                .ok()
                .filter(|p: &f64| *p > 0.0 && *p <= 100.0)
                .ok_or_else(|| format!("stage \"{spec}\": a share from 0 to 100%"))?;
            ((n as f64 * p / 100.0).ceil() as usize).clamp(1, n)
        } else {
            let c: usize = spec.parse().ok().filter(|c| *c > 0).ok_or_else(|| {
                format!("stage \"{spec}\": a number of servers, a share (10%) or all")
            })?;
            c.min(n)
        };
        if counts.last().is_some_and(|last| count < *last) {
            return Err(format!(
                "stage \"{spec}\" has fewer servers than the one before"
            ));
        }
        if counts.last() != Some(&count) {
            counts.push(count);
        }
    }
    if counts.last() != Some(&n) {
        counts.push(n);
    }
    Ok(counts)
}

/// A server's state, as its agent writes it under `P/servers/<name>`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub name: String,
    /// The configuration it serves (a hash of its text), from etcd.
    pub config: Option<String>,
    /// Where that configuration came from: `P/config` or the rollout.
    pub source: Option<String>,
    /// The etcd revision of the key it came from.
    pub revision: i64,
    /// The last configuration its nginx refused, and why.
    pub refused: Option<Refused>,
    /// The configuration the keys say that its agent does not apply,
    /// because no operator key it holds verifies its signature (while
    /// it is so).
    #[serde(default)]
    pub unverified: Option<Refused>,
    /// The kill switches it has thrown.
    pub kills: Vec<String>,
    /// The kill switches its nginx refused, and why (asked again every
    /// 30 s, and when a configuration is applied).
    #[serde(default)]
    pub kills_refused: Vec<String>,
    /// Its part in the rollout that runs, if it serves its configuration.
    pub rollout: Option<RolloutPart>,
    /// When its nginx's admin API last failed, and why.
    pub nginx_error: Option<String>,
    /// A fleet key it could not read (a rollout that is not one), which
    /// it leaves alone.
    #[serde(default)]
    pub key_error: Option<String>,
    /// Why the graft file could not be written with the configuration it
    /// serves (a restarted nginx would start with an older one).
    #[serde(default)]
    pub file_error: Option<String>,
    /// Its nginx was found serving another configuration than the keys
    /// say (applied by hand through its admin API, say): the last time.
    #[serde(default)]
    pub drift: Option<Drift>,
}

/// A server whose nginx served another configuration than the keys say.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Drift {
    /// What its nginx served, the last time it was found drifted.
    pub served: String,
    /// What the keys said it should serve (its key's `config` is what it
    /// serves now: another one while the keys' could not be given again,
    /// refused or its nginx not answering).
    pub wanted: String,
    /// How many times its agent applied the keys' configuration again
    /// over another one, since the agent started.
    pub repairs: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Refused {
    pub config: String,
    pub reason: String,
}

/// A server's part in a rollout: whether its gates pass, and whether it
/// has been healthy for the rollout's hold time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RolloutPart {
    pub id: String,
    pub healthy: bool,
    pub ready: bool,
    /// The gate that failed.
    pub reason: Option<String>,
    /// What the gates read since the server took the configuration.
    pub counts: Counts,
}

/// What a server counted (from its `/graft/metrics`), or counted since a
/// point (the difference of two readings).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    pub steps: u64,
    pub fallback: u64,
    pub shadow_match: u64,
    pub shadow_diff: u64,
    pub refused: u64,
    /// Workers started again after one died (every start, from an nginx
    /// that does not tell a reload's apart).
    pub worker_starts: u64,
}

impl Counts {
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts {
            steps: self.steps.saturating_sub(earlier.steps),
            fallback: self.fallback.saturating_sub(earlier.fallback),
            shadow_match: self.shadow_match.saturating_sub(earlier.shadow_match),
            shadow_diff: self.shadow_diff.saturating_sub(earlier.shadow_diff),
            refused: self.refused.saturating_sub(earlier.refused),
            worker_starts: self.worker_starts.saturating_sub(earlier.worker_starts),
        }
    }
}

/// The first gate `counts` (since the configuration was taken) fail, if
/// any.
pub fn failed_gate(gates: &Gates, counts: &Counts) -> Option<String> {
    if counts.steps >= gates.min_requests.max(1) {
        let rate = counts.fallback as f64 / counts.steps as f64;
        if rate > gates.max_fallback_rate {
            return Some(format!(
                "fallback rate {rate:.3} ({} of {} steps) over {}",
                counts.fallback, counts.steps, gates.max_fallback_rate
            ));
        }
    }
    let compared = counts.shadow_match + counts.shadow_diff;
    if compared >= gates.min_requests.max(1) {
        let rate = counts.shadow_diff as f64 / compared as f64;
        if rate > gates.max_shadow_diff_rate {
            return Some(format!(
                "shadow difference rate {rate:.3} ({} of {compared}) over {}",
                counts.shadow_diff, gates.max_shadow_diff_rate
            ));
        }
    }
    if counts.refused > gates.max_refused {
        return Some(format!(
            "{} configurations refused, over {}",
            counts.refused, gates.max_refused
        ));
    }
    if counts.worker_starts > gates.max_worker_restarts {
        return Some(format!(
            "{} worker processes restarted, over {}",
            counts.worker_starts, gates.max_worker_restarts
        ));
    }
    None
}

/// How often an agent writes its part in a running rollout when nothing
/// else made it write, in seconds.
pub const PART_EVERY_SECS: u64 = 5;

/// How old a member's part may be before it is not news: the silence
/// gate, and never under three of its writes (clocks of servers differ a
/// little, a write may be late).
fn stale_after(rollout: &Rollout) -> u64 {
    rollout.gates.max_silent_secs.max(3 * PART_EVERY_SECS)
}

/// What any agent does next about a running rollout, seeing every
/// server's status: move to the next stage (or finish), revert, or
/// wait.
#[derive(Debug, PartialEq)]
pub enum Next {
    Wait,
    Advance,
    Finish,
    Revert(String),
}

/// `heard_for(server)`: how long, in seconds, since the agent deciding
/// saw that server's key last written (its own clock's reckoning).
pub fn next_step(
    rollout: &Rollout,
    now: u64,
    status_of: impl Fn(&str) -> Option<Status>,
    heard_for: impl Fn(&str) -> Option<u64>,
) -> Next {
    if rollout.state != RolloutState::Running {
        return Next::Wait;
    }
    let silent_for = if rollout.stage_started == 0 {
        0
    } else {
        now.saturating_sub(rollout.stage_started)
    };
    let mut all_ready = true;
    for server in rollout.members() {
        let status = status_of(server);
        let part = status
            .as_ref()
            .and_then(|s| s.rollout.as_ref().filter(|p| p.id == rollout.id));
        match part {
            Some(part) if !part.healthy => {
                return Next::Revert(format!(
                    "server {server}: {}",
                    part.reason.as_deref().unwrap_or("unhealthy")
                ))
            }
            // Its agent has not written it for long: what it said of its
            // health is not news (its agent waits on a hung nginx).
            Some(_) if heard_for(server).is_some_and(|s| s > stale_after(rollout)) => {
                return Next::Revert(format!(
                    "server {server}: its state was last written {} s ago, over {} s",
                    heard_for(server).unwrap_or_default(),
                    stale_after(rollout)
                ))
            }
            Some(part) => all_ready &= part.ready,
            None if silent_for > rollout.gates.max_silent_secs => {
                let why = match &status {
                    None => "has no readable key (its agent stopped or cannot reach etcd)",
                    Some(_) => "has not taken the configuration",
                };
                return Next::Revert(format!(
                    "server {server}: {why} {silent_for} s after stage {} started, over {} s",
                    rollout.stage, rollout.gates.max_silent_secs
                ));
            }
            None => all_ready = false,
        }
    }
    if !all_ready {
        Next::Wait
    } else if rollout.stage + 1 >= rollout.stages.len() {
        Next::Finish
    } else {
        Next::Advance
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn stages_grow_to_every_server() {
        let usual = specs(&["1", "10%", "50%", "all"]);
        assert_eq!(stage_counts(&usual, 3).unwrap(), vec![1, 2, 3]);
        assert_eq!(stage_counts(&usual, 100).unwrap(), vec![1, 10, 50, 100]);
        assert_eq!(stage_counts(&usual, 1).unwrap(), vec![1]);
        assert_eq!(stage_counts(&specs(&["1"]), 4).unwrap(), vec![1, 4]);
        for bad in [&["0"][..], &["x"], &["150%"], &["3", "1"]] {
            assert!(stage_counts(&specs(bad), 5).is_err(), "{bad:?}");
        }
        assert!(stage_counts(&usual, 0).is_err());
    }

    #[test]
    fn keys_name_kill_switches_and_servers() {
        let k = Keys::new("/graft/prod/").unwrap();
        assert_eq!(k.config(), "/graft/prod/config");
        assert_eq!(
            k.kill_of(&k.kill("waf", Some("shop.example"))),
            Some(("waf".into(), Some("shop.example".into())))
        );
        assert_eq!(k.kill_of(&k.kill("waf", None)), Some(("waf".into(), None)));
        assert_eq!(k.kill_of("/graft/prod/kill/"), None);
        assert_eq!(k.server_of("/graft/prod/servers/a"), Some("a"));
        assert!(Keys::new("graft").is_err());
        assert!(check_name("edge-1.fra").is_ok());
        assert!(check_name("a/b").is_err());
    }

    fn rollout() -> Rollout {
        Rollout {
            id: "r1".into(),
            config: "{}".into(),
            servers: specs(&["a", "b", "c"]),
            stages: vec![1, 2, 3],
            hold_secs: 5,
            gates: Gates::default(),
            stage: 0,
            stage_started: 1000,
            state: RolloutState::Running,
            reason: None,
            history: vec![],
        }
    }

    fn part(healthy: bool, ready: bool) -> Status {
        Status {
            rollout: Some(RolloutPart {
                id: "r1".into(),
                healthy,
                ready,
                reason: (!healthy).then(|| "shadow difference rate 1.000".into()),
                counts: Counts::default(),
            }),
            ..Status::default()
        }
    }

    #[test]
    fn a_members_state_written_long_ago_reverts_the_rollout() {
        let r = rollout();
        let now = 1000 + 60;
        let ready = |_: &str| Some(part(true, true));
        assert_eq!(next_step(&r, now, ready, |_| Some(5)), Next::Advance);
        assert_eq!(
            next_step(&r, now, ready, |_| None),
            Next::Advance,
            "never heard: its key is new"
        );
        let Next::Revert(why) = next_step(&r, now, ready, |_| Some(31)) else {
            panic!("a stale part moved the rollout on");
        };
        assert!(
            why.contains("server a: its state was last written 31 s ago, over 30 s"),
            "{why}"
        );
        let mut quick = rollout();
        quick.gates.max_silent_secs = 2;
        assert_eq!(
            next_step(&quick, now, ready, |_| Some(10)),
            Next::Advance,
            "never under three of its writes (5 s apart)"
        );
    }

    #[test]
    fn a_rate_gate_that_could_never_fail_is_refused() {
        for rate in [1.0, 5.0, -0.1, f64::NAN, f64::INFINITY] {
            let mut r = rollout();
            r.gates.max_fallback_rate = rate;
            let e = r.gates.check().unwrap_err();
            assert!(e.contains("max_fallback_rate"), "{rate}: {e}");
            assert!(r.check().is_ok(), "a rollout read is not refused for it");
            let mut r = rollout();
            r.gates.max_shadow_diff_rate = rate;
            assert!(r
                .gates
                .check()
                .unwrap_err()
                .contains("max_shadow_diff_rate"));
        }
        let mut r = rollout();
        r.gates.max_fallback_rate = 0.0;
        r.gates.max_shadow_diff_rate = 0.99;
        assert!(r.gates.check().is_ok());
    }

    #[test]
    fn a_stage_waits_for_its_servers_and_one_failed_gate_reverts_it() {
        let mut r = rollout();
        assert!(r.check().is_ok());
        assert_eq!(r.members(), ["a"]);
        assert!(r.serves("a") && !r.serves("b"));
        assert_eq!(
            next_step(&r, 1001, |_| None, |_| None),
            Next::Wait,
            "a has not reported"
        );
        assert_eq!(
            next_step(&r, 1001, |_| Some(part(true, false)), |_| None),
            Next::Wait
        );
        assert_eq!(
            next_step(&r, 1001, |_| Some(part(true, true)), |_| None),
            Next::Advance
        );
        assert!(matches!(
            next_step(&r, 1001, |_| Some(part(false, false)), |_| None),
            Next::Revert(why) if why.starts_with("server a: shadow difference")
        ));
        r.stage = 2;
        assert_eq!(
            next_step(&r, 1001, |_| Some(part(true, true)), |_| None),
            Next::Finish
        );
        assert_eq!(
            next_step(&r, 1001, |s| (s != "b").then(|| part(true, true)), |_| None),
            Next::Wait,
            "b has not taken it"
        );
        r.state = RolloutState::Reverted;
        assert!(r.members().is_empty());
        assert_eq!(
            next_step(&r, 1001, |_| Some(part(false, false)), |_| None),
            Next::Wait
        );
        let mut bad = rollout();
        bad.stages = vec![2, 1, 3];
        assert!(bad.check().is_err());
    }

    #[test]
    fn a_server_of_a_stage_not_heard_for_too_long_reverts_the_rollout() {
        let mut r = rollout();
        r.stage = 1;
        let late = r.stage_started + r.gates.max_silent_secs + 1;
        let on_time = r.stage_started + r.gates.max_silent_secs;
        // b (in stage 1) has no key: its agent stopped.
        let without_b = |s: &str| (s != "b").then(|| part(true, true));
        assert_eq!(next_step(&r, on_time, without_b, |_| None), Next::Wait);
        assert!(matches!(
            next_step(&r, late, without_b, |_| None),
            Next::Revert(why) if why.starts_with("server b: has no readable key")
        ));
        // b has a key but never took the configuration.
        let b_untaken = |s: &str| {
            if s == "b" {
                Some(Status::default())
            } else {
                Some(part(true, true))
            }
        };
        assert!(matches!(
            next_step(&r, late, b_untaken, |_| None),
            Next::Revert(why) if why.starts_with("server b: has not taken")
        ));
        // c is not in the stage: its silence is not judged.
        let without_c = |s: &str| (s != "c").then(|| part(true, true));
        assert_eq!(next_step(&r, late, without_c, |_| None), Next::Advance);
        // A rollout that does not say when its stage started waits.
        r.stage_started = 0;
        assert_eq!(next_step(&r, u64::MAX, without_b, |_| None), Next::Wait);
        // A rollout written before the gate existed reads with its default.
        let mut old = serde_json::to_value(rollout()).unwrap();
        old["gates"]
            .as_object_mut()
            .unwrap()
            .remove("max_silent_secs");
        old.as_object_mut().unwrap().remove("stage_started");
        let old: Rollout = serde_json::from_value(old).unwrap();
        assert_eq!(old.gates.max_silent_secs, 30);
        assert_eq!(old.stage_started, 0);
    }

    #[test]
    fn gates_judge_rates_once_there_are_enough_requests() {
        let g = Gates {
            min_requests: 10,
            ..Gates::default()
        };
        let c = |steps, fallback, shadow_match, shadow_diff| Counts {
            steps,
            fallback,
            shadow_match,
            shadow_diff,
            ..Counts::default()
        };
        assert_eq!(failed_gate(&g, &c(5, 5, 0, 0)), None, "too few to judge");
        assert!(failed_gate(&g, &c(10, 1, 0, 0))
            .unwrap()
            .starts_with("fallback rate 0.100"));
        assert_eq!(
            failed_gate(&g, &c(1000, 10, 0, 0)),
            None,
            "1% is not over 1%"
        );
        assert!(failed_gate(&g, &c(20, 0, 10, 10))
            .unwrap()
            .starts_with("shadow difference"));
        let restarted = Counts {
            worker_starts: 1,
            ..Counts::default()
        };
        assert!(failed_gate(&g, &restarted).unwrap().contains("restarted"));
        let later = Counts {
            steps: 30,
            refused: 2,
            ..Counts::default()
        };
        assert_eq!(later.since(&c(10, 0, 0, 0)).steps, 20);
        assert!(failed_gate(&g, &later).unwrap().contains("refused"));
    }
}
