//! The ring of the last shadow differences (`graft_engine::diff_ring`), in
//! shared memory mapped by the master before the workers fork.
use std::sync::OnceLock;

use graft_engine::diff_ring::{self, DiffRing, Difference};
use ngx::ffi::ngx_conf_t;
use ngx::ngx_string;

static RING: OnceLock<Option<DiffRing<'static>>> = OnceLock::new();

/// Maps the ring, once per master process, before the fork.
pub fn map(cf: *mut ngx_conf_t) -> bool {
    RING.get_or_init(|| {
        let words = crate::shm::map_words(cf, ngx_string!("graft_diffs"), diff_ring::words())?;
        Some(DiffRing::new(words))
    })
    .is_some()
}

/// Keeps one difference for the dashboard.
pub fn note(d: &Difference<'_>) {
    if let Some(Some(ring)) = RING.get() {
        ring.push(d, u64::from(std::process::id()), |pid| {
            std::path::Path::new(&format!("/proc/{pid}")).exists()
        });
    }
}

/// The differences kept, newest first.
pub fn recent() -> Vec<serde_json::Value> {
    match RING.get() {
        Some(Some(ring)) => ring.recent(),
        _ => Vec::new(),
    }
}
