//! The text of the configuration last applied live, kept in shared memory
//! so that every worker loads exactly the bytes that were validated, not
//! the file again (which may have changed, or be half written, by then).
//!
//! Layout of the mapping: a writer lock (the writer's pid), a sequence
//! number (odd while a write is under way), the epoch (how many applies so
//! far), the length, then the text as atomic words. Readers copy the text
//! and retry when the sequence moved under them; every access to the text
//! is atomic, so a read racing a write is a retry, never undefined
//! behaviour. A writer that died holding the lock, or mid-write, leaves a
//! lock the next writer takes over (the holder's process is gone) and an
//! odd sequence the next write replaces. Pages of the mapping are used
//! only when written.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ngx::ffi::{ngx_conf_t, ngx_int_t, ngx_shm_alloc, ngx_shm_t, NGX_OK};
use ngx::ngx_string;

/// The largest file that can be applied live (a reload reads larger ones).
pub const MAX_LIVE_BYTES: usize = 64 * 1024 * 1024;
const HEADER_WORDS: usize = 4;

struct Mapping {
    header: &'static [AtomicU64; HEADER_WORDS],
    data: &'static [AtomicU64],
}

static MAPPING: OnceLock<Option<Mapping>> = OnceLock::new();

const LOCK: usize = 0;
const SEQ: usize = 1;
const EPOCH: usize = 2;
const LEN: usize = 3;

/// Maps the snapshot area, once per master process, before the fork.
pub fn map(cf: *mut ngx_conf_t) -> bool {
    MAPPING
        .get_or_init(|| {
            let mut shm = ngx_shm_t {
                addr: std::ptr::null_mut(),
                size: HEADER_WORDS * 8 + MAX_LIVE_BYTES,
                name: ngx_string!("graft_snapshot"),
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
                Some(Mapping {
                    header: &*(shm.addr as *const [AtomicU64; HEADER_WORDS]),
                    data: std::slice::from_raw_parts(
                        shm.addr.add(HEADER_WORDS * 8) as *const AtomicU64,
                        MAX_LIVE_BYTES / 8,
                    ),
                })
            }
        })
        .is_some()
}

fn mapping() -> Option<&'static Mapping> {
    MAPPING.get()?.as_ref()
}

/// How many configurations were applied live so far.
pub fn epoch() -> u64 {
    mapping().map_or(0, |m| m.header[EPOCH].load(Ordering::Acquire))
}

/// Stores a validated text for every worker; returns the new epoch.
pub fn publish(text: &[u8]) -> Result<u64, String> {
    let m = mapping().ok_or("no shared memory")?;
    if text.len() > MAX_LIVE_BYTES {
        return Err(format!(
            "file is {} bytes, over the limit of {MAX_LIVE_BYTES} for a live apply (use nginx -s reload)",
            text.len()
        ));
    }
    let me = u64::from(std::process::id());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match m.header[LOCK].compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => break,
            // A writer that died holding the lock: take it over.
            Err(holder)
                if !process_alive(holder)
                    && m.header[LOCK]
                        .compare_exchange(holder, me, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok() =>
            {
                break
            }
            Err(_) if Instant::now() > deadline => {
                return Err("another live apply is under way; try again".into())
            }
            Err(_) => std::thread::yield_now(),
        }
    }
    // Odd while writing, whatever a writer that died left behind.
    let seq = (m.header[SEQ].load(Ordering::Acquire) + 1) | 1;
    m.header[SEQ].store(seq, Ordering::Relaxed);
    std::sync::atomic::fence(Ordering::Release);
    for (word, chunk) in m.data.iter().zip(text.chunks(8)) {
        let mut bytes = [0u8; 8];
        bytes[..chunk.len()].copy_from_slice(chunk);
        word.store(u64::from_ne_bytes(bytes), Ordering::Relaxed);
    }
    m.header[LEN].store(text.len() as u64, Ordering::Release);
    let epoch = m.header[EPOCH].fetch_add(1, Ordering::AcqRel) + 1;
    m.header[SEQ].store(seq + 1, Ordering::Release);
    m.header[LOCK].store(0, Ordering::Release);
    Ok(epoch)
}

/// Whether the process `pid` still runs (a zombie does not).
fn process_alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat[stat.rfind(')').map_or(0, |i| i + 2)..].chars().next();
        state != Some('Z')
    })
}

/// The last text applied live and its epoch, read consistently.
pub fn read() -> Option<(u64, Vec<u8>)> {
    let m = mapping()?;
    for _ in 0..1000 {
        let seq = m.header[SEQ].load(Ordering::Acquire);
        if seq % 2 == 1 {
            std::thread::yield_now();
            continue;
        }
        let epoch = m.header[EPOCH].load(Ordering::Acquire);
        let len = (m.header[LEN].load(Ordering::Acquire) as usize).min(MAX_LIVE_BYTES);
        let mut text = Vec::with_capacity(len + 8);
        for word in &m.data[..len.div_ceil(8)] {
            text.extend_from_slice(&word.load(Ordering::Relaxed).to_ne_bytes());
        }
        text.truncate(len);
        std::sync::atomic::fence(Ordering::Acquire);
        if m.header[SEQ].load(Ordering::Relaxed) == seq {
            return Some((epoch, text));
        }
    }
    None
}
