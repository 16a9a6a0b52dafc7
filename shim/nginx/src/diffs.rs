//! The ring of the last shadow differences (`graft_engine::diff_ring`), in
//! shared memory mapped by the master before the workers fork.
use std::sync::atomic::AtomicU64;
use std::sync::OnceLock;

use graft_engine::diff_ring::{self, DiffRing, Difference};
use ngx::ffi::{ngx_conf_t, ngx_int_t, ngx_shm_alloc, ngx_shm_t, NGX_OK};
use ngx::ngx_string;

static RING: OnceLock<Option<DiffRing<'static>>> = OnceLock::new();

/// Maps the ring, once per master process, before the fork.
pub fn map(cf: *mut ngx_conf_t) -> bool {
    RING.get_or_init(|| {
        let words = diff_ring::words();
        let mut shm = ngx_shm_t {
            addr: std::ptr::null_mut(),
            size: words * 8,
            name: ngx_string!("graft_diffs"),
            // SAFETY: nginx passes a valid conf with its cycle's log.
            log: unsafe { (*cf).log },
            exists: 0,
        };
        // SAFETY: ngx_shm_alloc maps `size` zeroed, shared, page-aligned
        // bytes, never unmapped; zero is a valid AtomicU64.
        unsafe {
            if ngx_shm_alloc(&mut shm) != NGX_OK as ngx_int_t {
                return None;
            }
            let words = std::slice::from_raw_parts(shm.addr as *const AtomicU64, words);
            Some(DiffRing::new(words))
        }
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
