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
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ed25519_dalek::VerifyingKey;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity,
    LeaseKeepAliveStream, LeaseKeeper, PutOptions, TlsOptions, Txn, TxnOp, WatchOptions,
};
use tracing::{error, info, warn};

use crate::admin::{Admin, AdminError};
use crate::fleet::{
    failed_gate, next_step, Counts, Drift, Keys, Next, Refused, Rollout, RolloutPart, RolloutState,
    Status,
};

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

/// How the agent reaches etcd: over TLS (with a client certificate or
/// without) or not, as an etcd user or not.
#[derive(Clone, Default)]
pub struct EtcdAccess {
    tls: Option<TlsOptions>,
    user: Option<(String, String)>,
}

impl EtcdAccess {
    /// Reads the files at once: a missing certificate is said at start,
    /// not at the first connection.
    pub fn new(
        endpoints: &[String],
        ca: Option<&Path>,
        identity: Option<(&Path, &Path)>,
        user: Option<(&str, &Path)>,
    ) -> Result<EtcdAccess, String> {
        let read =
            |path: &Path| std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()));
        let tls = if ca.is_some() || identity.is_some() {
            if let Some(plain) = endpoints.iter().find(|e| !e.starts_with("https://")) {
                return Err(format!(
                    "etcd's TLS options are given, but {plain} is not an https:// URL"
                ));
            }
            let mut tls = TlsOptions::new();
            if let Some(ca) = ca {
                tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
            }
            if let Some((cert, key)) = identity {
                tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            Some(tls)
        } else {
            None
        };
        let user = match user {
            Some((name, file)) => {
                let text = String::from_utf8(read(file)?)
                    .map_err(|_| format!("{}: not UTF-8", file.display()))?;
                let password = text.lines().next().unwrap_or_default().to_string();
                Some((name.to_string(), password))
            }
            None => None,
        };
        Ok(EtcdAccess { tls, user })
    }

    fn options(&self) -> ConnectOptions {
        let mut options = ConnectOptions::new();
        if let Some(tls) = &self.tls {
            options = options.with_tls(tls.clone());
        }
        if let Some((name, password)) = &self.user {
            // etcd's tokens expire (5 minutes by default): a new one is
            // asked for then, and the watch goes on.
            options = options
                .with_user(name.clone(), password.clone())
                .with_auto_token_refresh(true);
        }
        options
    }
}

/// Where the report's fields about signatures start.
const SIGNATURE_FIELDS: &str = "&verify_keys=";

/// The lease of a server's key, in seconds: the key goes this long after
/// its agent stopped.
const LEASE_TTL: i64 = 10;
/// How long before a kill switch nginx refused is asked again (a
/// configuration applied asks at once).
const KILL_RETRY: Duration = Duration::from_secs(30);
/// How often a server's key is written when only its counts changed (or,
/// in a rollout, nothing).
const COUNTS_EVERY: Duration = Duration::from_secs(crate::fleet::PART_EVERY_SECS);
/// The longest wait between two tries to reach etcd.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How often, while etcd does not answer, the log says so again.
const SAY_UNREACHABLE_EVERY: Duration = Duration::from_secs(60);
/// How often, while etcd answers, the time of its last answer is kept in
/// the state directory (and at once when it stops answering, and when
/// the agent stops).
const KEEP_CONTACT_EVERY: u64 = 60;

/// What the agent has done to its nginx.
struct Applied {
    hash: String,
    revision: i64,
    source: &'static str,
    rollout: Option<String>,
    at: Instant,
    /// The counts when it was applied, for the gates (None until a
    /// reading came: a count of zero would read as every worker restarted).
    baseline: Option<Counts>,
}

/// A server's part in a rollout, judged by the agent.
struct Judged {
    id: String,
    failed: Option<String>,
    counts: Counts,
    ready: bool,
}

