//! graft-agent: a graft fleet through etcd.
//!
//! `graft-agent run` sits beside each nginx and makes it serve what the
//! fleet's keys say; the other commands are the operator's: put the
//! fleet's configuration, kill and revive modules, start, follow and
//! abort a staged rollout. See README.md, "Running a fleet".
mod admin;
mod fleet;
mod run;
mod sign;
mod signal;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};

use fleet::{Gates, Keys, Rollout, RolloutState, Status};

#[derive(Parser)]
#[command(
    version,
    about = "graft's fleet agent: configuration, kill switches and staged rollouts through etcd"
)]
struct Cli {
    /// etcd's client URLs, comma-separated (every member: the agent uses
    /// whichever answers).
    #[arg(
        long,
        env = "GRAFT_ETCD",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379"
    )]
    etcd: Vec<String>,
    /// The fleet's key prefix in etcd.
    #[arg(long, env = "GRAFT_PREFIX", default_value = "/graft/default")]
    prefix: String,
    /// How long etcd may take to answer a call, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
    /// etcd over TLS (https:// URLs): the CA that signed the members'
    /// certificates (PEM).
    #[arg(long, env = "GRAFT_ETCD_CA")]
    etcd_ca: Option<PathBuf>,
    /// This client's certificate for etcd (PEM), for members that ask for
    /// one (etcd's --client-cert-auth); with --etcd-key.
    #[arg(long, env = "GRAFT_ETCD_CERT", requires = "etcd_key")]
    etcd_cert: Option<PathBuf>,
    /// The private key of --etcd-cert (PEM).
    #[arg(long, env = "GRAFT_ETCD_KEY", requires = "etcd_cert")]
    etcd_key: Option<PathBuf>,
    /// An etcd user (etcd's auth enabled); with --etcd-password-file.
    #[arg(long, env = "GRAFT_ETCD_USER", requires = "etcd_password_file")]
    etcd_user: Option<String>,
    /// The file holding that user's password (its first line).
    #[arg(long, env = "GRAFT_ETCD_PASSWORD_FILE", requires = "etcd_user")]
    etcd_password_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run beside one nginx: apply the fleet's configuration and kill
    /// switches to it, report its state, take part in rollouts.
    Run {
        /// This server's name in the fleet (its key: <prefix>/servers/<name>);
        /// the host name when not given.
        #[arg(long)]
        name: Option<String>,
        /// nginx's admin API (graft's loopback admin listener).
        #[arg(long, default_value = "http://127.0.0.1:8081")]
        admin: String,
        /// The admin API's token: the file nginx's graft_admin_token names
        /// (the agent's group may read it, no one else).
        #[arg(long, default_value = "/etc/graft/admin.token")]
        admin_token_file: PathBuf,
        /// nginx's graft file (graft_config): the agent keeps the last
        /// configuration applied there, for nginx's next start.
        #[arg(long)]
        file: PathBuf,
        /// Where the agent remembers the kill switches it threw, the etcd
        /// revision of the configuration it applied, and when etcd last
        /// answered it.
        #[arg(long, default_value = "/var/lib/graft-agent")]
        state_dir: PathBuf,
        /// How often the agent checks its server's health and renews its
        /// key (at most 5000: a rollout's member writes its part every 5 s,
        /// and one unwritten for 15 s is not news).
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(50..=5000))]
        interval_ms: u64,
        /// An operator's public key (PEM; repeat it to hold several, as
        /// when a key is replaced): only a configuration whose signature
        /// one of them verifies is applied. Without it every
        /// configuration in etcd is applied, signed or not.
        #[arg(long)]
        verify_key: Vec<PathBuf>,
    },
    /// Check a graft file as the servers will, then make it the fleet's
    /// configuration.
    Put {
        file: PathBuf,
        /// The operator's private key: the signature goes beside it
        /// (without it, agents run with --verify-key refuse it).
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// Make an operator's key pair: NAME.key (private, mode 0600) and
    /// NAME.pub (for the agents' --verify-key).
    Keygen { name: PathBuf },
    /// Print the signature of a graft file for the fleet's prefix (the
    /// value of <prefix>/config.sig), for a file put into etcd otherwise.
    Sign {
        #[arg(long)]
        key: PathBuf,
        file: PathBuf,
    },
    /// Throw a kill switch on every server: the module goes back to Lua.
    Kill {
        module: String,
        #[arg(long)]
        zone: Option<String>,
        /// Who threw it and why, kept in the key.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Reset a kill switch on every server.
    Revive {
        module: String,
        #[arg(long)]
        zone: Option<String>,
    },
    /// The servers' states.
    Status,
    /// Staged rollouts.
    #[command(subcommand)]
    Rollout(RolloutCommand),
}

#[derive(Subcommand)]
enum RolloutCommand {
    /// Roll a new graft file out in stages, each held healthy before the next.
    Start {
        file: PathBuf,
        /// The operator's private key: the signature goes beside it.
        #[arg(long)]
        key: Option<PathBuf>,
        /// The stages: a number of servers, a share, or all.
        #[arg(long, value_delimiter = ',', default_value = "1,10%,50%,all")]
        stages: Vec<String>,
        /// How long every server of a stage stays healthy before the next, in seconds.
        #[arg(long, default_value_t = 60)]
        hold: u64,
        #[arg(long, default_value_t = Gates::default().max_fallback_rate)]
        max_fallback_rate: f64,
        #[arg(long, default_value_t = Gates::default().max_shadow_diff_rate)]
        max_shadow_diff_rate: f64,
        /// Steps (or shadow comparisons) before a rate is judged.
        #[arg(long, default_value_t = Gates::default().min_requests)]
        min_requests: u64,
        #[arg(long, default_value_t = Gates::default().max_refused)]
        max_refused: u64,
        #[arg(long, default_value_t = Gates::default().max_worker_restarts)]
        max_worker_restarts: u64,
        /// How long a server of a stage may go unheard (no part in the
        /// rollout, or an nginx that does not answer), in seconds.
        #[arg(long, default_value_t = Gates::default().max_silent_secs)]
        max_silent: u64,
    },
    /// The rollout and the servers' part in it.
    Status,
    /// Revert the rollout: every server back to the fleet's configuration.
    Abort {
        #[arg(long, default_value = "aborted by an operator")]
        reason: String,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("graft-agent: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(command(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("graft-agent: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn command(cli: Cli) -> Result<(), String> {
    let keys = Keys::new(&cli.prefix)?;
    let timeout = Duration::from_millis(cli.timeout_ms.max(1));
    match &cli.command {
        Command::Keygen { name } => return keygen(name),
        Command::Sign { key, file } => {
            let key = sign::load_signing_key(key)?;
            println!(
                "{}",
                sign::sign(&key, keys.prefix(), checked(file)?.as_bytes())
            );
            return Ok(());
        }
        _ => {}
    }
    let access = run::EtcdAccess::new(
        &cli.etcd,
        cli.etcd_ca.as_deref(),
        cli.etcd_cert.as_deref().zip(cli.etcd_key.as_deref()),
        cli.etcd_user
            .as_deref()
            .zip(cli.etcd_password_file.as_deref()),
    )?;
    if let Command::Run { .. } = cli.command {
        return run_agent(cli, keys, access, timeout).await;
    }
    let (mut client, _) = run::connect_any(&cli.etcd, 0, timeout, &keys.config(), &access)
        .await
        .map_err(|e| format!("no etcd member answers: {e}"))?;
    let client = &mut client;
    match cli.command {
        Command::Run { .. } | Command::Keygen { .. } | Command::Sign { .. } => {
            unreachable!("handled above")
        }
        Command::Put { file, key } => put(client, &keys, &file, key.as_deref()).await,
        Command::Kill {
            module,
            zone,
            reason,
        } => {
            let at = keys.kill(&module, zone.as_deref());
            client
                .put(at.clone(), reason, None)
                .await
                .map_err(|e| e.to_string())?;
            println!("killed: {at}");
            Ok(())
        }
        Command::Revive { module, zone } => {
            let at = keys.kill(&module, zone.as_deref());
            client
                .delete(at.clone(), None)
                .await
                .map_err(|e| e.to_string())?;
            println!("revived: {at}");
            Ok(())
        }
        Command::Status => print_statuses(client, &keys).await,
        Command::Rollout(RolloutCommand::Start {
            file,
            key,
            stages,
            hold,
            max_fallback_rate,
            max_shadow_diff_rate,
            min_requests,
            max_refused,
            max_worker_restarts,
            max_silent,
        }) => {
            let gates = Gates {
                max_fallback_rate,
                max_shadow_diff_rate,
                min_requests,
                max_refused,
                max_worker_restarts,
                max_silent_secs: max_silent,
            };
            let plan = (stages.as_slice(), hold, gates);
            rollout_start(client, &keys, &file, key.as_deref(), plan).await
        }
        Command::Rollout(RolloutCommand::Status) => rollout_status(client, &keys).await,
        Command::Rollout(RolloutCommand::Abort { reason }) => {
            rollout_abort(client, &keys, &reason).await
        }
    }
}

/// `graft-agent keygen`: an operator's key pair.
fn keygen(name: &std::path::Path) -> Result<(), String> {
    let private = name.with_extension("key");
    let public = name.with_extension("pub");
    let fingerprint = sign::keygen(&private, &public)?;
    println!(
        "{} (private: keep it to the operators) and {} (for graft-agent run --verify-key): key {fingerprint}",
        private.display(),
        public.display()
    );
    Ok(())
}

/// `graft-agent run`: the agent beside one nginx, until it is stopped.
async fn run_agent(
    cli: Cli,
    keys: Keys,
    access: run::EtcdAccess,
    timeout: Duration,
) -> Result<(), String> {
    let Command::Run {
        name,
        admin,
        admin_token_file,
        file,
        state_dir,
        interval_ms,
        verify_key,
    } = cli.command
    else {
        return Err("not the run command".into());
    };
    let name = match name {
        Some(name) => name,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .map_err(|e| format!("no --name, and no host name: {e}"))?,
    };
    fleet::check_name(&name)?;
    let token = std::fs::read_to_string(&admin_token_file).map_err(|e| {
        format!(
            "the admin token file {}: {e} (nginx's graft_admin_token names it)",
            admin_token_file.display()
        )
    })?;
    let verify = verify_key
        .iter()
        .map(|path| sign::load_verifying_key(path))
        .collect::<Result<Vec<_>, _>>()?;
    run::run(run::Options {
        endpoints: cli.etcd,
        access,
        verify,
        keys,
        name,
        admin: admin::Admin::new(&admin, &token),
        file,
        state_dir,
        interval: Duration::from_millis(interval_ms),
        timeout,
    })
    .await
}

/// `graft-agent put`: the fleet's configuration (refused while a rollout
/// runs: it ends by writing its own configuration there).
async fn put(
    client: &mut Client,
    keys: &Keys,
    file: &std::path::Path,
    key: Option<&std::path::Path>,
) -> Result<(), String> {
    let text = checked(file)?;
    let signature = signed(key, keys, &text)?;
    let (_, revision) = rollout_idle(client, keys).await?;
    write_if_rollout_unchanged(
        client,
        keys,
        revision,
        [
            TxnOp::put(keys.config(), text, None),
            signature_op(keys.config_sig(), signature),
        ],
    )
    .await
    .map_err(|e| format!("{e}: wait for it, or abort it"))?;
    println!(
        "{}: the fleet's configuration is {}",
        keys.config(),
        fleet::config_hash(&std::fs::read(file).unwrap_or_default())
    );
    Ok(())
}

/// `graft-agent status`: every server's key, one JSON line each.
async fn print_statuses(client: &mut Client, keys: &Keys) -> Result<(), String> {
    for (_, status) in statuses(client, keys).await? {
        println!("{}", serde_json::to_string(&status).unwrap_or_default());
    }
    Ok(())
}

/// `graft-agent rollout start`: a new rollout of `file` over the servers
/// there are now, `plan` its stages, hold time and gates.
async fn rollout_start(
    client: &mut Client,
    keys: &Keys,
    file: &std::path::Path,
    key: Option<&std::path::Path>,
    plan: (&[String], u64, Gates),
) -> Result<(), String> {
    let (stages, hold, gates) = plan;
    let text = checked(file)?;
    let signature = signed(key, keys, &text)?;
    let servers: Vec<String> = statuses(client, keys)
        .await?
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let stages = fleet::stage_counts(stages, servers.len())?;
    // The store's revision now: every rollout written reads a later one
    // (the write below holds only if the rollout key is as read), so it
    // names this rollout alone.
    let (now_revision, revision) = rollout_idle(client, keys).await?;
    let has_config = client
        .get(keys.config(), Some(GetOptions::new().with_count_only()))
        .await
        .map_err(|e| e.to_string())?
        .count()
        > 0;
    if !has_config {
        return Err(format!(
            "{} is empty: a rollout needs a configuration to go back to (graft-agent put)",
            keys.config()
        ));
    }
    let now = run::now_secs();
    let rollout = Rollout {
        id: format!("r{now_revision}-{}", fleet::config_hash(text.as_bytes())),
        config: text,
        servers,
        stages,
        hold_secs: hold,
        gates,
        stage: 0,
        stage_started: now,
        state: RolloutState::Running,
        reason: None,
        history: vec![format!("{now} started: stage 0")],
    };
    rollout.check()?;
    rollout.gates.check()?;
    let json = serde_json::to_string(&rollout).map_err(|e| e.to_string())?;
    write_if_rollout_unchanged(
        client,
        keys,
        revision,
        [
            TxnOp::put(keys.rollout(), json, None),
            signature_op(keys.rollout_sig(), signature),
        ],
    )
    .await?;
    println!(
        "rollout {} started: stages {:?} of servers {:?}, each held {hold} s",
        rollout.id, rollout.stages, rollout.servers
    );
    Ok(())
}

/// `graft-agent rollout status`: the rollout (its configuration by name)
/// and every server's key.
async fn rollout_status(client: &mut Client, keys: &Keys) -> Result<(), String> {
    let got = client
        .get(keys.rollout(), None)
        .await
        .map_err(|e| e.to_string())?;
    let Some(kv) = got.kvs().first() else {
        println!("no rollout");
        return Ok(());
    };
    let mut rollout: serde_json::Value =
        serde_json::from_slice(kv.value()).map_err(|e| format!("{}: {e}", keys.rollout()))?;
    if let Some(config) = rollout.get_mut("config") {
        *config = fleet::config_hash(config.as_str().unwrap_or_default().as_bytes()).into();
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&rollout).unwrap_or_default()
    );
    print_statuses(client, keys).await
}

/// `graft-agent rollout abort`: the running rollout reverted, every
/// server back to the fleet's configuration.
async fn rollout_abort(client: &mut Client, keys: &Keys, reason: &str) -> Result<(), String> {
    let got = client
        .get(keys.rollout(), None)
        .await
        .map_err(|e| e.to_string())?;
    let kv = got.kvs().first().ok_or("no rollout")?;
    let mut rollout: Rollout =
        serde_json::from_slice(kv.value()).map_err(|e| format!("{}: {e}", keys.rollout()))?;
    if rollout.state != RolloutState::Running {
        return Err(format!("the rollout is not running ({:?})", rollout.state));
    }
    let now = run::now_secs();
    rollout.state = RolloutState::Reverted;
    rollout.reason = Some(reason.to_string());
    rollout.history.push(format!(
        "{now} reverted at stage {}: {reason} (by rollout abort)",
        rollout.stage
    ));
    let json = serde_json::to_string(&rollout).map_err(|e| e.to_string())?;
    write_if_rollout_unchanged(
        client,
        keys,
        kv.mod_revision(),
        [TxnOp::put(keys.rollout(), json, None)],
    )
    .await
    .map_err(|_| "the rollout changed meanwhile: look again".to_string())?;
    println!("rollout {} reverted", rollout.id);
    Ok(())
}

/// Reads a graft file and checks it as the servers' nginx will (their
/// legacy Lua modules are checked there, at apply).
fn checked(file: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    graft_engine::Config::parse(file, &text).map_err(|e| format!("refused: {e}"))?;
    String::from_utf8(text).map_err(|_| format!("{}: not UTF-8", file.display()))
}

/// The signature of `text` with the private key at `key`, if given.
fn signed(
    key: Option<&std::path::Path>,
    keys: &Keys,
    text: &str,
) -> Result<Option<String>, String> {
    key.map(|key| {
        let key = sign::load_signing_key(key)?;
        Ok(sign::sign(&key, keys.prefix(), text.as_bytes()))
    })
    .transpose()
}

/// Writes a configuration's signature beside it, or takes away the one
/// of the configuration it replaces.
fn signature_op(key: String, signature: Option<String>) -> TxnOp {
    match signature {
        Some(signature) => TxnOp::put(key, signature, None),
        None => TxnOp::delete(key, None),
    }
}

/// The rollout key as read, when no rollout runs in it: the store's
/// revision then, and the key's own (0: there is none).
async fn rollout_idle(client: &mut Client, keys: &Keys) -> Result<(i64, i64), String> {
    let current = client
        .get(keys.rollout(), None)
        .await
        .map_err(|e| e.to_string())?;
    let now = current.header().map_or(0, |h| h.revision());
    let Some(kv) = current.kvs().first() else {
        return Ok((now, 0));
    };
    if serde_json::from_slice::<Rollout>(kv.value()).is_ok_and(|r| r.state == RolloutState::Running)
    {
        return Err("a rollout is running: wait for it, or abort it".into());
    }
    Ok((now, kv.mod_revision()))
}

/// Writes `ops` only if the rollout key is still at `revision` (nobody
/// started or moved one since it was read).
async fn write_if_rollout_unchanged(
    client: &mut Client,
    keys: &Keys,
    revision: i64,
    ops: impl Into<Vec<TxnOp>>,
) -> Result<(), String> {
    let done = client
        .txn(
            Txn::new()
                .when([Compare::mod_revision(
                    keys.rollout(),
                    CompareOp::Equal,
                    revision,
                )])
                .and_then(ops.into()),
        )
        .await
        .map_err(|e| e.to_string())?;
    if !done.succeeded() {
        return Err("another rollout started meanwhile".into());
    }
    Ok(())
}

/// Every live server's state (its key goes with its agent's lease).
async fn statuses(client: &mut Client, keys: &Keys) -> Result<Vec<(String, Status)>, String> {
    let got = client
        .get(keys.servers(), Some(GetOptions::new().with_prefix()))
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for kv in got.kvs() {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let Some(name) = keys.server_of(&key) else {
            continue;
        };
        let status: Status = serde_json::from_slice(kv.value()).unwrap_or_else(|_| Status {
            name: name.to_string(),
            nginx_error: Some("its state in etcd is unreadable".into()),
            ..Status::default()
        });
        out.push((name.to_string(), status));
    }
    Ok(out)
}
