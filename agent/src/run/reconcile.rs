//! Giving nginx what the fleet's keys say: the configuration (verified
//! when the agent holds operator keys, written to the graft file for a
//! restart, put back when its nginx drifts) and the kill switches.
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::rollout::Judged;
use super::{blocking, save_killed, save_revision, switch_name, write_file, Agent};
use crate::admin::AdminError;
use crate::fleet::{Counts, Drift, Refused};

/// How long before a kill switch nginx refused is asked again (a
/// configuration applied asks at once).
const KILL_RETRY: Duration = Duration::from_secs(30);

/// What the agent has done to its nginx.
pub(super) struct Applied {
    pub hash: String,
    pub revision: i64,
    pub source: &'static str,
    pub rollout: Option<String>,
    pub at: Instant,
    /// The counts when it was applied, for the gates (None until a
    /// reading came: a count of zero would read as every worker restarted).
    pub baseline: Option<Counts>,
}

/// A signature checked: the configuration's hash, the signature (none:
/// there was none), and the verdict.
pub(super) type Checked = (String, Option<Vec<u8>>, Result<(), String>);

/// The configuration the agent gives its nginx, and what stands in its way.
pub(super) struct Configs {
    pub applied: Option<Applied>,
    pub refused: Option<Refused>,
    /// The configuration the keys say, not applied: its signature does
    /// not verify.
    pub unverified: Option<Refused>,
    /// The last signature checked: the configuration's hash, the
    /// signature, and the verdict (a configuration is read every tick).
    pub checked: Option<Checked>,
    /// The configuration the keys say this server serves (None: no
    /// configuration in etcd, or the keys not read yet).
    pub wanted: Option<String>,
    /// Its nginx found serving another configuration than the keys say:
    /// the last time, and how often it was put back.
    pub drift: Option<Drift>,
    /// The etcd revision of the configuration this agent (or the one
    /// before it, from its state directory) last applied: what the
    /// metrics say the server serves until it applies again.
    pub last_revision: i64,
    /// Why the graft file does not hold the configuration applied.
    pub file_error: Option<String>,
    /// A key of the fleet's that could not be read.
    pub key_error: Option<String>,
}

impl Configs {
    pub fn new(last_revision: i64) -> Configs {
        Configs {
            applied: None,
            refused: None,
            unverified: None,
            checked: None,
            wanted: None,
            drift: None,
            last_revision,
            file_error: None,
            key_error: None,
        }
    }
}

/// The kill switches the agent kills in its nginx.
pub(super) struct Kills {
    /// Kill switches this agent killed, kept on disk.
    pub killed: BTreeSet<(String, Option<String>)>,
    /// Kill switches nginx refused (an unknown module, a zone without
    /// it, no room to store it), and when: asked again after
    /// `KILL_RETRY`, and at once when a configuration is applied.
    pub refused: BTreeMap<(String, Option<String>), (String, Instant)>,
    /// Whether the kill switches are to be killed again, every one: a
    /// configuration was applied (it may bring the zone of a switch nginx
    /// refused), nginx started again, or it lost one this agent killed.
    pub stale: bool,
    /// Keys under `P/kill/` that name no kill switch.
    pub key_error: Option<String>,
}

impl Kills {
    /// `killed`: those this agent (or the one before it) killed.
    pub fn new(killed: BTreeSet<(String, Option<String>)>) -> Kills {
        Kills {
            killed,
            refused: BTreeMap::new(),
            stale: false,
            key_error: None,
        }
    }
}

