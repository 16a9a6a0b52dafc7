//! Shared memory that every worker maps: anonymous pages mapped by the
//! master before it forks (`ngx_shm_alloc`), so every worker of every
//! later cycle sees the same words, and what is in them survives reloads
//! and a worker's restart. Pages are used only when touched.
use std::sync::atomic::AtomicU64;

use ngx::ffi::{ngx_conf_t, ngx_int_t, ngx_shm_alloc, ngx_shm_t, ngx_str_t, NGX_OK};

/// Maps `words` zeroed atomic words, never unmapped; `None` when the
/// system refuses the mapping.
pub fn map_words(
    cf: *mut ngx_conf_t,
    name: ngx_str_t,
    words: usize,
) -> Option<&'static [AtomicU64]> {
    let mut shm = ngx_shm_t {
        addr: std::ptr::null_mut(),
        size: words.checked_mul(8)?,
        name,
        // SAFETY: nginx passes a valid conf with its cycle's log.
        log: unsafe { (*cf).log },
        exists: 0,
    };
    // SAFETY: ngx_shm_alloc maps `size` bytes of zeroed, shared,
    // page-aligned anonymous memory, which graft never unmaps; zero is a
    // valid AtomicU64, and the alignment suits it.
    unsafe {
        if ngx_shm_alloc(&mut shm) != NGX_OK as ngx_int_t {
            return None;
        }
        Some(std::slice::from_raw_parts(
            shm.addr as *const AtomicU64,
            words,
        ))
    }
}
