//! Where the configuration applied live is kept: shared memory mapped by
//! the master before the workers fork (the protocol is the engine's
//! `graft_engine::snapshot`). Pages are only used when written.
use std::sync::OnceLock;

use graft_engine::snapshot::{Snapshot, HEADER_WORDS};
use ngx::ffi::ngx_conf_t;
use ngx::ngx_string;

/// The largest file that can be applied live (a reload reads larger ones).
pub const MAX_LIVE_BYTES: usize = 64 * 1024 * 1024;

static AREA: OnceLock<Option<Snapshot<'static>>> = OnceLock::new();

/// Maps the snapshot area, once per master process, before the fork.
pub fn map(cf: *mut ngx_conf_t) -> bool {
    AREA.get_or_init(|| {
        let words = HEADER_WORDS + MAX_LIVE_BYTES / 8;
        let words = crate::shm::map_words(cf, ngx_string!("graft_snapshot"), words)?;
        Some(Snapshot::new(words))
    })
    .is_some()
}

fn area() -> Option<&'static Snapshot<'static>> {
    AREA.get()?.as_ref()
}

/// How many configurations were applied live so far.
pub fn epoch() -> u64 {
    area().map_or(0, Snapshot::epoch)
}

/// Stores a validated text for every worker; returns the new epoch.
pub fn publish(text: &[u8]) -> Result<u64, String> {
    let area = area().ok_or("no shared memory")?;
    area.publish(text, u64::from(std::process::id()), process_alive)
        .map_err(|e| e.to_string())
}

/// The last text applied live and its epoch, read consistently.
pub fn read() -> Option<(u64, Vec<u8>)> {
    area()?.read()
}

/// Whether the process `pid` still runs (a zombie does not).
fn process_alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat[stat.rfind(')').map_or(0, |i| i + 2)..].chars().next();
        state != Some('Z')
    })
}
