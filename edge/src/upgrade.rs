//! A graceful upgrade graft-edge makes of itself, on SIGUSR2 (nginx's
//! binary upgrade): the binary at the path it was started from (a new
//! version a package put there, or the same) started again with
//! `--upgrade` and the same settings, as a child of this one, in the same
//! service; once the child waits for the listeners, this process takes
//! Pingora's graceful upgrade path itself (SIGQUIT): it hands the
//! listening sockets over, finishes its requests in flight and exits. No
//! connection is refused, and the settings and the graft file are read
//! again by the new process.
//!
//! Under systemd the new process tells the service manager it is the
//! service's main process now (`MAINPID=`, with `NotifyAccess=all` in the
//! unit), so the unit stays active through the exit of the old one.
//!
//! A child that cannot start, or refuses its settings or graft file,
//! exits: this process is told nothing else, keeps its listeners and
//! serves on; the refusal is logged (and the child's own error beside it,
//! on the same standard error).
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGQUIT, SIGUSR2};

/// How long the new process may take to read its files and wait for the
/// listeners (Pingora's upgrade socket appears then).
const START_LIMIT: Duration = Duration::from_secs(30);

/// Listens for SIGUSR2 on a thread of its own; each one starts an upgrade
/// to the binary at `exe` (resolved at start, before a package could
/// replace the file), with the settings `settings`, Pingora's upgrade
/// socket at `sock`.
pub fn on_sigusr2(exe: PathBuf, settings: PathBuf, sock: PathBuf) -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([SIGUSR2])?;
    std::thread::Builder::new()
        .name("graft-edge-upgrade".into())
        .spawn(move || {
            // Kept listening to the end: a SIGUSR2 while this process
            // finishes its requests must not find the signal's default
            // action (ending the process at once).
            let mut handed_over: Option<u32> = None;
            for _ in signals.forever() {
                if let Some(pid) = handed_over {
                    tracing::warn!(
                        "graft-edge: SIGUSR2 ignored: this process has handed its listeners to pid {pid} and is finishing its requests"
                    );
                    continue;
                }
                match start(&exe, &settings, &sock) {
                    Ok(pid) => {
                        tracing::warn!(
                            "graft-edge: upgrading to a new graft-edge ({}, pid {pid}): handing the listeners over, then finishing the requests in flight",
                            exe.display()
                        );
                        handed_over = Some(pid);
                        // Pingora hands the listeners over and exits.
                        if let Err(e) = signal_hook::low_level::raise(SIGQUIT) {
                            tracing::error!("graft-edge: upgrade: SIGQUIT to this process: {e}");
                        }
                    }
                    Err(why) => tracing::error!(
                        "graft-edge: upgrade refused, this graft-edge serving on: {why}"
                    ),
                }
            }
        })?;
    Ok(())
}

/// Starts the new process and waits until it waits for the listeners:
/// its pid, or why it did not.
fn start(exe: &Path, settings: &Path, sock: &Path) -> Result<u32, String> {
    // A socket an earlier upgrade left would read as the new one's.
    match std::fs::remove_file(sock) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{}: {e}", sock.display())),
    }
    let mut child = Command::new(exe)
        .arg("--upgrade")
        .arg(settings)
        .spawn()
        .map_err(|e| format!("{}: {e}", exe.display()))?;
    let deadline = Instant::now() + START_LIMIT;
    loop {
        if sock.exists() {
            return Ok(child.id());
        }
        if let Some(status) = exited(&mut child) {
            return Err(format!(
                "the new graft-edge ({}) exited ({status}) before it took the listeners: its error is above",
                exe.display()
            ));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "the new graft-edge ({}) did not wait for the listeners within {} s: stopped",
                exe.display(),
                START_LIMIT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn exited(child: &mut Child) -> Option<String> {
    match child.try_wait() {
        Ok(Some(status)) => Some(status.to_string()),
        Ok(None) => None,
        Err(e) => Some(e.to_string()),
    }
}

/// Tells systemd (when it started this service: `NOTIFY_SOCKET`) that
/// this process, started by an upgrade, is the service's main process
/// now, and ready; nothing without systemd.
pub fn took_over() {
    let pid = std::process::id();
    if let Err(e) = sd_notify::notify(&[
        sd_notify::NotifyState::MainPid(pid),
        sd_notify::NotifyState::Ready,
    ]) {
        tracing::error!(
            "graft-edge: could not tell systemd that pid {pid} is its main process now: {e}"
        );
    }
}
