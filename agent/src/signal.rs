//! SIGTERM and SIGINT, caught so that the agent says it stops and keeps
//! what it must remember before it goes (systemd stops it with SIGTERM).
//! tokio's own signal handling: no handler of graft's runs in signal
//! context.
use tokio::signal::unix::{signal, Signal, SignalKind};

pub struct Signals {
    term: Signal,
    int: Signal,
}

/// From now on SIGTERM and SIGINT no longer end the process:
/// [`Signals::caught`] says when one came. Called in the runtime.
pub fn catch() -> std::io::Result<Signals> {
    Ok(Signals {
        term: signal(SignalKind::terminate())?,
        int: signal(SignalKind::interrupt())?,
    })
}

impl Signals {
    /// Resolves, with the signal's name, once SIGTERM or SIGINT came.
    pub async fn caught(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}