struct Agent {
    opts: Options,
    /// The fleet's keys as last read: value and modification revision.
    view: BTreeMap<String, (Vec<u8>, i64)>,
    /// When this agent last saw each server's key written (by its own
    /// clock: servers' clocks are never compared).
    heard: BTreeMap<String, Instant>,
    applied: Option<Applied>,
    refused: Option<Refused>,
    /// The configuration the keys say, not applied: its signature does
    /// not verify.
    unverified: Option<Refused>,
    /// The last signature checked: the configuration's hash, the
    /// signature, and the verdict (a configuration is read every tick).
    checked: Option<Checked>,
    /// Kill switches this agent threw, kept on disk.
    thrown: BTreeSet<(String, Option<String>)>,
    /// Kill switches nginx refused (an unknown module, a zone without
    /// it, no room to store it), and when: asked again after
    /// `KILL_RETRY`, and at once when a configuration is applied.
    kill_refused: BTreeMap<(String, Option<String>), (String, Instant)>,
    /// Whether the kill switches are to be thrown again, every one: a
    /// configuration was applied (it may bring the zone of a switch nginx
    /// refused), nginx started again, or it lost one this agent threw.
    kills_stale: bool,
    judged: Option<Judged>,
    etcd_up: bool,
    /// When etcd last answered (seconds since the epoch; 0: never), also
    /// written by the task that keeps the lease, and kept in the state
    /// directory: an agent started while etcd is down says when it last
    /// answered the agent before it.
    etcd_contact: Arc<AtomicU64>,
    /// The contact time last kept there, and why it could not be.
    contact_kept: u64,
    contact_error: Option<String>,
    nginx_error: Option<String>,
    /// The status last written to etcd, the same with its counts zeroed,
    /// and when.
    written: Option<(String, String, Instant)>,
    /// Whether the fleet's keys were read once: before, the agent changes
    /// nothing (an agent started while etcd is down keeps what it has).
    synced: bool,
    /// The etcd member to try first.
    member: usize,
    /// A key of the fleet's that could not be read.
    key_error: Option<String>,
    /// Why the graft file does not hold the configuration applied.
    file_error: Option<String>,
    /// Keys under `P/kill/` that name no kill switch.
    kill_key_error: Option<String>,
    /// The etcd revision of the configuration this agent (or the one
    /// before it, from its state directory) last applied: what the
    /// metrics say the server serves until it applies again.
    last_revision: i64,
    /// When the nginx this agent last read started.
    nginx_started: Option<u64>,
    /// Since when its nginx has not answered (none while it answers).
    nginx_silent_since: Option<Instant>,
    /// The kill switches its nginx said it has thrown, at the last
    /// reading (None: it does not say).
    nginx_kills: Option<BTreeSet<(String, Option<String>)>>,
    /// The configuration its nginx said it serves, at the last reading
    /// (None: it does not say), or the one it accepted since.
    nginx_serves: Option<String>,
    /// The configuration the keys say this server serves (None: no
    /// configuration in etcd, or the keys not read yet).
    wanted: Option<String>,
    /// Its nginx found serving another configuration than the keys say:
    /// the last time, and how often it was put back.
    drift: Option<Drift>,
}

/// A signature checked: the configuration's hash, the signature (none:
/// there was none), and the verdict.
type Checked = (String, Option<Vec<u8>>, Result<(), String>);

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

