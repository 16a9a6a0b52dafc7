//! Counters in fixed windows over a table of atomic words that every worker
//! process maps (the nginx shim puts the table in shared memory made before
//! the workers fork).
//!
//! One `u64` a slot, updated by compare-and-swap so that no count is lost
//! between processes: 24 bits of the key's hash, 20 bits of the window
//! index, 20 bits of count (saturating). A key looks at up to
//! [`PROBES`] slots from its hash; a slot from another window is taken
//! over; when every slot it may use is live, the oldest-looking one is.
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use graft_contract::SharedCounters;

pub const PROBES: usize = 8;
const COUNT_BITS: u32 = 20;
const WINDOW_BITS: u32 = 20;
const COUNT_MAX: u64 = (1 << COUNT_BITS) - 1;
const WINDOW_MASK: u64 = (1 << WINDOW_BITS) - 1;

#[derive(Debug, Clone, Copy)]
pub struct SlotTable<'a> {
    slots: &'a [AtomicU64],
}

impl<'a> SlotTable<'a> {
    /// The number of slots must be a power of two.
    pub fn new(slots: &'a [AtomicU64]) -> Self {
        assert!(
            slots.len().is_power_of_two(),
            "a slot table needs 2^k slots"
        );
        SlotTable { slots }
    }
}

fn pack(fingerprint: u64, window: u64, count: u64) -> u64 {
    (fingerprint << (WINDOW_BITS + COUNT_BITS)) | ((window & WINDOW_MASK) << COUNT_BITS) | count
}

impl SharedCounters for SlotTable<'_> {
    fn incr(&self, key: &[u8], window_secs: u32, now_secs: u64) -> u64 {
        // DefaultHasher::new() has fixed keys: every process hashes alike.
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        window_secs.hash(&mut h);
        let hash = h.finish();
        // Never 0, so an empty slot (0) matches no key.
        let fingerprint = (hash >> 40).max(1);
        let window = now_secs / u64::from(window_secs.max(1));
        let this = pack(fingerprint, window, 0);
        let mask = self.slots.len() - 1;
        let start = hash as usize;

        for _ in 0..64 {
            let mut victim = None;
            for i in 0..PROBES.min(mask + 1) {
                let slot = &self.slots[(start + i) & mask];
                let cur = slot.load(Ordering::Acquire);
                if cur & !COUNT_MAX == this {
                    let mut cur = cur;
                    loop {
                        let count = (cur & COUNT_MAX) + 1;
                        if count > COUNT_MAX {
                            return COUNT_MAX;
                        }
                        match slot.compare_exchange(
                            cur,
                            cur + 1,
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        ) {
                            Ok(_) => return count,
                            Err(now) if now & !COUNT_MAX == this => cur = now,
                            // Taken over by another key meanwhile: start again.
                            Err(_) => break,
                        }
                    }
                    continue;
                }
                let stale = cur == 0 || (cur >> COUNT_BITS) & WINDOW_MASK != window & WINDOW_MASK;
                if stale && victim.is_none() {
                    victim = Some((slot, cur));
                }
            }
            let (slot, cur) = victim.unwrap_or_else(|| {
                let slot = &self.slots[start & mask];
                (slot, slot.load(Ordering::Acquire))
            });
            if slot
                .compare_exchange(cur, this | 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return 1;
            }
        }
        // Lost every race: count this request as the first, never block on it.
        1
    }
}

impl SlotTable<'_> {
    /// The count of `key` in the window that holds `now_secs`, without adding.
    pub fn get(&self, key: &[u8], window_secs: u32, now_secs: u64) -> u64 {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        window_secs.hash(&mut h);
        let hash = h.finish();
        let this = pack(
            (hash >> 40).max(1),
            now_secs / u64::from(window_secs.max(1)),
            0,
        );
        let mask = self.slots.len() - 1;
        let start = hash as usize;
        (0..PROBES.min(mask + 1))
            .map(|i| self.slots[(start + i) & mask].load(Ordering::Acquire))
            .find(|cur| cur & !COUNT_MAX == this)
            .map_or(0, |cur| cur & COUNT_MAX)
    }
}

/// Counters by key, in a table of atomic word pairs (key, count) that
/// every worker maps: adding is lock-free, and what one worker adds every
/// worker reads. A key takes the first free slot of [`PROBES`] from its
/// hash; when all are taken by other keys, the count is lost and counted
/// under [`CounterTable::lost`].
///
/// The first pair is the table's own: how many kill switches are thrown
/// (so that the common case, none, costs one load), and the lost count.
#[derive(Debug, Clone, Copy)]
pub struct CounterTable<'a> {
    slots: &'a [AtomicU64],
}

