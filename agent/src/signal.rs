//! SIGTERM and SIGINT, caught so that the agent says it stops and keeps
//! what it must remember before it goes (systemd stops it with SIGTERM).
//!
//! The agent's only call into C. tokio's `signal` feature would bring a
//! crate more for what one flag does here: the handler stores the
//! signal's number, and [`caught`] looks at it ten times a second.
use std::ffi::c_int;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

const SIGINT: c_int = 2;
const SIGTERM: c_int = 15;

/// The signal caught (0: none yet).
static CAUGHT: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(signum: c_int) {
    CAUGHT.store(signum, Ordering::Relaxed);
}

extern "C" {
    /// libc's `signal(2)`: glibc's installs the handler with BSD
    /// semantics (kept after a delivery, system calls restarted).
    fn signal(signum: c_int, handler: extern "C" fn(c_int)) -> usize;
}

/// From now on SIGTERM and SIGINT no longer end the process: [`caught`]
/// says when one came.
pub fn catch() {
    for signum in [SIGTERM, SIGINT] {
        // SAFETY: the handler only stores to a lock-free atomic, which is
        // async-signal-safe; it is a plain `extern "C" fn` that lives as
        // long as the process.
        unsafe {
            signal(signum, on_signal);
        }
    }
}

/// Resolves, with the signal's name, once SIGTERM or SIGINT came.
pub async fn caught() -> &'static str {
    loop {
        match CAUGHT.load(Ordering::Relaxed) {
            SIGTERM => return "SIGTERM",
            SIGINT => return "SIGINT",
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
