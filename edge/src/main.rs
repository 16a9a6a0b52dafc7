//! graft-edge: the all-Rust server (FL2) on Cloudflare's Pingora. It runs
//! the product modules of a graft file, step by step in their modes, as
//! nginx does, and passes whatever it cannot serve to FL1 (nginx + graft +
//! Lua) with a `Graft-Edge` header saying from which step FL1 takes it.
//!
//! ```text
//! graft-edge [--check | --upgrade] <settings.json>
//! ```
//!
//! `--check` reads the settings and the graft file, reports, and exits
//! (as `nginx -t`). A file refused at start names itself and its field,
//! and graft-edge exits with status 1. `--upgrade` takes the listening
//! sockets of the graft-edge running with the same settings, once that one
//! gets SIGQUIT (Pingora's graceful upgrade: no connection is refused, the
//! old process finishes its requests and exits). SIGUSR2 does both: the
//! running process starts its successor and hands over (`upgrade.rs`).
//!
//! Files, each one concern, each importing only those below it:
//! `main.rs` (start), `proxy.rs` (Pingora's phases), `admin.rs` (the
//! admin listener), `apply.rs` (the live apply), `connections.rs` (the
//! connection limit, and h2c told from HTTP/1), `metrics.rs`, `body.rs` (request bodies), `steps.rs`
//! (the step protocol on graft-edge), `answer.rs` (an answer on the wire),
//! `upgrade.rs` (SIGUSR2: a graceful upgrade of itself),
//! `request.rs` (the request modules read), `state.rs` (the configuration
//! and tables), `access_log.rs`, `settings.rs`. The `Graft-Edge` header is the engine's
//! (`graft_engine::edge`), beside FL1's judgement of it.
#![forbid(unsafe_code)]

mod access_log;
mod admin;
mod answer;
mod apply;
mod body;
mod connections;
mod log_phase;
mod metrics;
mod proxy;
mod request;
mod response_body;
mod settings;
mod state;
mod steps;
mod upgrade;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use graft_engine::Config;
use pingora_core::apps::HttpServerOptions;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::services::listening::Service;

use crate::settings::{Refused, Settings};
use crate::state::Edge;

/// How often what each thread counted on the steps is moved into the
/// counter table (nginx's workers do it on a 250 ms timer): the per-minute
/// series the dashboard draws.
const FLUSH_EVERY: Duration = Duration::from_millis(250);

/// Pingora's upgrade socket, in the settings' `run_dir`: where a process
/// started with `--upgrade` waits for the running one's listeners.
const UPGRADE_SOCK: &str = "upgrade.sock";

