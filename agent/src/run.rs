//! `graft-agent run`: one server's agent. It reads the fleet's keys, keeps
//! watching them, and makes its nginx serve what they say: the fleet's
//! configuration (or a rollout's, while this server is in a stage that
//! has it) and the kill switches. It writes the server's state to its own
//! key, drives the rollout with the other agents, and reports to nginx's
//! metrics.
//!
//! Fail static: when etcd cannot be reached, is slow or holds garbage, the
//! server keeps serving the last configuration its nginx accepted (nginx
//! holds it, and the agent keeps it in the graft file on disk for a
//! restart), the metrics say etcd is down, and the agent reads everything
//! again when etcd answers. A configuration is applied whole by nginx's
//! live apply, or refused whole.
//!
//! Its parts: [`etcd`] (reaching etcd, watching the fleet's keys, writing
//! the server's own), [`reconcile`] (giving nginx the configuration and
//! kill switches the keys say) and [`rollout`] (judging this server's
//! health gates and moving a staged rollout on).
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ed25519_dalek::VerifyingKey;
use graft_engine::fleet_report::Report;
use tracing::{error, info, warn};

use crate::admin::{Admin, AdminError};
use crate::fleet::{Counts, Keys, RolloutPart, Status};

mod etcd;
mod reconcile;
mod rollout;

pub use etcd::{connect_any, EtcdAccess};
use etcd::{Etcd, LEASE_TTL};
use reconcile::{Configs, Kills};
use rollout::Judged;

pub struct Options {
    pub endpoints: Vec<String>,
    pub access: EtcdAccess,
    /// The operators' keys: only a configuration one of them signed is
    /// applied (none: every configuration is, signed or not).
    pub verify: Vec<VerifyingKey>,
    pub keys: Keys,
    pub name: String,
    pub admin: Admin,
    /// nginx's graft file: the last configuration applied, for a restart.
    pub file: PathBuf,
    /// Where the agent keeps what it must remember across its own restarts.
    pub state_dir: PathBuf,
    pub interval: Duration,
    /// How long etcd may take to answer a call.
    pub timeout: Duration,
}

/// The longest wait between two tries to reach etcd.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How often, while etcd does not answer, the log says so again.
const SAY_UNREACHABLE_EVERY: Duration = Duration::from_secs(60);
/// How often, while etcd answers, the time of its last answer is kept in
/// the state directory (and at once when it stops answering, and when
/// the agent stops).
const KEEP_CONTACT_EVERY: u64 = 60;

struct Agent {
    opts: Options,
    /// etcd: the fleet's keys as last read, and when it last answered.
    etcd: Etcd,
    /// What its nginx said at the last reading.
    nginx: Nginx,
    /// The configuration given to nginx, or not, and why.
    config: Configs,
    /// The modules killed, the kills refused, and those to kill again.
    kills: Kills,
    /// This server's part in the running rollout, as judged.
    judged: Option<Judged>,
}

/// What the agent's nginx said at the last reading.
#[derive(Default)]
struct Nginx {
    /// Why it could not be read or refused a call, last.
    error: Option<String>,
    /// When the nginx this agent last read started.
    started: Option<u64>,
    /// Since when its nginx has not answered (none while it answers).
    silent_since: Option<Instant>,
    /// The kill switches its nginx said it has killed, at the last
    /// reading (None: it does not say).
    kills: Option<BTreeSet<(String, Option<String>)>>,
    /// The configuration its nginx said it serves, at the last reading
    /// (None: it does not say), or the one it accepted since.
    serves: Option<String>,
}

/// A kill switch as the server's key names it: `module`, `module/zone`.
fn switch_name((module, zone): &(String, Option<String>)) -> String {
    match zone {
        Some(zone) => format!("{module}/{zone}"),
        None => module.clone(),
    }
}

/// Seconds since the epoch, as the rollout's times are written.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs a blocking call to nginx's admin API off the event loop.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