impl Agent {
    /// Gives nginx the configuration the keys say it should serve.
    pub(super) fn reconcile_config(&mut self, counts: Option<Counts>) {
        let rollout = match self.rollout() {
            Ok(r) => r,
            Err(e) => {
                // An unreadable rollout moves nothing, either way.
                if self.config.key_error.as_deref() != Some(&e) {
                    error!("{e}: keeping the configuration serving");
                }
                self.config.key_error = Some(e);
                return;
            }
        };
        self.config.key_error = None;
        let (text, revision, source, rollout_id) = match &rollout {
            Some((r, revision)) if r.serves(&self.opts.name) => (
                r.config.as_bytes().to_vec(),
                *revision,
                "rollout",
                Some(r.id.clone()),
            ),
            _ => match self.etcd.view.get(&self.opts.keys.config()) {
                Some((text, revision)) => (text.clone(), *revision, "config", None),
                // No configuration in etcd: the server keeps its own file.
                None => {
                    self.config.wanted = None;
                    return;
                }
            },
        };
        let hash = crate::fleet::config_hash(&text);
        if let Err(why) = self.verify(&text, &hash, source) {
            // Nothing changes: no operator signed it. A rollout's member
            // fails its gate, and the rollout goes back.
            if self.config.unverified.as_ref()
                != Some(&Refused {
                    config: hash.clone(),
                    reason: why.clone(),
                })
            {
                warn!("not applying the {source} configuration {hash} (etcd revision {revision}), the running one goes on: {why}");
            }
            if let Some(id) = rollout_id {
                self.judged = Some(Judged {
                    id,
                    failed: Some(format!("the configuration is not applied: {why}")),
                    counts: Counts::default(),
                    ready: false,
                });
            }
            self.config.unverified = Some(Refused {
                config: hash,
                reason: why,
            });
            self.config.wanted = None;
            return;
        }
        self.config.unverified = None;
        self.config.wanted = Some(hash.clone());
        // Its nginx serves another configuration than the one this agent
        // gave it (applied by hand through its admin API, a reload of
        // another file): the keys win, and it is given theirs again.
        let drifted = self.nginx.serves.clone().filter(|served| {
            *served != hash && self.config.applied.as_ref().is_some_and(|a| a.hash == hash)
        });
        if let Some(served) = &drifted {
            warn!("nginx serves the configuration {served}, not the {source} configuration {hash} its agent gave it (applied by hand through its admin API?): applying the keys' again");
            self.config.applied = None;
        }
        self.give(text, hash.clone(), revision, source, rollout_id, counts);
        if let Some(served) = drifted {
            let repaired = self.config.applied.as_ref().is_some_and(|a| a.hash == hash);
            let drift = self.config.drift.get_or_insert_with(|| Drift {
                served: String::new(),
                wanted: String::new(),
                repairs: 0,
            });
            drift.served = served;
            drift.wanted = hash;
            drift.repairs += u64::from(repaired);
        }
    }

    /// Whether an operator key this agent holds signed `text` (named
    /// `hash`), the configuration of `source` (`config`, `rollout`):
    /// always, when it holds none.
    fn verify(&mut self, text: &[u8], hash: &str, source: &str) -> Result<(), String> {
        if self.opts.verify.is_empty() {
            return Ok(());
        }
        let key = if source == "rollout" {
            self.opts.keys.rollout_sig()
        } else {
            self.opts.keys.config_sig()
        };
        let signature = self.etcd.view.get(&key).map(|(v, _)| v.clone());
        if let Some((h, s, verdict)) = &self.config.checked {
            if h == hash && *s == signature {
                return verdict.clone();
            }
        }
        let verdict = crate::sign::verify(
            &self.opts.verify,
            self.opts.keys.prefix(),
            text,
            signature.as_deref(),
        )
        .map_err(|why| format!("{why} ({key})"));
        self.config.checked = Some((hash.to_string(), signature, verdict.clone()));
        verdict
    }

    /// Gives nginx `text`, the configuration the keys say, unless it was
    /// given it already or refused it.
    fn give(
        &mut self,
        text: Vec<u8>,
        hash: String,
        revision: i64,
        source: &'static str,
        rollout_id: Option<String>,
        counts: Option<Counts>,
    ) {
        if let Some(applied) = self.config.applied.as_mut().filter(|a| a.hash == hash) {
            if applied.rollout != rollout_id {
                applied.at = Instant::now();
                applied.baseline = counts;
            }
            applied.revision = revision;
            applied.source = source;
            applied.rollout = rollout_id;
            if self.config.last_revision != revision {
                self.remember_revision(revision);
            }
            return;
        }
        if self
            .config
            .refused
            .as_ref()
            .is_some_and(|r| r.config == hash)
        {
            return;
        }
        let Some(_) = counts else {
            return; // nginx does not answer: try again later
        };
        // An empty body would make nginx apply its own file instead.
        let applied = if text.trim_ascii().is_empty() {
            Err(AdminError::Refused(
                "the key is empty: not a configuration".into(),
            ))
        } else {
            blocking(|| self.opts.admin.apply(&text))
        };
        let given = Given {
            hash,
            revision,
            source,
            rollout_id,
        };
        match applied {
            Ok(message) => self.taken(&text, given, &message),
            Err(AdminError::Refused(reason)) => self.refused_by_nginx(given, reason),
            Err(e) => self.nginx_failed(e),
        }
    }

