//! The text of the configuration last applied live, in memory that every
//! worker maps (the shim maps it before the fork), so that every worker
//! loads exactly the bytes that were validated, not the file again (which
//! may have changed, or be half written, by then).
//!
//! Layout: a writer lock (the writer's pid), a sequence number (odd while
//! a write is under way), the epoch (how many applies so far), the length,
//! then the text as atomic words. Readers copy the text and retry when the
//! sequence moved under them; every access is atomic, so a read racing a
//! write is a retry, never undefined behaviour. A writer that died holding
//! the lock, or mid-write, leaves a lock the next writer takes over (its
//! process is gone) and an odd sequence the next write replaces.
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind};

const LOCK: usize = 0;
const SEQ: usize = 1;
const EPOCH: usize = 2;
const LEN: usize = 3;
/// Words before the text.
pub const HEADER_WORDS: usize = 4;

#[derive(Debug, Clone, Copy)]
pub struct Snapshot<'a> {
    header: &'a [AtomicU64],
    data: &'a [AtomicU64],
}

impl<'a> Snapshot<'a> {
    /// Over `words` (zeroed when first mapped): the header, then room for
    /// `(words.len() - HEADER_WORDS) * 8` bytes of text.
    pub fn new(words: &'a [AtomicU64]) -> Self {
        assert!(words.len() > HEADER_WORDS, "a snapshot needs room for text");
        let (header, data) = words.split_at(HEADER_WORDS);
        Snapshot { header, data }
    }

    /// The largest text it holds.
    pub fn capacity(&self) -> usize {
        self.data.len() * 8
    }

    /// How many texts were published so far.
    pub fn epoch(&self) -> u64 {
        self.header[EPOCH].load(Ordering::Acquire)
    }

    /// Stores `text` for every reader and returns the new epoch. `me` names
    /// this writer (its pid); `alive` tells whether a lock's holder still
    /// runs, so that a lock left by a dead writer is taken over.
    pub fn publish(&self, text: &[u8], me: u64, alive: impl Fn(u64) -> bool) -> Result<u64, Error> {
        // A worker waits here with its connections: briefly.
        self.publish_within(text, me, alive, Duration::from_secs(1))
    }