async fn within<T, E: std::fmt::Display>(
    limit: Duration,
    what: &str,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {} ms", limit.as_millis())),
    }
}

/// Runs the agent until SIGTERM or SIGINT (see [`crate::signal::catch`]).
pub async fn run(opts: Options) -> Result<(), String> {
    let mut signals =
        crate::signal::catch().map_err(|e| format!("cannot catch SIGTERM and SIGINT: {e}"))?;
    let mut agent = Agent::new(opts);
    if agent.opts.verify.is_empty() {
        warn!("configurations are not verified (no --verify-key): whoever can write to etcd under {} chooses what this server serves", agent.opts.keys.all());
    } else {
        info!(
            "applying only configurations signed by the operator keys {}",
            agent
                .opts
                .verify
                .iter()
                .map(crate::sign::fingerprint)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    info!(
        "graft-agent {} for server {}: reaching etcd ({}) for the keys under {}; etcd last answered {}",
        env!("CARGO_PKG_VERSION"),
        agent.opts.name,
        agent.opts.endpoints.join(", "),
        agent.opts.keys.all(),
        agent.last_answer()
    );
    let why = tokio::select! {
        why = signals.caught() => why,
        never = agent.serve() => never,
    };
    agent.keep_contact(true);
    info!("{why}: stopping; nginx serves on as it is, and the server's key goes in {LEASE_TTL} s");
    Ok(())
}

impl Agent {
    fn new(opts: Options) -> Agent {
        let contact = load_contact(&opts.state_dir);
        Agent {
            etcd: Etcd::new(contact),
            nginx: Nginx::default(),
            config: Configs::new(load_revision(&opts.state_dir)),
            kills: Kills::new(load_killed(&opts.state_dir)),
            judged: None,
            opts,
        }
    }

    /// Serves its server whatever etcd does: follows the fleet's keys
    /// while etcd answers, and tries it again when it stops.
    async fn serve(&mut self) -> ! {
        let mut backoff = Duration::from_millis(100);
        // When the log last said that etcd does not answer, in this outage.
        let mut said: Option<Instant> = None;
        loop {
            let started = Instant::now();
            if let Err(e) = self.connected().await {
                if self.etcd.up {
                    warn!("etcd: {e}; serving the last good configuration until it answers");
                    said = Some(Instant::now());
                    self.etcd.up = false;
                    self.keep_contact(true);
                } else if said.is_none_or(|t| t.elapsed() >= SAY_UNREACHABLE_EVERY) {
                    warn!(
                        "etcd does not answer (it last answered {}): {e}; serving the last good configuration until it answers",
                        self.last_answer()
                    );
                    said = Some(Instant::now());
                }
            }
            if started.elapsed() > Duration::from_secs(5) {
                backoff = Duration::from_millis(100);
            }
            // Without etcd the server goes on as it is; nginx hears so.
            self.local().await;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// What the server does on its own: its configuration and kill
    /// switches as last read, its health, and its report to nginx.
    async fn local(&mut self) {
        let read_at = Instant::now();
        let reading = blocking(|| self.opts.admin.counts());
        // An nginx that answered, even with an error, is asked for its
        // kill switches: only one that does not answer is left alone.
        let answers = !matches!(reading, Err(AdminError::Unreachable(_)));
        let counts = match reading {
            Ok(reading) => {
                self.nginx.silent_since = None;
                let counts = reading.counts;
                self.nginx.kills = reading.kills;
                self.nginx.serves = reading.served;
                // A restart: an nginx that never had a report, or another
                // start time than the one this agent saw last.
                let restarted = (!reading.reported
                    && (self.config.applied.is_some() || !self.kills.killed.is_empty()))
                    || (self.nginx.started.is_some() && reading.started != self.nginx.started);
                self.nginx.started = reading.started;
                if restarted {
                    warn!(
                        "nginx started again: giving it its configuration and kill switches again"
                    );
                    // Its counts started again from zero: a rollout's
                    // gates cannot read them across the restart, and a
                    // server that restarted while it served a rollout's
                    // configuration fails them.
                    if let Some(id) = self.config.applied.as_ref().and_then(|a| a.rollout.clone()) {
                        self.judged = Some(Judged {
                            id,
                            failed: Some("nginx started again while serving the rollout".into()),
                            counts: Counts::default(),
                            ready: false,
                        });
                    }
                    self.config.applied = None;
                    // Its kill switches went with its shared memory:
                    // killed again, every one, even before etcd answers
                    // (those this agent killed are kept on disk).
                    self.kills.stale = true;
                    self.kills.refused.clear();
                    // A configuration it refused is asked again.
                    self.config.refused = None;
                }
                Some(counts)
            }
            Err(e) => {
                self.nginx.silent_since.get_or_insert_with(Instant::now);
                self.nginx_failed(e);
                None
            }
        };
        // An nginx that did not answer is not asked again this tick: a
        // hung one would hold the tick, and the lease, for each call.
        // Kill switches go first (a live apply may take long), and again
        // after a configuration applied (it may bring a switch's zone).
        if answers {
            self.reconcile_kills();
        }
        if self.etcd.synced {
            self.reconcile_config(counts);
            if answers && self.kills.stale {
                self.reconcile_kills();
            }
            self.judge(counts, read_at);
        }
        if counts.is_some() {
            let report = self.report();
            let mut sent = blocking(|| self.opts.admin.report(&report.text()));
            // An nginx older than the signatures' fields refuses the
            // whole report for them: it is given the rest.
            if matches!(&sent, Err(AdminError::Refused(why)) if why.contains("verify_keys")) {
                let older = report.text_without_signatures();
                sent = blocking(|| self.opts.admin.report(&older));
            }
            if let Err(e) = sent {
                self.nginx_failed(e);
            }
        }
        self.keep_contact(false);
    }

    /// When etcd last answered, for the log.
    fn last_answer(&self) -> String {
        match self.etcd.contact.load(Ordering::Relaxed) {
            0 => "never".into(),
            at => format!("{} s ago", now_secs().saturating_sub(at)),
        }
    }

    /// Keeps the time of etcd's last answer in the state directory: when
    /// it moved on by `KEEP_CONTACT_EVERY` seconds, or at once (`now`).
    fn keep_contact(&mut self, now: bool) {
        let contact = self.etcd.contact.load(Ordering::Relaxed);
        if contact == self.etcd.contact_kept
            || !(now || contact >= self.etcd.contact_kept + KEEP_CONTACT_EVERY)
        {
            return;
        }
        match save_contact(&self.opts.state_dir, contact) {
            Ok(()) => {
                self.etcd.contact_kept = contact;
                self.etcd.contact_error = None;
            }
            Err(e) => {
                let why = format!("{}: {e}", self.opts.state_dir.display());
                if self.etcd.contact_error.as_ref() != Some(&why) {
                    error!("{why}: a restarted agent would not know when etcd last answered");
                }
                self.etcd.contact_error = Some(why);
            }
        }
    }

    fn nginx_failed(&mut self, e: AdminError) {
        let text = e.to_string();
        if self.nginx.error.as_deref() != Some(&text) {
            error!("{text}");
        }
        self.nginx.error = Some(text);
    }

    fn status(&self) -> Status {
        // What its nginx says it serves; where it came from, when that
        // is what this agent applied.
        let applied = self
            .config
            .applied
            .as_ref()
            .filter(|a| self.nginx.serves.as_ref().is_none_or(|s| *s == a.hash));
        Status {
            name: self.opts.name.clone(),
            config: self
                .nginx
                .serves
                .clone()
                .or_else(|| applied.map(|a| a.hash.clone())),
            source: applied.map(|a| a.source.to_string()),
            revision: applied.map_or(0, |a| a.revision),
            refused: self.config.refused.clone(),
            unverified: self.config.unverified.clone(),
            kills: self.kills.killed.iter().map(switch_name).collect(),
            kills_refused: self
                .kills
                .refused
                .iter()
                .map(|(switch, (why, _))| format!("{}: {why}", switch_name(switch)))
                .collect(),
            rollout: self.judged.as_ref().map(|j| RolloutPart {
                id: j.id.clone(),
                healthy: j.failed.is_none(),
                ready: j.ready,
                reason: j.failed.clone(),
                counts: j.counts,
            }),
            nginx_error: self.nginx.error.clone(),
            key_error: match (&self.config.key_error, &self.kills.key_error) {
                (Some(a), Some(b)) => Some(format!("{a}; {b}")),
                (a, b) => a.clone().or_else(|| b.clone()),
            },
            file_error: self.config.file_error.clone(),
            drift: self.config.drift.clone(),
        }
    }

    /// The report for nginx's metrics.
    fn report(&self) -> Report {
        let rollout = self.rollout().ok().flatten();
        // A rollout's configuration, running or not: a server that could
        // not go back after a rollback (its nginx refused the fleet's)
        // says so.
        let serving = self
            .config
            .applied
            .as_ref()
            .is_some_and(|a| a.rollout.is_some());
        let healthy = self.judged.as_ref().is_none_or(|j| j.failed.is_none());
        Report {
            etcd_up: self.etcd.up,
            etcd_contact: self.etcd.contact.load(Ordering::Relaxed),
            config_revision: self
                .config
                .applied
                .as_ref()
                .map_or(self.config.last_revision, |a| a.revision),
            rollout_stage: rollout.as_ref().map_or(0, |(r, _)| r.stage),
            rollout_state: rollout.as_ref().map(|(r, _)| r.state),
            rollout_serving: serving,
            healthy,
            // Only to an nginx that names what it serves (an older one
            // would refuse the whole report for a field it does not know).
            drift: self.nginx.serves.as_ref().map(|served| {
                let drifted = self.config.wanted.as_ref().is_some_and(|w| w != served);
                (drifted, self.config.drift.as_ref().map_or(0, |d| d.repairs))
            }),
            verify_keys: self.opts.verify.len(),
            config_unverified: self.config.unverified.is_some(),
        }
    }
}

/// Writes the graft file whole: a reader sees the old text or the new one.
fn write_file(path: &Path, text: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".graft-agent");
    let tmp = PathBuf::from(tmp);
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(text)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

fn killed_file(dir: &Path) -> PathBuf {
    dir.join("kills.json")
}

fn load_killed(dir: &Path) -> BTreeSet<(String, Option<String>)> {
    match std::fs::read(killed_file(dir)) {
        Ok(text) => serde_json::from_slice(&text).unwrap_or_else(|e| {
            error!(
                "{}: {e}: the modules killed before are forgotten",
                killed_file(dir).display()
            );
            BTreeSet::new()
        }),
        Err(_) => BTreeSet::new(),
    }
}

fn save_killed(dir: &Path, killed: &BTreeSet<(String, Option<String>)>) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let text = serde_json::to_vec(killed).map_err(std::io::Error::other)?;
    write_file(&killed_file(dir), &text)
}

fn revision_file(dir: &Path) -> PathBuf {
    dir.join("revision")
}

/// The etcd revision of the configuration last applied, as the agent
/// before this one left it (0 when none).
fn load_revision(dir: &Path) -> i64 {
    std::fs::read_to_string(revision_file(dir))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

fn save_revision(dir: &Path, revision: i64) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    write_file(&revision_file(dir), revision.to_string().as_bytes())
}

fn contact_file(dir: &Path) -> PathBuf {
    dir.join("etcd-contact")
}

/// When etcd last answered (seconds since the epoch), as the agent before
/// this one left it (0 when never).
fn load_contact(dir: &Path) -> u64 {
    std::fs::read_to_string(contact_file(dir))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

fn save_contact(dir: &Path, at: u64) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    write_file(&contact_file(dir), at.to_string().as_bytes())
}