    /// nginx took a configuration: the graft file kept for a restart, the
    /// counts its gates start from, the kill switches given again.
    fn taken(&mut self, text: &[u8], given: Given, message: &str) {
        let Given {
            hash,
            revision,
            source,
            rollout_id,
        } = given;
        info!("applied the {source} configuration {hash} (etcd revision {revision}): {message}");
        self.nginx.serves = Some(hash.clone());
        self.config.file_error = write_file(&self.opts.file, text).err().map(|e| {
            let why = format!("{}: {e}", self.opts.file.display());
            error!("{why}: a restarted nginx would not serve this configuration");
            why
        });
        let baseline = blocking(|| self.opts.admin.counts()).map(|r| r.counts).ok();
        self.config.applied = Some(Applied {
            hash,
            revision,
            source,
            rollout: rollout_id,
            at: Instant::now(),
            baseline,
        });
        self.config.refused = None;
        self.nginx.error = None;
        self.kills.stale = true;
        self.remember_revision(revision);
    }

    /// nginx refused a configuration: the running one goes on, and a
    /// rollout's fails this server's gate.
    fn refused_by_nginx(&mut self, given: Given, reason: String) {
        let Given {
            hash,
            revision,
            source,
            rollout_id,
        } = given;
        error!("nginx refused the {source} configuration {hash} (etcd revision {revision}), the running one goes on: {reason}");
        let failed = format!("refused the configuration: {reason}");
        self.config.refused = Some(Refused {
            config: hash,
            reason,
        });
        if let Some(id) = rollout_id {
            self.judged = Some(Judged {
                id,
                failed: Some(failed),
                counts: Counts::default(),
                ready: false,
            });
        }
    }

    /// The etcd revision of the configuration nginx serves, kept in the
    /// state directory.
    fn remember_revision(&mut self, revision: i64) {
        self.config.last_revision = revision;
        if let Err(e) = save_revision(&self.opts.state_dir, revision) {
            error!("{}: {e}", self.opts.state_dir.display());
        }
    }

    /// The kill switches the keys kill; a key under `P/kill/` that names
    /// none (`kill//waf`, `kill/waf/`) is said in the log and the
    /// server's key, never read as some other switch.
    fn wanted_kills(&mut self) -> BTreeSet<(String, Option<String>)> {
        let prefix = self.opts.keys.kills();
        let mut bad = Vec::new();
        let wanted = self
            .etcd
            .view
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter_map(|(k, _)| {
                let switch = self.opts.keys.kill_of(k);
                if switch.is_none() {
                    bad.push(format!(
                        "{k}: not a kill switch ({prefix}<module> or {prefix}<module>/<zone>)"
                    ));
                }
                switch
            })
            .collect();
        let bad = (!bad.is_empty()).then(|| bad.join("; "));
        if bad.is_some() && bad != self.kills.key_error {
            error!("{}", bad.as_deref().unwrap_or_default());
        }
        self.kills.key_error = bad;
        wanted
    }

    /// Kills the modules the keys kill and revives those they no
    /// longer do; before the keys were ever read, kills again those this
    /// agent killed (a restarted nginx while etcd is down) and revives none.
    pub(super) fn reconcile_kills(&mut self) {
        let wanted = if self.etcd.synced {
            self.wanted_kills()
        } else {
            self.kills.killed.clone()
        };
        self.notice_lost_kills(&wanted);
        let stale = std::mem::take(&mut self.kills.stale);
        if stale {
            self.kills.refused.clear();
        }
        self.kills.refused.retain(|k, _| wanted.contains(k));
        let mut changed = false;
        let mut unreachable = false;
        for (switch, killed) in self.kills_to_send(&wanted, stale) {
            match self.send_kill(switch, killed) {
                Sent::Changed => changed = true,
                Sent::Unchanged => {}
                Sent::Unreachable => unreachable = true,
            }
        }
        // Not every switch reached nginx: all of them again next time.
        self.kills.stale |= stale && unreachable;
        if changed {
            if let Err(e) = save_killed(&self.opts.state_dir, &self.kills.killed) {
                error!("{}: {e}", self.opts.state_dir.display());
            }
        }
    }