    /// As `publish`, waiting at most `wait` for another writer's lock
    /// (`Duration::ZERO`: not at all).
    pub fn publish_within(
        &self,
        text: &[u8],
        me: u64,
        alive: impl Fn(u64) -> bool,
        wait: Duration,
    ) -> Result<u64, Error> {
        if text.len() > self.capacity() {
            return Err(Error::new(
                ErrorKind::Snapshot,
                format!(
                    "{} bytes, over the limit of {} for a live apply (use nginx -s reload)",
                    text.len(),
                    self.capacity()
                ),
            ));
        }
        let lock = &self.header[LOCK];
        let deadline = Instant::now() + wait;
        loop {
            match lock.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => break,
                Err(holder)
                    if !alive(holder)
                        && lock
                            .compare_exchange(holder, me, Ordering::Acquire, Ordering::Relaxed)
                            .is_ok() =>
                {
                    break
                }
                Err(_) if Instant::now() > deadline => {
                    return Err(Error::new(
                        ErrorKind::Snapshot,
                        "another live apply is under way; try again",
                    ))
                }
                Err(_) => std::thread::yield_now(),
            }
        }
        // Odd while writing, whatever a writer that died left behind.
        let seq = (self.header[SEQ].load(Ordering::Acquire) + 1) | 1;
        self.header[SEQ].store(seq, Ordering::Relaxed);
        fence(Ordering::Release);
        for (word, chunk) in self.data.iter().zip(text.chunks(8)) {
            let mut bytes = [0u8; 8];
            bytes[..chunk.len()].copy_from_slice(chunk);
            word.store(u64::from_ne_bytes(bytes), Ordering::Relaxed);
        }
        self.header[LEN].store(text.len() as u64, Ordering::Relaxed);
        let epoch = self.header[EPOCH].fetch_add(1, Ordering::AcqRel) + 1;
        self.header[SEQ].store(seq + 1, Ordering::Release);
        lock.store(0, Ordering::Release);
        Ok(epoch)
    }

    /// The last text published and its epoch, read whole; `None` while
    /// writes keep getting in the way (call again later).
    pub fn read(&self) -> Option<(u64, Vec<u8>)> {
        for _ in 0..1000 {
            let seq = self.header[SEQ].load(Ordering::Acquire);
            if seq % 2 == 1 {
                std::thread::yield_now();
                continue;
            }
            let epoch = self.header[EPOCH].load(Ordering::Relaxed);
            let len = (self.header[LEN].load(Ordering::Relaxed) as usize).min(self.capacity());
            let mut text = Vec::with_capacity(len + 8);
            for word in &self.data[..len.div_ceil(8)] {
                text.extend_from_slice(&word.load(Ordering::Relaxed).to_ne_bytes());
            }
            text.truncate(len);
            fence(Ordering::Acquire);
            if self.header[SEQ].load(Ordering::Relaxed) == seq {
                return Some((epoch, text));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(n: usize) -> Vec<AtomicU64> {
        (0..n).map(|_| AtomicU64::new(0)).collect()
    }

    #[test]
    fn publishes_and_reads_back() {
        let w = words(HEADER_WORDS + 4);
        let s = Snapshot::new(&w);
        assert_eq!(s.epoch(), 0);
        assert_eq!(s.publish(b"first text", 1, |_| true).unwrap(), 1);
        assert_eq!(s.read(), Some((1, b"first text".to_vec())));
        assert_eq!(s.publish(b"2nd", 1, |_| true).unwrap(), 2);
        assert_eq!(s.read(), Some((2, b"2nd".to_vec())));
        assert!(
            s.publish(&[b'x'; 33], 1, |_| true).is_err(),
            "over capacity"
        );
        assert_eq!(s.read(), Some((2, b"2nd".to_vec())));
    }

    #[test]
    fn a_writer_that_died_mid_write_wedges_nothing() {
        let w = words(HEADER_WORDS + 4);
        let s = Snapshot::new(&w);
        s.publish(b"before", 1, |_| true).unwrap();
        // Process 77 took the lock and died between the sequence writes.
        w[LOCK].store(77, Ordering::Relaxed);
        w[SEQ].fetch_add(1, Ordering::Relaxed);
        assert_eq!(s.read(), None, "an odd sequence is a write under way");
        let epoch = s.publish(b"after", 2, |pid| pid != 77).unwrap();
        assert_eq!(s.read(), Some((epoch, b"after".to_vec())));
        assert_eq!(w[LOCK].load(Ordering::Relaxed), 0);
        assert_eq!(w[SEQ].load(Ordering::Relaxed) % 2, 0);
    }

    #[test]
    fn a_live_writer_keeps_its_lock() {
        let w = words(HEADER_WORDS + 4);
        let s = Snapshot::new(&w);
        w[LOCK].store(5, Ordering::Relaxed);
        let started = Instant::now();
        assert!(s.publish(b"x", 2, |_| true).is_err());
        assert!(started.elapsed() >= Duration::from_millis(900));
    }

    #[test]
    fn a_reader_never_sees_a_torn_text() {
        let w = words(HEADER_WORDS + 512);
        let s = Snapshot::new(&w);
        s.publish(&[b'a'; 4000], 1, |_| true).unwrap();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for i in 0..2000u32 {
                    let byte = b'a' + (i % 26) as u8;
                    let len = 1000 + (i as usize * 7) % 3000;
                    s.publish(&vec![byte; len], 1, |_| true).unwrap();
                }
            });
            for _ in 0..20_000 {
                if let Some((_, text)) = s.read() {
                    assert!(text.len() >= 1000);
                    assert!(text.iter().all(|&b| b == text[0]), "a torn read");
                }
            }
        });
    }
}