const THROWN: usize = 0;
const LOST: usize = 1;

impl<'a> CounterTable<'a> {
    /// `slots` holds pairs: one for the table, then a power of two of them.
    pub fn new(slots: &'a [AtomicU64]) -> Self {
        assert!(
            slots.len() >= 4
                && slots.len().is_multiple_of(2)
                && (slots.len() / 2 - 1).is_power_of_two(),
            "a counter table needs 1 + 2^k pairs of slots"
        );
        CounterTable { slots }
    }

    fn find(&self, key: u64, insert: bool) -> Option<&AtomicU64> {
        let key = key | 1; // never 0, the mark of a free slot
        let mask = self.slots.len() / 2 - 2;
        let start = (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize;
        for i in 0..PROBES.min(mask + 1) {
            let pair = 1 + ((start + i) & mask);
            let k = &self.slots[2 * pair];
            let cur = k.load(Ordering::Acquire);
            if cur == key {
                return Some(&self.slots[2 * pair + 1]);
            }
            if cur == 0 && insert {
                match k.compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => return Some(&self.slots[2 * pair + 1]),
                    Err(now) if now == key => return Some(&self.slots[2 * pair + 1]),
                    Err(_) => continue,
                }
            }
        }
        None
    }

    pub fn add(&self, key: u64, n: u64) {
        match self.find(key, true) {
            Some(count) => count.fetch_add(n, Ordering::Relaxed),
            None => self.slots[LOST].fetch_add(n, Ordering::Relaxed),
        };
    }

    pub fn get(&self, key: u64) -> u64 {
        self.find(key, false)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Sets a kill switch's word, keeping the count of thrown ones.
    pub fn set_switch(&self, key: u64, value: u64) {
        let Some(cell) = self.find(key, true) else {
            self.slots[LOST].fetch_add(1, Ordering::Relaxed);
            return;
        };
        match (cell.swap(value, Ordering::AcqRel), value) {
            (0, v) if v != 0 => {
                self.slots[THROWN].fetch_add(1, Ordering::AcqRel);
            }
            (old, 0) if old != 0 => {
                self.slots[THROWN].fetch_sub(1, Ordering::AcqRel);
            }
            _ => {}
        }
    }

    /// Whether any kill switch is thrown anywhere.
    pub fn any_switch(&self) -> bool {
        self.slots[THROWN].load(Ordering::Acquire) != 0
    }

    /// Counts that found no slot: the table is too small for the configuration.
    pub fn lost(&self) -> u64 {
        self.slots[LOST].load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(n: usize) -> Vec<AtomicU64> {
        (0..n).map(|_| AtomicU64::new(0)).collect()
    }

    #[test]
    fn counts_per_key_and_window() {
        let slots = table(1024);
        let t = SlotTable::new(&slots);
        assert_eq!(t.incr(b"a", 10, 100), 1);
        assert_eq!(t.incr(b"a", 10, 105), 2);
        assert_eq!(t.incr(b"b", 10, 105), 1);
        assert_eq!(t.incr(b"a", 10, 110), 1, "a new window starts again");
        assert_eq!(
            t.incr(b"a", 60, 110),
            1,
            "another window length is another counter"
        );
    }

    #[test]
    fn threads_lose_no_count() {
        let slots = table(64);
        let t = SlotTable::new(&slots);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        t.incr(b"shared", 60, 7);
                    }
                });
            }
        });
        assert_eq!(t.incr(b"shared", 60, 7), 40_001);
    }

    #[test]
    fn keyed_counters_add_up_across_threads_and_report_losses() {
        let slots = table(2 * 65);
        let t = CounterTable::new(&slots);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for k in 0..20u64 {
                        for _ in 0..1000 {
                            t.add(k * 7919, 1);
                        }
                    }
                });
            }
        });
        for k in 0..20u64 {
            assert_eq!(t.get(k * 7919), 4000);
        }
        assert_eq!(t.get(424242), 0);
        assert_eq!(t.lost(), 0);
        let tiny_slots = table(2 * 3);
        let tiny = CounterTable::new(&tiny_slots);
        for k in 0..10u64 {
            tiny.add(k << 20, 1);
        }
        assert_eq!(tiny.lost(), 8);
    }

    #[test]
    fn a_full_table_still_counts() {
        let slots = table(4);
        let t = SlotTable::new(&slots);
        for i in 0..100u32 {
            assert!(t.incr(&i.to_le_bytes(), 60, 0) >= 1);
        }
    }
}