/// Connects to one of etcd's members that answers a read (a member cut
/// off from the others' majority cannot), trying each from `first` on;
/// returns the client and the member's index.
pub async fn connect_any(
    endpoints: &[String],
    first: usize,
    timeout: Duration,
    probe_key: &str,
    access: &EtcdAccess,
) -> Result<(Client, usize), String> {
    let mut errors = Vec::new();
    for k in 0..endpoints.len() {
        let i = (first + k) % endpoints.len();
        let options = access
            .options()
            .with_connect_timeout(timeout)
            .with_timeout(timeout)
            // HTTP/2 pings on a quiet connection, no more often than
            // etcd allows (its --grpc-keepalive-min-time, 5 s by default,
            // answers faster pings by closing the connection: a tick held
            // up by a hung nginx used to cost the watch).
            .with_keep_alive(Duration::from_secs(10), timeout.max(Duration::from_secs(3)))
            .with_keep_alive_while_idle(true);
        let attempt = async {
            let mut client = within(
                timeout,
                "connecting",
                Client::connect([endpoints[i].as_str()], Some(options)),
            )
            .await?;
            within(
                timeout,
                "reading",
                client.get(probe_key, Some(GetOptions::new().with_count_only())),
            )
            .await?;
            Ok::<_, String>(client)
        };
        match attempt.await {
            Ok(client) => return Ok((client, i)),
            Err(e) => errors.push(format!("{}: {e}", endpoints[i])),
        }
    }
    Err(errors.join("; "))
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
        let thrown = load_thrown(&opts.state_dir);
        let contact = load_contact(&opts.state_dir);
        let opts_state_dir = opts.state_dir.clone();
        Agent {
            opts,
            view: BTreeMap::new(),
            heard: BTreeMap::new(),
            applied: None,
            refused: None,
            unverified: None,
            checked: None,
            thrown,
            kill_refused: BTreeMap::new(),
            kills_stale: false,
            judged: None,
            etcd_up: false,
            etcd_contact: Arc::new(AtomicU64::new(contact)),
            contact_kept: contact,
            contact_error: None,
            nginx_error: None,
            written: None,
            synced: false,
            member: 0,
            key_error: None,
            file_error: None,
            kill_key_error: None,
            last_revision: load_revision(&opts_state_dir),
            nginx_started: None,
            nginx_silent_since: None,
            nginx_kills: None,
            nginx_serves: None,
            wanted: None,
            drift: None,
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
                if self.etcd_up {
                    warn!("etcd: {e}; serving the last good configuration until it answers");
                    said = Some(Instant::now());
                    self.etcd_up = false;
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

    /// Reaches etcd, reads the fleet's keys and follows them until a call
    /// fails.
    async fn connected(&mut self) -> Result<(), String> {
        let t = self.opts.timeout;
        // Members that do not answer take two timeouts each to give up
        // on: meanwhile the server goes on being looked after (a
        // restarted nginx gets its kill switches, nginx hears the agent).
        let endpoints = self.opts.endpoints.clone();
        let probe = self.opts.keys.config();
        let access = self.opts.access.clone();
        let connecting = connect_any(&endpoints, self.member, t, &probe, &access);
        tokio::pin!(connecting);
        let mut tick = tokio::time::interval(self.opts.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.reset();
        let connected = loop {
            tokio::select! {
                connected = &mut connecting => break connected,
                _ = tick.tick() => self.local().await,
            }
        };
        let (mut client, member) = connected.inspect_err(|_| self.member += 1)?;
        // After a failure, the next try starts with the next member.
        self.member = member + 1;
        let prefix = self.opts.keys.all();
        let got = within(
            t,
            "reading the fleet's keys",
            client.get(prefix.as_str(), Some(GetOptions::new().with_prefix())),
        )
        .await?;
        let revision = got.header().map_or(0, |h| h.revision());
        self.view = got
            .kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    (kv.value().to_vec(), kv.mod_revision()),
                )
            })
            .collect();
        // Every server is news again once read whole.
        self.heard = self
            .view
            .keys()
            .filter_map(|k| self.opts.keys.server_of(k))
            .map(|name| (name.to_string(), Instant::now()))
            .collect();
        let lease = within(t, "granting a lease", client.lease_grant(LEASE_TTL, None))
            .await?
            .id();
        let (keeper, alive) =
            within(t, "keeping the lease", client.lease_keep_alive(lease)).await?;
        let mut keeping = keep_lease(
            keeper,
            alive,
            self.opts.interval,
            t,
            self.etcd_contact.clone(),
        );
        let mut watch = within(
            t,
            "watching",
            client.watch(
                prefix.as_str(),
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(revision + 1),
                ),
            ),
        )
        .await?;
        if !self.etcd_up {
            info!(
                "etcd answers: {} keys under {prefix} at revision {revision}",
                self.view.len()
            );
        }
        self.etcd_up = true;
        self.synced = true;
        self.etcd_contact.store(now_secs(), Ordering::Relaxed);
        self.written = None;
        self.local().await;
        let mut tick = tokio::time::interval(self.opts.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = watch.message() => {
                    let message = message
                        .map_err(|e| format!("watching: {e}"))?
                        .ok_or("the watch ended")?;
                    if message.canceled() {
                        return Err(format!(
                            "the watch was cancelled ({}; compacted at {})",
                            message.cancel_reason(),
                            message.compact_revision()
                        ));
                    }
                    let mut ours = false;
                    for event in message.events() {
                        let Some(kv) = event.kv() else { continue };
                        let key = String::from_utf8_lossy(kv.key()).into_owned();
                        // The servers' keys move the rollout (each tick
                        // reads them); the others change what this
                        // server serves.
                        let server = self.opts.keys.server_of(&key).map(str::to_string);
                        ours |= server.is_none();
                        match event.event_type() {
                            EventType::Put => {
                                if let Some(server) = server {
                                    self.heard.insert(server, Instant::now());
                                }
                                self.view.insert(key, (kv.value().to_vec(), kv.mod_revision()));
                            }
                            EventType::Delete => {
                                if let Some(server) = server {
                                    self.heard.remove(&server);
                                }
                                self.view.remove(&key);
                            }
                        }
                    }
                    self.etcd_contact.store(now_secs(), Ordering::Relaxed);
                    // A change is applied at once, not at the next tick.
                    if ours {
                        self.local().await;
                    }
                }
                why = &mut keeping.lost => {
                    return Err(why.unwrap_or_else(|_| "the lease's keeper stopped".into()));
                }
                _ = tick.tick() => {
                    self.local().await;
                    self.write_status(&mut client, lease).await?;
                    self.drive_rollout(&mut client).await?;
                }
            }
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
                self.nginx_silent_since = None;
                let counts = reading.counts;
                self.nginx_kills = reading.kills;
                self.nginx_serves = reading.served;
                // A restart: an nginx that never had a report, or another
                // start time than the one this agent saw last.
                let restarted = (!reading.reported
                    && (self.applied.is_some() || !self.thrown.is_empty()))
                    || (self.nginx_started.is_some() && reading.started != self.nginx_started);
                self.nginx_started = reading.started;
                if restarted {
                    warn!(
                        "nginx started again: giving it its configuration and kill switches again"
                    );
                    // Its counts started again from zero: a rollout's
                    // gates cannot read them across the restart, and a
                    // server that restarted while it served a rollout's
                    // configuration fails them.
                    if let Some(id) = self.applied.as_ref().and_then(|a| a.rollout.clone()) {
                        self.judged = Some(Judged {
                            id,
                            failed: Some("nginx started again while serving the rollout".into()),
                            counts: Counts::default(),
                            ready: false,
                        });
                    }
                    self.applied = None;
                    // Its kill switches went with its shared memory:
                    // thrown again, every one, even before etcd answers
                    // (those this agent threw are kept on disk).
                    self.kills_stale = true;
                    self.kill_refused.clear();
                    // A configuration it refused is asked again.
                    self.refused = None;
                }
                Some(counts)
            }
            Err(e) => {
                self.nginx_silent_since.get_or_insert_with(Instant::now);
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
        if self.synced {
            self.reconcile_config(counts);
            if answers && self.kills_stale {
                self.reconcile_kills();
            }
            self.judge(counts, read_at);
        }
        if counts.is_some() {
            let report = self.report();
            let mut sent = blocking(|| self.opts.admin.report(&report));
            // An nginx older than the signatures' fields refuses the
            // whole report for them: it is given the rest.
            if matches!(&sent, Err(AdminError::Refused(why)) if why.contains("verify_keys")) {
                let older = report.split(SIGNATURE_FIELDS).next().unwrap_or_default();
                sent = blocking(|| self.opts.admin.report(older));
            }
            if let Err(e) = sent {
                self.nginx_failed(e);
            }
        }
        self.keep_contact(false);
    }

    /// When etcd last answered, for the log.
    fn last_answer(&self) -> String {
        match self.etcd_contact.load(Ordering::Relaxed) {
            0 => "never".into(),
            at => format!("{} s ago", now_secs().saturating_sub(at)),
        }
    }

    /// Keeps the time of etcd's last answer in the state directory: when
    /// it moved on by `KEEP_CONTACT_EVERY` seconds, or at once (`now`).
    fn keep_contact(&mut self, now: bool) {
        let contact = self.etcd_contact.load(Ordering::Relaxed);
        if contact == self.contact_kept
            || !(now || contact >= self.contact_kept + KEEP_CONTACT_EVERY)
        {
            return;
        }
        match save_contact(&self.opts.state_dir, contact) {
            Ok(()) => {
                self.contact_kept = contact;
                self.contact_error = None;
            }
            Err(e) => {
                let why = format!("{}: {e}", self.opts.state_dir.display());
                if self.contact_error.as_ref() != Some(&why) {
                    error!("{why}: a restarted agent would not know when etcd last answered");
                }
                self.contact_error = Some(why);
            }
        }
    }

    fn nginx_failed(&mut self, e: AdminError) {
        let text = e.to_string();
        if self.nginx_error.as_deref() != Some(&text) {
            error!("{text}");
        }
        self.nginx_error = Some(text);
    }

    fn rollout(&self) -> Result<Option<(Rollout, i64)>, String> {
        let Some((value, revision)) = self.view.get(&self.opts.keys.rollout()) else {
            return Ok(None);
        };
        let rollout: Rollout = serde_json::from_slice(value)
            .map_err(|e| format!("{}: {e}", self.opts.keys.rollout()))?;
        rollout
            .check()
            .map_err(|e| format!("{}: {e}", self.opts.keys.rollout()))?;
        Ok(Some((rollout, *revision)))
    }

    /// Gives nginx the configuration the keys say it should serve.
    fn reconcile_config(&mut self, counts: Option<Counts>) {
        let rollout = match self.rollout() {
            Ok(r) => r,
            Err(e) => {
                // An unreadable rollout moves nothing, either way.
                if self.key_error.as_deref() != Some(&e) {
                    error!("{e}: keeping the configuration serving");
                }
                self.key_error = Some(e);
                return;
            }
        };
        self.key_error = None;
        let (text, revision, source, rollout_id) = match &rollout {
            Some((r, revision)) if r.serves(&self.opts.name) => (
                r.config.as_bytes().to_vec(),
                *revision,
                "rollout",
                Some(r.id.clone()),
            ),
            _ => match self.view.get(&self.opts.keys.config()) {
                Some((text, revision)) => (text.clone(), *revision, "config", None),
                // No configuration in etcd: the server keeps its own file.
                None => {
                    self.wanted = None;
                    return;
                }
            },
        };
        let hash = crate::fleet::config_hash(&text);
        if let Err(why) = self.verify(&text, &hash, source) {
            // Nothing changes: no operator signed it. A rollout's member
            // fails its gate, and the rollout goes back.
            if self.unverified.as_ref()
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
            self.unverified = Some(Refused {
                config: hash,
                reason: why,
            });
            self.wanted = None;
            return;
        }
        self.unverified = None;
        self.wanted = Some(hash.clone());
        // Its nginx serves another configuration than the one this agent
        // gave it (applied by hand through its admin API, a reload of
        // another file): the keys win, and it is given theirs again.
        let drifted = self.nginx_serves.clone().filter(|served| {
            *served != hash && self.applied.as_ref().is_some_and(|a| a.hash == hash)
        });
        if let Some(served) = &drifted {
            warn!("nginx serves the configuration {served}, not the {source} configuration {hash} its agent gave it (applied by hand through its admin API?): applying the keys' again");
            self.applied = None;
        }
        self.give(text, hash.clone(), revision, source, rollout_id, counts);
        if let Some(served) = drifted {
            let repaired = self.applied.as_ref().is_some_and(|a| a.hash == hash);
            let drift = self.drift.get_or_insert_with(|| Drift {
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
        let signature = self.view.get(&key).map(|(v, _)| v.clone());
        if let Some((h, s, verdict)) = &self.checked {
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
        self.checked = Some((hash.to_string(), signature, verdict.clone()));
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
        if let Some(applied) = self.applied.as_mut().filter(|a| a.hash == hash) {
            if applied.rollout != rollout_id {
                applied.at = Instant::now();
                applied.baseline = counts;
            }
            applied.revision = revision;
            applied.source = source;
            applied.rollout = rollout_id;
            if self.last_revision != revision {
                self.last_revision = revision;
                if let Err(e) = save_revision(&self.opts.state_dir, revision) {
                    error!("{}: {e}", self.opts.state_dir.display());
                }
            }
            return;
        }
        if self.refused.as_ref().is_some_and(|r| r.config == hash) {
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
        match applied {
            Ok(message) => {
                info!("applied the {source} configuration {hash} (etcd revision {revision}): {message}");
                self.nginx_serves = Some(hash.clone());
                self.file_error = write_file(&self.opts.file, &text).err().map(|e| {
                    let why = format!("{}: {e}", self.opts.file.display());
                    error!("{why}: a restarted nginx would not serve this configuration");
                    why
                });
                let baseline = blocking(|| self.opts.admin.counts()).map(|r| r.counts).ok();
                self.applied = Some(Applied {
                    hash,
                    revision,
                    source,
                    rollout: rollout_id,
                    at: Instant::now(),
                    baseline,
                });
                self.refused = None;
                self.nginx_error = None;
                self.kills_stale = true;
                self.last_revision = revision;
                if let Err(e) = save_revision(&self.opts.state_dir, revision) {
                    error!("{}: {e}", self.opts.state_dir.display());
                }
            }
            Err(AdminError::Refused(reason)) => {
                error!("nginx refused the {source} configuration {hash} (etcd revision {revision}), the running one goes on: {reason}");
                self.refused = Some(Refused {
                    config: hash,
                    reason,
                });
                if let Some(id) = rollout_id {
                    self.judged = Some(Judged {
                        id,
                        failed: Some(format!(
                            "refused the configuration: {}",
                            self.refused.as_ref().map_or("", |r| &r.reason)
                        )),
                        counts: Counts::default(),
                        ready: false,
                    });
                }
            }
            Err(e) => self.nginx_failed(e),
        }
    }

    /// The kill switches the keys throw; a key under `P/kill/` that names
    /// none (`kill//waf`, `kill/waf/`) is said in the log and the
    /// server's key, never read as some other switch.
    fn wanted_kills(&mut self) -> BTreeSet<(String, Option<String>)> {
        let prefix = self.opts.keys.kills();
        let mut bad = Vec::new();
        let wanted = self
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
        if bad.is_some() && bad != self.kill_key_error {
            error!("{}", bad.as_deref().unwrap_or_default());
        }
        self.kill_key_error = bad;
        wanted
    }

    /// Throws the kill switches the keys throw and resets those they no
    /// longer do; before the keys were ever read, throws again those this
    /// agent threw (a restarted nginx while etcd is down) and resets none.
    fn reconcile_kills(&mut self) {
        let wanted = if self.synced {
            self.wanted_kills()
        } else {
            self.thrown.clone()
        };
        // A switch this agent threw that its nginx no longer has (reset
        // through the admin API by hand, its table cleared): all again.
        if let Some(actual) = &self.nginx_kills {
            let lost: Vec<String> = self
                .thrown
                .iter()
                .filter(|k| wanted.contains(*k) && !actual.contains(*k))
                .filter(|k| !self.kill_refused.contains_key(*k))
                .map(switch_name)
                .collect();
            if !lost.is_empty() && !self.kills_stale {
                warn!(
                    "nginx does not have the kill switches {} the fleet throws: throwing them again",
                    lost.join(", ")
                );
                self.kills_stale = true;
            }
        }
        let stale = std::mem::take(&mut self.kills_stale);
        if stale {
            self.kill_refused.clear();
        }
        self.kill_refused.retain(|k, _| wanted.contains(k));
        let mut changed = false;
        let mut unreachable = false;
        let to_throw: Vec<_> = wanted
            .iter()
            .filter(|k| stale || !self.thrown.contains(*k))
            .filter(|k| {
                self.kill_refused
                    .get(*k)
                    .is_none_or(|(_, at)| at.elapsed() >= KILL_RETRY)
            })
            .cloned()
            .collect();
        let to_reset: Vec<_> = self.thrown.difference(&wanted).cloned().collect();
        for (switch, thrown) in to_throw
            .into_iter()
            .map(|k| (k, true))
            .chain(to_reset.into_iter().map(|k| (k, false)))
        {
            let (module, zone) = &switch;
            match blocking(|| self.opts.admin.switch(module, zone.as_deref(), thrown)) {
                Ok(()) => {
                    let place = zone.as_deref().unwrap_or("every zone");
                    info!(
                        "kill switch of {module} in {place} {}",
                        if thrown { "thrown" } else { "reset" }
                    );
                    if let Some(actual) = self.nginx_kills.as_mut() {
                        if thrown {
                            actual.insert(switch.clone());
                        } else {
                            actual.remove(&switch);
                        }
                    }
                    if thrown {
                        self.kill_refused.remove(&switch);
                        self.thrown.insert(switch);
                    } else {
                        self.thrown.remove(&switch);
                    }
                    changed = true;
                }
                Err(AdminError::Refused(why)) => {
                    error!("nginx refused the kill switch of {module}: {why}");
                    if thrown {
                        // One thrown before stays in `thrown`: nginx
                        // keeps it (by zone and module names) and a
                        // revive must reset it.
                        self.kill_refused.insert(switch, (why, Instant::now()));
                    } else {
                        self.thrown.remove(&switch);
                        changed = true;
                    }
                }
                Err(e) => {
                    unreachable = true;
                    self.nginx_failed(e);
                }
            }
        }
        // Not every switch reached nginx: all of them again next time.
        self.kills_stale |= stale && unreachable;
        if changed {
            if let Err(e) = save_thrown(&self.opts.state_dir, &self.thrown) {
                error!("{}: {e}", self.opts.state_dir.display());
            }
        }
    }

    /// Judges this server's health gates while it serves a rollout's
    /// configuration: once a gate failed, it stays failed.
    /// `counts` were read at `read_at`: a reading from before the
    /// configuration was applied is never its baseline (its sums are the
    /// old configuration's steps').
    fn judge(&mut self, counts: Option<Counts>, read_at: Instant) {
        if let Some(applied) = self
            .applied
            .as_mut()
            .filter(|a| a.baseline.is_none() && read_at > a.at)
        {
            applied.baseline = counts;
        }
        let Ok(Some((rollout, _))) = self.rollout() else {
            self.judged = None;
            return;
        };
        let serving = self
            .applied
            .as_ref()
            .filter(|a| a.rollout.as_deref() == Some(rollout.id.as_str()));
        let Some(applied) = serving else {
            // Refused, or not in a stage that has it.
            if self.judged.as_ref().is_some_and(|j| j.id != rollout.id)
                || !rollout.serves(&self.opts.name)
            {
                self.judged = None;
            }
            return;
        };
        if self
            .judged
            .as_ref()
            .is_some_and(|j| j.id == rollout.id && j.failed.is_some())
        {
            return;
        }
        let Some(counts) = counts else {
            // Its health cannot be read: not ready, and after the
            // rollout's silence gate, failed.
            let silent = self.nginx_silent_since.map_or(0, |t| t.elapsed().as_secs());
            let failed = (silent > rollout.gates.max_silent_secs).then(|| {
                format!(
                    "its nginx has not answered for {silent} s, over {} s",
                    rollout.gates.max_silent_secs
                )
            });
            if let Some(why) = &failed {
                warn!("rollout {}: a health gate failed: {why}", rollout.id);
            }
            let counts = self
                .judged
                .as_ref()
                .filter(|j| j.id == rollout.id)
                .map_or_else(Counts::default, |j| j.counts);
            self.judged = Some(Judged {
                id: rollout.id.clone(),
                failed,
                counts,
                ready: false,
            });
            return;
        };
        let Some(baseline) = applied.baseline else {
            // No reading of the configuration it serves yet: nothing to
            // judge, so not ready.
            self.judged = Some(Judged {
                id: rollout.id.clone(),
                failed: None,
                counts: Counts::default(),
                ready: false,
            });
            return;
        };
        let since = counts.since(&baseline);
        let failed = failed_gate(&rollout.gates, &since);
        if let Some(why) = &failed {
            warn!("rollout {}: a health gate failed: {why}", rollout.id);
        }
        let ready =
            failed.is_none() && applied.at.elapsed() >= Duration::from_secs(rollout.hold_secs);
        self.judged = Some(Judged {
            id: rollout.id.clone(),
            failed,
            counts: since,
            ready,
        });
    }

    fn status(&self) -> Status {
        // What its nginx says it serves; where it came from, when that
        // is what this agent applied.
        let applied = self
            .applied
            .as_ref()
            .filter(|a| self.nginx_serves.as_ref().is_none_or(|s| *s == a.hash));
        Status {
            name: self.opts.name.clone(),
            config: self
                .nginx_serves
                .clone()
                .or_else(|| applied.map(|a| a.hash.clone())),
            source: applied.map(|a| a.source.to_string()),
            revision: applied.map_or(0, |a| a.revision),
            refused: self.refused.clone(),
            unverified: self.unverified.clone(),
            kills: self.thrown.iter().map(switch_name).collect(),
            kills_refused: self
                .kill_refused
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
            nginx_error: self.nginx_error.clone(),
            key_error: match (&self.key_error, &self.kill_key_error) {
                (Some(a), Some(b)) => Some(format!("{a}; {b}")),
                (a, b) => a.clone().or_else(|| b.clone()),
            },
            file_error: self.file_error.clone(),
            drift: self.drift.clone(),
        }
    }

    /// The report for nginx's metrics.
    fn report(&self) -> String {
        let rollout = self.rollout().ok().flatten();
        // A rollout's configuration, running or not: a server that could
        // not go back after a rollback (its nginx refused the fleet's)
        // says so.
        let serving = self.applied.as_ref().is_some_and(|a| a.rollout.is_some());
        let healthy = self.judged.as_ref().is_none_or(|j| j.failed.is_none());
        let mut report = format!(
            "etcd_up={}&etcd_contact={}&config_revision={}&rollout_stage={}&rollout_state={}&rollout_serving={}&healthy={}",
            u8::from(self.etcd_up),
            self.etcd_contact.load(Ordering::Relaxed),
            self.applied.as_ref().map_or(self.last_revision, |a| a.revision),
            rollout.as_ref().map_or(0, |(r, _)| r.stage),
            rollout.as_ref().map_or(0, |(r, _)| r.state.code()),
            u8::from(serving),
            u8::from(healthy),
        );
        // Only to an nginx that names what it serves (an older one would
        // refuse the whole report for a field it does not know).
        if let Some(served) = &self.nginx_serves {
            let drifted = self.wanted.as_ref().is_some_and(|w| w != served);
            report.push_str(&format!(
                "&drift={}&drift_repairs={}",
                u8::from(drifted),
                self.drift.as_ref().map_or(0, |d| d.repairs)
            ));
        }
        // Last: cut off for an nginx that does not know them.
        report.push_str(&format!(
            "{SIGNATURE_FIELDS}{}&config_unverified={}",
            self.opts.verify.len(),
            u8::from(self.unverified.is_some())
        ));
        report
    }

    async fn write_status(&mut self, client: &mut Client, lease: i64) -> Result<(), String> {
        let status = self.status();
        // A change of state is written at once; counts alone (they move
        // with every request while a rollout runs) once in a while, or
        // every server's write would reach every agent each tick; and a
        // part in a rollout once in a while even when nothing changed
        // (etcd gives even the same text a new revision), so that the
        // others can tell it is news.
        let mut state = status.clone();
        if let Some(part) = state.rollout.as_mut() {
            part.counts = Counts::default();
        }
        let state = serde_json::to_string(&state).map_err(|e| e.to_string())?;
        let text = serde_json::to_string(&status).map_err(|e| e.to_string())?;
        let in_rollout = status.rollout.is_some();
        if self.written.as_ref().is_some_and(|(t, w, at)| {
            *w == state && (at.elapsed() < COUNTS_EVERY || (*t == text && !in_rollout))
        }) {
            return Ok(());
        }
        let key = self.opts.keys.server(&self.opts.name);
        let put = within(
            self.opts.timeout,
            "writing the server's state",
            client.put(
                key.as_str(),
                text.as_str(),
                Some(PutOptions::new().with_lease(lease)),
            ),
        )
        .await?;
        // Known at once, before its watch event: moving the rollout right
        // after holds only if this key is as the view says, and judges its
        // part as just written (the write heard last may be from long
        // before: an idle server writes only when its state changes).
        if let Some(header) = put.header() {
            self.view
                .insert(key, (text.as_bytes().to_vec(), header.revision()));
        }
        self.heard.insert(self.opts.name.clone(), Instant::now());
        self.written = Some((text, state, Instant::now()));
        Ok(())
    }

    /// Moves the running rollout on, or rolls it back, as every agent
    /// would: the change is made only if nobody changed the rollout since
    /// this agent read it.
    async fn drive_rollout(&mut self, client: &mut Client) -> Result<(), String> {
        let Ok(Some((mut rollout, revision))) = self.rollout() else {
            return Ok(());
        };
        let statuses: BTreeMap<String, Status> = self
            .view
            .iter()
            .filter_map(|(k, (v, _))| {
                let name = self.opts.keys.server_of(k)?;
                Some((name.to_string(), serde_json::from_slice(v).ok()?))
            })
            .collect();
        let now = now_secs();
        let next = next_step(
            &rollout,
            now,
            |s| statuses.get(s).cloned(),
            |s| self.heard.get(s).map(|t| t.elapsed().as_secs()),
        );
        // Moving on holds only if no member's key changed since it was
        // read (one that just failed a gate is heard first) and, to
        // finish, if nobody put another fleet configuration meanwhile.
        let mut guards = vec![Compare::mod_revision(
            self.opts.keys.rollout(),
            CompareOp::Equal,
            revision,
        )];
        if matches!(next, Next::Advance | Next::Finish) {
            for server in rollout.members() {
                let key = self.opts.keys.server(server);
                let read = self.view.get(&key).map_or(0, |(_, r)| *r);
                guards.push(Compare::mod_revision(key, CompareOp::Equal, read));
            }
        }
        if next == Next::Finish {
            let key = self.opts.keys.config();
            let read = self.view.get(&key).map_or(0, |(_, r)| *r);
            guards.push(Compare::mod_revision(key, CompareOp::Equal, read));
        }
        let mut also = Vec::new();
        let rolls_back = matches!(next, Next::RollBack(_));
        let line = match next {
            Next::Wait => return Ok(()),
            Next::Advance => {
                rollout.stage += 1;
                rollout.stage_started = now;
                format!(
                    "stage {} ({} of {} servers) started",
                    rollout.stage,
                    rollout.stages[rollout.stage],
                    rollout.servers.len()
                )
            }
            Next::Finish => {
                rollout.state = RolloutState::Done;
                rollout.reason = Some("every stage passed its health gates".into());
                also.push(TxnOp::put(
                    self.opts.keys.config(),
                    rollout.config.as_str(),
                    None,
                ));
                // Its signature goes with it (none: the fleet's
                // configuration is unsigned too).
                let sig = self.opts.keys.config_sig();
                also.push(match self.view.get(&self.opts.keys.rollout_sig()) {
                    Some((signature, _)) => TxnOp::put(sig, signature.clone(), None),
                    None => TxnOp::delete(sig, None),
                });
                "done: the fleet's configuration is the new one".to_string()
            }
            Next::RollBack(why) => {
                rollout.state = RolloutState::RolledBack;
                rollout.reason = Some(why.clone());
                format!("rolled back at stage {}: {why}", rollout.stage)
            }
        };
        rollout
            .history
            .push(format!("{now} {line} (by {})", self.opts.name));
        let text = serde_json::to_string(&rollout).map_err(|e| e.to_string())?;
        let mut ops = vec![TxnOp::put(self.opts.keys.rollout(), text.as_str(), None)];
        ops.extend(also);
        let done = within(
            self.opts.timeout,
            "moving the rollout",
            client.txn(Txn::new().when(guards).and_then(ops)),
        )
        .await?;
        if done.succeeded() && rolls_back {
            warn!("rollout {}: {line}", rollout.id);
        } else if done.succeeded() {
            info!("rollout {}: {line}", rollout.id);
        }
        Ok(())
    }
}

/// A lease kept alive on its own task, so that nothing the agent waits
/// for (a hung nginx, a slow live apply) lets the server's key expire.
struct LeaseKeeping {
    task: tokio::task::JoinHandle<()>,
    /// Why it could not keep it.
    lost: tokio::sync::oneshot::Receiver<String>,
}

impl Drop for LeaseKeeping {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn keep_lease(
    mut keeper: LeaseKeeper,
    mut alive: LeaseKeepAliveStream,
    every: Duration,
    timeout: Duration,
    contact: Arc<AtomicU64>,
) -> LeaseKeeping {
    let (tell, lost) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let why = loop {
            tick.tick().await;
            if let Err(e) = within(timeout, "keeping the lease", keeper.keep_alive()).await {
                break e;
            }
            match within(timeout, "keeping the lease", alive.message()).await {
                Err(e) => break e,
                Ok(answer) if answer.as_ref().is_none_or(|a| a.ttl() <= 0) => {
                    break "the lease of the server's key expired".to_string()
                }
                Ok(_) => contact.store(now_secs(), Ordering::Relaxed),
            }
        };
        let _ = tell.send(why);
    });
    LeaseKeeping { task, lost }
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

fn thrown_file(dir: &Path) -> PathBuf {
    dir.join("kills.json")
}

fn load_thrown(dir: &Path) -> BTreeSet<(String, Option<String>)> {
    match std::fs::read(thrown_file(dir)) {
        Ok(text) => serde_json::from_slice(&text).unwrap_or_else(|e| {
            error!(
                "{}: {e}: the kill switches thrown before are forgotten",
                thrown_file(dir).display()
            );
            BTreeSet::new()
        }),
        Err(_) => BTreeSet::new(),
    }
}

fn save_thrown(dir: &Path, thrown: &BTreeSet<(String, Option<String>)>) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let text = serde_json::to_vec(thrown).map_err(std::io::Error::other)?;
    write_file(&thrown_file(dir), &text)
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
