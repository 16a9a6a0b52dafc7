//! The text of the configuration last applied live, kept in shared memory
//! so that every worker loads exactly the bytes that were validated, not
//! the file again (which may have changed, or be half written, by then).
//!
//! Layout of the mapping: a writer lock, a sequence number (odd while a
//! write is under way), the epoch (how many applies so far), the length,
//! then the text. Readers copy the text and retry when the sequence moved
//! under them. Pages of the mapping are used only when written.
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
    data: *mut u8,
}

// SAFETY: the data pointer is only dereferenced under the writer lock (for
// writes) or the sequence protocol (for reads); the mapping lives as long
// as the process.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

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
                    data: shm.addr.add(HEADER_WORDS * 8),
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
    // Writers take turns; a lock left by a writer that died is taken over
    // after a second.
    let me = u64::from(std::process::id());
    let deadline = Instant::now() + Duration::from_secs(1);
    while m.header[LOCK]
        .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        if Instant::now() > deadline {
            m.header[LOCK].store(me, Ordering::Release);
            break;
        }
        std::thread::yield_now();
    }
    m.header[SEQ].fetch_add(1, Ordering::AcqRel);
    // SAFETY: the data area has MAX_LIVE_BYTES bytes, checked above; the
    // writer lock is ours, and readers detect the write by the sequence.
    unsafe { std::ptr::copy_nonoverlapping(text.as_ptr(), m.data, text.len()) };
    m.header[LEN].store(text.len() as u64, Ordering::Release);
    let epoch = m.header[EPOCH].fetch_add(1, Ordering::AcqRel) + 1;
    m.header[SEQ].fetch_add(1, Ordering::AcqRel);
    m.header[LOCK].store(0, Ordering::Release);
    Ok(epoch)
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
        let mut text = vec![0u8; len];
        // SAFETY: `len` bytes of the data area; a concurrent write is
        // detected below and the copy thrown away.
        unsafe { std::ptr::copy_nonoverlapping(m.data, text.as_mut_ptr(), len) };
        if m.header[SEQ].load(Ordering::Acquire) == seq {
            return Some((epoch, text));
        }
    }
    None
}