    /// A switch this agent killed that its nginx no longer has (revived
    /// through the admin API by hand, its table cleared): every one is
    /// sent again.
    fn notice_lost_kills(&mut self, wanted: &BTreeSet<(String, Option<String>)>) {
        let Some(actual) = &self.nginx.kills else {
            return;
        };
        let lost: Vec<String> = self
            .kills
            .killed
            .iter()
            .filter(|k| wanted.contains(*k) && !actual.contains(*k))
            .filter(|k| !self.kills.refused.contains_key(*k))
            .map(switch_name)
            .collect();
        if !lost.is_empty() && !self.kills.stale {
            warn!(
                "nginx does not have the kill switches {} the fleet kills: killing them again",
                lost.join(", ")
            );
            self.kills.stale = true;
        }
    }

    /// The switches to send nginx: `true` to kill (those wanted and not
    /// killed yet, every one when `stale`; one nginx refused waits
    /// `KILL_RETRY`), `false` to revive (those killed and no longer wanted).
    fn kills_to_send(
        &self,
        wanted: &BTreeSet<(String, Option<String>)>,
        stale: bool,
    ) -> Vec<((String, Option<String>), bool)> {
        let to_kill = wanted
            .iter()
            .filter(|k| stale || !self.kills.killed.contains(*k))
            .filter(|k| {
                self.kills
                    .refused
                    .get(*k)
                    .is_none_or(|(_, at)| at.elapsed() >= KILL_RETRY)
            })
            .map(|k| (k.clone(), true));
        let to_revive = self
            .kills
            .killed
            .difference(wanted)
            .map(|k| (k.clone(), false));
        to_kill.chain(to_revive).collect()
    }

    /// Kills (`killed`) or revives one module in nginx, and keeps what
    /// nginx said.
    fn send_kill(&mut self, switch: (String, Option<String>), killed: bool) -> Sent {
        let (module, zone) = &switch;
        match blocking(|| self.opts.admin.switch(module, zone.as_deref(), killed)) {
            Ok(()) => {
                let place = zone.as_deref().unwrap_or("every zone");
                info!(
                    "kill switch of {module} in {place} {}",
                    if killed { "killed" } else { "revived" }
                );
                if let Some(actual) = self.nginx.kills.as_mut() {
                    if killed {
                        actual.insert(switch.clone());
                    } else {
                        actual.remove(&switch);
                    }
                }
                if killed {
                    self.kills.refused.remove(&switch);
                    self.kills.killed.insert(switch);
                } else {
                    self.kills.killed.remove(&switch);
                }
                Sent::Changed
            }
            Err(AdminError::Refused(why)) => {
                error!("nginx refused the kill switch of {module}: {why}");
                if killed {
                    // One killed before stays in `killed`: nginx keeps it
                    // (by zone and module names) and a revive must revive
                    // it.
                    self.kills.refused.insert(switch, (why, Instant::now()));
                    Sent::Unchanged
                } else {
                    self.kills.killed.remove(&switch);
                    Sent::Changed
                }
            }
            Err(e) => {
                self.nginx_failed(e);
                Sent::Unreachable
            }
        }
    }
}

/// What sending one kill switch to nginx came to.
enum Sent {
    /// nginx took it (or refused a revive: the agent forgets the switch).
    Changed,
    /// nginx refused a kill: asked again after `KILL_RETRY`.
    Unchanged,
    /// nginx could not be reached.
    Unreachable,
}

/// A configuration given to nginx: its name, where it came from.
struct Given {
    hash: String,
    revision: i64,
    source: &'static str,
    rollout_id: Option<String>,
}