fn usage() -> ExitCode {
    eprintln!("usage: graft-edge [--check | --upgrade] <settings.json>");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let (mut check, mut upgrade) = (false, false);
    let mut file: Option<PathBuf> = None;
    for arg in std::env::args_os().skip(1) {
        match arg.to_str() {
            Some("--check") => check = true,
            Some("--upgrade") => upgrade = true,
            Some("-h" | "--help") => return usage(),
            Some(a) if a.starts_with('-') => return usage(),
            _ if file.is_none() => file = Some(arg.into()),
            _ => return usage(),
        }
    }
    let Some(file) = file else {
        return usage();
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let edge = match load(&file) {
        Ok(edge) => edge,
        Err(e) => {
            eprintln!("graft-edge: {e}");
            return ExitCode::FAILURE;
        }
    };
    if check {
        println!(
            "graft-edge: {} and {} are fine",
            file.display(),
            edge.settings.graft.display()
        );
        return ExitCode::SUCCESS;
    }
    // Upgrading, the listeners are the running process's, handed over.
    if !upgrade {
        if let Err(e) = check_listeners(&edge.settings) {
            eprintln!("graft-edge: {e}");
            return ExitCode::FAILURE;
        }
    }
    if let Err(e) = std::fs::create_dir_all(&edge.settings.run_dir) {
        eprintln!(
            "graft-edge: {}: field \"run_dir\": {}: {e}",
            file.display(),
            edge.settings.run_dir.display()
        );
        return ExitCode::FAILURE;
    }
    let mut edge = edge;
    if let Some(path) = &edge.settings.access_log {
        match access_log::AccessLog::open(path) {
            Ok(log) => edge.access_log = Some(log),
            Err(e) => {
                eprintln!(
                    "graft-edge: {}: field \"access_log\": {}: {e}",
                    file.display(),
                    path.display()
                );
                return ExitCode::FAILURE;
            }
        }
    }
    graft_engine::dispatch::install_panic_hook();
    let edge = Arc::new(edge);
    spawn_flusher(edge.clone());
    listen_for_upgrades(&edge.settings, &file);
    serve(edge, upgrade)
}

/// The settings, the graft file they name, and the tables: all checked.
fn load(file: &Path) -> Result<Edge, String> {
    let settings = Settings::load(file).map_err(|e| e.to_string())?;
    let config = Config::load(&settings.graft).map_err(|e| e.to_string())?;
    let zones: Vec<&str> = config.zones.iter().map(|z| z.name.as_str()).collect();
    settings.check_origins(&zones).map_err(|e| e.to_string())?;
    let edge = Edge::new(settings, config)?;
    let snap = edge.serving();
    tracing::info!(
        "graft-edge: serving {} zones of {} (generation {}); FL1 at {}",
        snap.config.zones.len(),
        edge.settings.graft.display(),
        snap.config.generation,
        edge.settings.fl1
    );
    Ok(edge)
}

/// Binds each listener once, so that an address taken or not ours is
/// refused now, naming its field, rather than in a Pingora thread.
fn check_listeners(s: &Settings) -> Result<(), Refused> {
    let listeners = s
        .listen
        .iter()
        .enumerate()
        .map(|(i, l)| (format!("listen[{i}]"), l.addr))
        .chain(s.admin_listen.map(|a| ("admin_listen".to_string(), a)));
    for (field, addr) in listeners {
        if let Err(e) = std::net::TcpListener::bind(addr) {
            return Err(Refused {
                file: s.source.clone(),
                field,
                why: format!("{addr}: {e}"),
            });
        }
    }
    Ok(())
}

/// SIGUSR2 starts a graceful upgrade to the binary this process was
/// started from ([`upgrade`]); without it (logged), graft-edge serves on,
/// upgraded by hand (`--upgrade`, then SIGQUIT).
fn listen_for_upgrades(s: &Settings, file: &Path) {
    let started = std::env::current_exe()
        .and_then(|exe| upgrade::on_sigusr2(exe, file.to_path_buf(), s.run_dir.join(UPGRADE_SOCK)));
    if let Err(e) = started {
        tracing::error!("graft-edge: SIGUSR2 will not upgrade this process: {e}");
    }
}

fn spawn_flusher(edge: Arc<Edge>) {
    std::thread::Builder::new()
        .name("graft-edge-flush".into())
        .spawn(move || loop {
            std::thread::sleep(FLUSH_EVERY);
            edge.flush(state::now_secs());
        })
        .expect("a thread");
}

/// Runs Pingora until a signal stops it: SIGINT at once, SIGTERM
/// gracefully, SIGQUIT gracefully with its listeners handed over first
/// (Pingora's graceful upgrade, through `run_dir`, to a graft-edge started
/// with `--upgrade`). Gracefully: requests in flight have
/// `timeouts.shutdown_ms` to finish.
fn serve(edge: Arc<Edge>, upgrade: bool) -> ExitCode {
    let s = &edge.settings;
    let conf = ServerConf {
        threads: s.threads,
        pid_file: s.run_dir.join("graft-edge.pid").display().to_string(),
        upgrade_sock: s.run_dir.join(UPGRADE_SOCK).display().to_string(),
        grace_period_seconds: Some(s.timeouts.shutdown_secs()),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(Some(opt), conf);
    // Upgrading: this returns once the running process handed its
    // listeners over (or Pingora exits, failing to get them).
    server.bootstrap();
    if upgrade {
        upgrade::took_over();
    }
    // HTTP/2 from clients in plain text too (prior knowledge), beside
    // HTTP/1.1 on the same listeners.
    // (`connections::Front` tells the two apart by the first bytes.)
    let proxy_with = |h2c: bool| {
        let mut options = HttpServerOptions::default();
        options.h2c = h2c;
        options.keepalive_request_limit = Some(s.limits.keepalive_requests);
        options.h2_idle_timeout = Some(Duration::from_secs(s.timeouts.client_keepalive_secs()));
        let mut http = pingora_proxy::http_proxy(
            &server.configuration,
            proxy::EdgeProxy { edge: edge.clone() },
        );
        http.server_options = Some(options);
        Arc::new(http)
    };
    let mut proxy = Service::new(
        "graft-edge".to_string(),
        connections::Front {
            http1: proxy_with(false),
            h2c: proxy_with(true),
            limit: edge.connections.clone(),
        },
    );
    for listener in &s.listen {
        let addr = listener.addr.to_string();
        match &listener.tls {
            None => proxy.add_tcp(&addr),
            // Checked at start (`settings::check_tls`): Pingora loads the
            // same files again when the listener starts.
            Some(tls) => {
                let mut settings = match TlsSettings::intermediate(
                    &tls.certificate.display().to_string(),
                    &tls.key.display().to_string(),
                ) {
                    Ok(settings) => settings,
                    Err(e) => {
                        eprintln!("graft-edge: TLS on {addr}: {e}");
                        return ExitCode::FAILURE;
                    }
                };
                // HTTP/2, else HTTP/1.1, by ALPN.
                settings.enable_h2();
                proxy.add_tls_with_settings(&addr, None, settings);
            }
        }
    }
    server.add_service(proxy);
    if let Some(addr) = s.admin_listen {
        let mut admin = Service::new(
            "graft-edge admin".to_string(),
            admin::Admin { edge: edge.clone() },
        );
        admin.add_tcp(&addr.to_string());
        server.add_service(admin);
    }
    server.run_forever()
}
