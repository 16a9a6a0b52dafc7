//! etcd: how the agent reaches it, the fleet's keys read and watched,
//! the lease of the server's key, and the server's state written there.
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{
    Certificate, Client, ConnectOptions, EventType, GetOptions, Identity, LeaseKeepAliveStream,
    LeaseKeeper, PutOptions, TlsOptions, WatchOptions, WatchResponse,
};
use tracing::info;

use super::{now_secs, within, Agent};
use crate::fleet::Counts;

/// The lease of a server's key, in seconds: the key goes this long after
/// its agent stopped.
pub(super) const LEASE_TTL: i64 = 10;
/// How often a server's key is written when only its counts changed (or,
/// in a rollout, nothing).
const COUNTS_EVERY: Duration = Duration::from_secs(crate::fleet::PART_EVERY_SECS);

/// What the agent knows of etcd and the fleet's keys.
pub(super) struct Etcd {
    /// The fleet's keys as last read: value and modification revision.
    pub view: BTreeMap<String, (Vec<u8>, i64)>,
    /// When this agent last saw each server's key written (by its own
    /// clock: servers' clocks are never compared).
    pub heard: BTreeMap<String, Instant>,
    pub up: bool,
    /// When etcd last answered (seconds since the epoch; 0: never), also
    /// written by the task that keeps the lease, and kept in the state
    /// directory: an agent started while etcd is down says when it last
    /// answered the agent before it.
    pub contact: Arc<AtomicU64>,
    /// The contact time last kept there, and why it could not be.
    pub contact_kept: u64,
    pub contact_error: Option<String>,
    /// The status last written to etcd, the same with its counts zeroed,
    /// and when.
    pub written: Option<(String, String, Instant)>,
    /// Whether the fleet's keys were read once: before, the agent changes
    /// nothing (an agent started while etcd is down keeps what it has).
    pub synced: bool,
    /// The etcd member to try first.
    pub member: usize,
}

impl Etcd {
    /// Before etcd was reached: `contact` is when it last answered, as
    /// the state directory says.
    pub fn new(contact: u64) -> Etcd {
        Etcd {
            view: BTreeMap::new(),
            heard: BTreeMap::new(),
            up: false,
            contact: Arc::new(AtomicU64::new(contact)),
            contact_kept: contact,
            contact_error: None,
            written: None,
            synced: false,
            member: 0,
        }
    }
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

impl Agent {
    /// Reaches etcd, reads the fleet's keys and follows them until a call
    /// fails.
    pub(super) async fn connected(&mut self) -> Result<(), String> {
        let t = self.opts.timeout;
        let mut client = self.reach().await?;
        let revision = self.read_all(&mut client).await?;
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
            self.etcd.contact.clone(),
        );
        let prefix = self.opts.keys.all();
        let watching = client.watch(
            prefix.as_str(),
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(revision + 1),
            ),
        );
        let mut watch = within(t, "watching", watching).await?;
        if !self.etcd.up {
            info!(
                "etcd answers: {} keys under {prefix} at revision {revision}",
                self.etcd.view.len()
            );
        }
        self.etcd.up = true;
        self.etcd.synced = true;
        self.etcd.contact.store(now_secs(), Ordering::Relaxed);
        self.etcd.written = None;
        self.local().await;
        let mut tick = tokio::time::interval(self.opts.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = watch.message() => {
                    let message = message
                        .map_err(|e| format!("watching: {e}"))?
                        .ok_or("the watch ended")?;
                    // A change is applied at once, not at the next tick.
                    if self.watched(&message)? {
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

    /// Connects to a member, trying each in turn from the one after the
    /// last that failed. Members that do not answer take two timeouts each
    /// to give up on: meanwhile the server goes on being looked after (a
    /// restarted nginx gets its kill switches, nginx hears the agent).
    async fn reach(&mut self) -> Result<Client, String> {
        let endpoints = self.opts.endpoints.clone();
        let probe = self.opts.keys.config();
        let access = self.opts.access.clone();
        let t = self.opts.timeout;
        let connecting = connect_any(&endpoints, self.etcd.member, t, &probe, &access);
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
        let (client, member) = connected.inspect_err(|_| self.etcd.member += 1)?;
        // After a failure, the next try starts with the next member.
        self.etcd.member = member + 1;
        Ok(client)
    }

    /// Reads every key under the fleet's prefix into the agent's view:
    /// the store's revision it read them at.
    async fn read_all(&mut self, client: &mut Client) -> Result<i64, String> {
        let prefix = self.opts.keys.all();
        let got = within(
            self.opts.timeout,
            "reading the fleet's keys",
            client.get(prefix.as_str(), Some(GetOptions::new().with_prefix())),
        )
        .await?;
        self.etcd.view = got
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
        self.etcd.heard = self
            .etcd
            .view
            .keys()
            .filter_map(|k| self.opts.keys.server_of(k))
            .map(|name| (name.to_string(), Instant::now()))
            .collect();
        Ok(got.header().map_or(0, |h| h.revision()))
    }

    /// Takes a watch message's events into the view: `true` when one
    /// changes what this server serves (a key not a server's; the
    /// servers' keys move the rollout, which each tick reads).
    fn watched(&mut self, message: &WatchResponse) -> Result<bool, String> {
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
            let server = self.opts.keys.server_of(&key).map(str::to_string);
            ours |= server.is_none();
            match event.event_type() {
                EventType::Put => {
                    if let Some(server) = server {
                        self.etcd.heard.insert(server, Instant::now());
                    }
                    self.etcd
                        .view
                        .insert(key, (kv.value().to_vec(), kv.mod_revision()));
                }
                EventType::Delete => {
                    if let Some(server) = server {
                        self.etcd.heard.remove(&server);
                    }
                    self.etcd.view.remove(&key);
                }
            }
        }
        self.etcd.contact.store(now_secs(), Ordering::Relaxed);
        Ok(ours)
    }

    pub(super) async fn write_status(
        &mut self,
        client: &mut Client,
        lease: i64,
    ) -> Result<(), String> {
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
        if self.etcd.written.as_ref().is_some_and(|(t, w, at)| {
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
            self.etcd
                .view
                .insert(key, (text.as_bytes().to_vec(), header.revision()));
        }
        self.etcd
            .heard
            .insert(self.opts.name.clone(), Instant::now());
        self.etcd.written = Some((text, state, Instant::now()));
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
