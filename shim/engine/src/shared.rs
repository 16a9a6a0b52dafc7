//! Tables of atomic words that every worker process maps (the nginx shim
//! puts them in shared memory made by the master before the workers fork):
//! [`WindowTable`], counts in fixed windows (rate limits, rollback), and
//! [`CounterTable`], the steps' counters by key (metrics) and the kill switches.
//!
//! Both are lock-free: every change is one compare-and-swap or one
//! fetch-add on a word, so that no count is lost between processes.
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use graft_contract::Windows;
use siphasher::sip::SipHasher13;

/// Slots of a [`WindowTable`] bucket: a key lives in one bucket (one cache
/// line), and [`CounterTable`] counters look at this many pairs.
pub const PROBES: usize = 8;
/// The longest window a [`WindowTable`] counts in (about six days): a longer
/// one is counted as this long. A slot left untouched for longer than this
/// may look live again: it is then at most a candidate to take over.
pub const MAX_WINDOW_SECS: u32 = 1 << 19;
/// Words a [`WindowTable`] keeps for itself, at the end of its slice.
pub const SLOT_RESERVED: usize = 3;

const COUNT_BITS: u32 = 20;
const END_BITS: u32 = 20;
const COUNT_MAX: u64 = (1 << COUNT_BITS) - 1;
const END_MASK: u64 = (1 << END_BITS) - 1;
/// Compare-and-swap rounds before giving up on a contended word.
const ATTEMPTS: usize = 64;
/// The reserved words of a window table, from the end of its slice.
const K0: usize = 0;
const K1: usize = 1;
const EVICTIONS: usize = 2;

/// Counters in fixed windows, shared by every worker.
///
/// Layout of the slice: slots, then [`SLOT_RESERVED`] words: the two keys
/// of the table's SipHash-1-3 and the count of evictions. Slots are grouped
/// in buckets of [`PROBES`] (the last `len % PROBES` slots are unused; a
/// table of fewer slots is one bucket). One `u64` a slot: 24 bits of the
/// key's hash, 20 bits of the end of its window (seconds, modulo 2^20), 20
/// bits of count (saturating); 0 is a free slot.
///
/// A key hashes (keyed: no client can tell where its key lands, nor aim
/// at another's) to one bucket. It takes the bucket's first free slot, or
/// one whose window is over; when all are live, it takes over the one with
/// the lowest count and **starts from that count plus one** (and the
/// eviction is counted, [`WindowTable::evictions`]). So, within a window, a
/// key never reads lower than what it really counted (for keys of one
/// window length: a slot of a longer window stays live, one of a shorter
/// window may end and free its slot early): a flood of fresh keys cannot
/// reset a heavy client's count, the lightest count is what gives way.
/// The price of a table too small for its traffic is counts too high for
/// new keys (refused early rather than let through): watch `evictions`.
#[derive(Clone, Copy)]
pub struct WindowTable<'a> {
    slots: &'a [AtomicU64],
    own: &'a [AtomicU64],
    keys: (u64, u64),
}

impl fmt::Debug for WindowTable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the keys: they are what keeps the slots out of reach.
        f.debug_struct("WindowTable")
            .field("slots", &self.slots.len())
            .field("evictions", &self.evictions())
            .finish()
    }
}

/// A random word, never 0 (0 marks a key not drawn yet).
fn random_word() -> u64 {
    loop {
        // Each RandomState has keys of its own, drawn from the system's
        // randomness once per thread and stepped since.
        let w = RandomState::new().hash_one(0x6772_6166_745f_6b65_u64);
        if w != 0 {
            return w;
        }
    }
}

/// The word's value, drawn now if no process has drawn it: the first
/// compare-and-swap from 0 wins, every other process reads its value.
fn claim(word: &AtomicU64) -> u64 {
    match word.load(Ordering::Acquire) {
        0 => {
            let drawn = random_word();
            match word.compare_exchange(0, drawn, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => drawn,
                Err(now) => now,
            }
        }
        k => k,
    }
}

fn pack(fingerprint: u64, end: u64, count: u64) -> u64 {
    (fingerprint << (END_BITS + COUNT_BITS)) | ((end & END_MASK) << COUNT_BITS) | count
}

/// Whether a slot counts in a window not over at `now` (its end is ahead,
/// by at most the longest window).
fn live(cur: u64, now: u64) -> bool {
    let ahead = ((cur >> COUNT_BITS) & END_MASK).wrapping_sub(now) & END_MASK;
    cur != 0 && ahead != 0 && ahead <= u64::from(MAX_WINDOW_SECS)
}

impl<'a> WindowTable<'a> {
    /// A table over `words`: at least `SLOT_RESERVED + 1` of them, zeroed
    /// when first mapped; any length (the shim's 64 Ki words make 8,191
    /// buckets of 8).
    ///
    /// The first `new` over a table draws its hash keys at random and
    /// stores them in the table's reserved words; every later one (another
    /// worker, a reload, a second call) reads them, so the nginx shim calls
    /// it once in the master right after mapping the table, before the
    /// workers fork. Calling it twice, or concurrently, is safe: each key
    /// word is set once, by compare-and-swap from 0.
    pub fn new(words: &'a [AtomicU64]) -> Self {
        assert!(
            words.len() > SLOT_RESERVED,
            "a window table needs {SLOT_RESERVED} reserved words and at least one slot"
        );
        let (slots, own) = words.split_at(words.len() - SLOT_RESERVED);
        let keys = (claim(&own[K0]), claim(&own[K1]));
        WindowTable { slots, own, keys }
    }

    /// How many times a key took over a slot still counting, because every
    /// slot of its bucket was: the table is too small for its traffic, or
    /// flooded.
    pub fn evictions(&self) -> u64 {
        self.own[EVICTIONS].load(Ordering::Relaxed)
    }

    /// The key's bucket (first slot, length) and its slot's word with a count of 0.
    fn locate(&self, key: &[u8], window_secs: u32, now_secs: u64) -> (usize, usize, u64) {
        let window_secs = window_secs.clamp(1, MAX_WINDOW_SECS);
        let mut h = SipHasher13::new_with_keys(self.keys.0, self.keys.1);
        h.write(key);
        h.write_u32(window_secs);
        let hash = h.finish();
        // Never 0, so an empty slot (0) matches no key.
        let fingerprint = (hash >> 40).max(1);
        let w = u64::from(window_secs);
        let end = (now_secs / w).wrapping_add(1).wrapping_mul(w);
        let size = PROBES.min(self.slots.len());
        let buckets = (self.slots.len() / size) as u64;
        let bucket = ((hash & 0xffff_ffff) * buckets) >> 32;
        (bucket as usize * size, size, pack(fingerprint, end, 0))
    }

    /// The count of `key` in the window that holds `now_secs`, without adding.
    pub fn get(&self, key: &[u8], window_secs: u32, now_secs: u64) -> u64 {
        let (first, size, this) = self.locate(key, window_secs, now_secs);
        self.slots[first..first + size]
            .iter()
            .map(|slot| slot.load(Ordering::Acquire))
            .find(|cur| cur & !COUNT_MAX == this)
            .map_or(0, |cur| cur & COUNT_MAX)
    }
}

impl Windows for WindowTable<'_> {
    fn incr(&self, key: &[u8], window_secs: u32, now_secs: u64) -> u64 {
        let (first, size, this) = self.locate(key, window_secs, now_secs);
        let bucket = &self.slots[first..first + size];
        // What this request would have counted, should every round be lost.
        let mut estimate = 1;
        'round: for _ in 0..ATTEMPTS {
            let mut free = None;
            let mut lightest: Option<(&AtomicU64, u64)> = None;
            for slot in bucket {
                let mut cur = slot.load(Ordering::Acquire);
                if cur & !COUNT_MAX == this {
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
                            // Taken over by another key meanwhile: look again.
                            Err(_) => continue 'round,
                        }
                    }
                }
                if !live(cur, now_secs) {
                    free = free.or(Some((slot, cur)));
                } else if lightest.is_none_or(|(_, l)| cur & COUNT_MAX < l & COUNT_MAX) {
                    lightest = Some((slot, cur));
                }
            }
            let (slot, cur, count) = match (free, lightest) {
                (Some((slot, cur)), _) => (slot, cur, 1),
                (None, Some((slot, cur))) => (slot, cur, ((cur & COUNT_MAX) + 1).min(COUNT_MAX)),
                (None, None) => unreachable!("a bucket has at least one slot"),
            };
            estimate = estimate.max(count);
            if slot
                .compare_exchange(cur, this | count, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                if free.is_none() {
                    self.own[EVICTIONS].fetch_add(1, Ordering::Relaxed);
                }
                return count;
            }
        }
        // Lost every race: never block on it, never count lower than we saw.
        estimate
    }
}

/// Why a kill switch was not stored: it is NOT thrown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwitchError {
    /// Every word the switch may use holds another switch that is thrown.
    Full,
    /// A switch's value is 0 to 3.
    Value(u64),
    /// Other processes changed the words first, every time.
    Contended,
}

impl fmt::Display for SwitchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SwitchError::Full => write!(
                f,
                "the kill switch is not thrown: no room left for switches in the shared table"
            ),
            SwitchError::Value(v) => write!(f, "the kill switch is not thrown: bad value {v}"),
            SwitchError::Contended => write!(
                f,
                "the kill switch is not thrown: the shared table was contended, try again"
            ),
        }
    }
}

impl std::error::Error for SwitchError {}

/// Counters by key, in a table of atomic word pairs (key, count) that
/// every worker maps: adding is lock-free, and what one worker adds every
/// worker reads. A key takes the first free pair of [`PROBES`] from its
/// hash; when all are taken by other keys, the count is lost and counted
/// under [`CounterTable::lost`].
///
/// Layout of the slice: the table's own pair (how many kill switches are
/// thrown, so that the common case, none, costs one load; the lost count),
/// then the kill switches' room, one pair in [`SWITCH_SHARE`] of the rest
/// (at least one), that counters never take, then the counters' pairs.
/// A switch is one word: its key's 62 high bits and its value (0 off, else
/// thrown) in the low two. A switch keeps its word when reset, and a new
/// one may take the word of one that is off; lookups stop at the first
/// word never used, and look at [`SWITCH_PROBES`] words at most.
#[derive(Debug, Clone, Copy)]
pub struct CounterTable<'a> {
    own: &'a [AtomicU64],
    switches: &'a [AtomicU64],
    counters: &'a [AtomicU64],
}

/// The one `&'static` copy of a table over memory mapped for the life of
/// the process: steps hold this reference (8 bytes) rather than a copy of
/// the table's bounds each. A process maps its tables once, so this keeps
/// one copy per table (told apart by `first`, its first word), not one per
/// configuration.
fn interned<T: Sync + 'static>(
    known: &std::sync::Mutex<Vec<&'static T>>,
    t: T,
    first: fn(&T) -> *const AtomicU64,
) -> &'static T {
    let mut known = known.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&table) = known.iter().find(|k| std::ptr::eq(first(k), first(&t))) {
        return table;
    }
    let table: &'static T = Box::leak(Box::new(t));
    known.push(table);
    table
}

/// A counter table, interned (see [`interned`]).
pub fn interned_counters(t: CounterTable<'static>) -> &'static CounterTable<'static> {
    static KNOWN: std::sync::Mutex<Vec<&'static CounterTable<'static>>> =
        std::sync::Mutex::new(Vec::new());
    interned(&KNOWN, t, |t| t.own.as_ptr())
}

/// A window table, interned (see [`interned`]).
pub fn interned_windows(t: WindowTable<'static>) -> &'static WindowTable<'static> {
    static KNOWN: std::sync::Mutex<Vec<&'static WindowTable<'static>>> =
        std::sync::Mutex::new(Vec::new());
    interned(&KNOWN, t, |t| t.own.as_ptr())
}

const THROWN: usize = 0;
const LOST: usize = 1;
/// One pair in this many, after the table's own, is kill switches' room.
pub const SWITCH_SHARE: usize = 16;
/// Words a kill switch may look at from its hash.
pub const SWITCH_PROBES: usize = 64;
const SWITCH_VALUE: u64 = 3;
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// Where in `len` things a 64-bit key starts.
fn start_of(key: u64, len: usize) -> usize {
    (((key.wrapping_mul(GOLDEN) >> 32) * len as u64) >> 32) as usize
}

impl<'a> CounterTable<'a> {
    /// Words of the table that `graft_shared_memory <bytes>` maps (pairs
    /// of words, at least 6): the one place nginx's module and the bench
    /// size it from.
    pub fn words_for(bytes: usize) -> usize {
        (bytes / 16).max(3) * 2
    }

    /// A table over `slots`: an even number of words, at least 6, zeroed
    /// when first mapped (the shim's `2 * (1 + 2^18)` words make room for
    /// 32,768 switches and 245,760 counters; `2 * (1 + 512)`, 64 and 480).
    pub fn new(slots: &'a [AtomicU64]) -> Self {
        assert!(
            slots.len() >= 6 && slots.len().is_multiple_of(2),
            "a counter table needs an even number of words, at least 6"
        );
        let pairs = slots.len() / 2 - 1;
        let switch_pairs = (pairs / SWITCH_SHARE).max(1);
        let (own, rest) = slots.split_at(2);
        let (switches, counters) = rest.split_at(2 * switch_pairs);
        CounterTable {
            own,
            switches,
            counters,
        }
    }

    fn find(&self, key: u64, insert: bool) -> Option<&AtomicU64> {
        let key = key | 1; // never 0, the mark of a free slot
        let pairs = self.counters.len() / 2;
        let start = start_of(key, pairs);
        for i in 0..PROBES.min(pairs) {
            let pair = (start + i) % pairs;
            let k = &self.counters[2 * pair];
            let count = &self.counters[2 * pair + 1];
            let cur = k.load(Ordering::Acquire);
            if cur == key {
                return Some(count);
            }
            if cur == 0 && insert {
                match k.compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => return Some(count),
                    Err(now) if now == key => return Some(count),
                    Err(_) => continue,
                }
            }
        }
        None
    }

    pub fn add(&self, key: u64, n: u64) {
        match self.find(key, true) {
            Some(count) => count.fetch_add(n, Ordering::Relaxed),
            None => self.own[LOST].fetch_add(n, Ordering::Relaxed),
        };
    }

    /// Sets `key`'s word to `value` (a gauge; [`CounterTable::add`] is for
    /// counts).
    pub fn set(&self, key: u64, value: u64) {
        match self.find(key, true) {
            Some(word) => word.store(value, Ordering::Relaxed),
            None => {
                self.own[LOST].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn get(&self, key: u64) -> u64 {
        self.find(key, false)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Adds `n` to `key`'s count for `minute`: the word holds the minute
    /// (high 32 bits) and its count (low 32 bits, saturating), started
    /// again when a new minute comes (a ring of per-minute keys is the
    /// caller's).
    pub fn add_in_minute(&self, key: u64, minute: u64, n: u64) {
        let Some(word) = self.find(key, true) else {
            self.own[LOST].fetch_add(n, Ordering::Relaxed);
            return;
        };
        let n = n.min(0xffff_ffff);
        let stamp = (minute & 0xffff_ffff) << 32;
        let mut cur = word.load(Ordering::Relaxed);
        loop {
            let held = cur & !0xffff_ffff;
            // A flush that carries an older minute than the word holds (a
            // worker's counts from just before the minute turned) adds to
            // the newer minute rather than wiping it.
            let next = if held >= stamp {
                held | (cur & 0xffff_ffff).saturating_add(n).min(0xffff_ffff)
            } else {
                stamp | n
            };
            match word.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(now) => cur = now,
            }
        }
    }

    /// `key`'s count for `minute` (0 when its word holds another minute).
    pub fn get_in_minute(&self, key: u64, minute: u64) -> u64 {
        let stamp = (minute & 0xffff_ffff) << 32;
        self.find(key, false)
            .map(|w| w.load(Ordering::Relaxed))
            .filter(|cur| cur & !0xffff_ffff == stamp)
            .map_or(0, |cur| cur & 0xffff_ffff)
    }

    /// The words switch `key` may be in, in order, up to the first never used.
    fn switch_words(&self, key: u64) -> (u64, impl Iterator<Item = &'a AtomicU64>) {
        let tag = match key & !SWITCH_VALUE {
            0 => SWITCH_VALUE + 1,
            t => t,
        };
        let switches = self.switches;
        let start = start_of(tag, switches.len());
        let words = (0..SWITCH_PROBES.min(switches.len()))
            .map(move |i| &switches[(start + i) % switches.len()]);
        (tag, words)
    }

    /// Sets kill switch `key` to `value` (0, off, to 3): every worker sees
    /// it at its next [`CounterTable::switch`]. Resetting a switch never
    /// fails; throwing one fails, and changes nothing, when its words are
    /// all taken by switches that are thrown.
    pub fn set_switch(&self, key: u64, value: u64) -> Result<(), SwitchError> {
        if value > SWITCH_VALUE {
            return Err(SwitchError::Value(value));
        }
        // The thrown count goes up before the switch does, so that no
        // process ever sees a switch thrown while the count says none
        // (nor after a process dies between the two); what did not turn a
        // switch on is taken back after.
        if value != 0 {
            self.own[THROWN].fetch_add(1, Ordering::AcqRel);
        }
        let mut turned_on = 0u64;
        let result = self.store_switch(key, value, &mut turned_on);
        if value != 0 {
            match turned_on {
                0 => {
                    self.own[THROWN].fetch_sub(1, Ordering::AcqRel);
                }
                1 => {}
                n => {
                    self.own[THROWN].fetch_add(n - 1, Ordering::AcqRel);
                }
            }
        }
        result
    }

    fn store_switch(&self, key: u64, value: u64, turned_on: &mut u64) -> Result<(), SwitchError> {
        let (tag, _) = self.switch_words(key);
        // Sets one word from `cur`; false when another switch took it meanwhile.
        let set = |word: &AtomicU64, mut cur: u64, turned_on: &mut u64| loop {
            match word.compare_exchange(cur, tag | value, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    let was = cur & SWITCH_VALUE;
                    if was == 0 && value != 0 {
                        *turned_on += 1;
                    } else if was != 0 && value == 0 {
                        self.own[THROWN].fetch_sub(1, Ordering::AcqRel);
                    }
                    return true;
                }
                Err(now) if now & !SWITCH_VALUE == tag => cur = now,
                Err(_) => return false,
            }
        };
        'round: for _ in 0..ATTEMPTS {
            let mut found = false;
            let mut room = None;
            for word in self.switch_words(key).1 {
                let cur = word.load(Ordering::Acquire);
                if cur == 0 {
                    room = room.or(Some((word, cur)));
                    break;
                }
                if cur & !SWITCH_VALUE == tag {
                    // Two processes throwing at once may each have stored
                    // it: every copy is set alike.
                    if !set(word, cur, turned_on) {
                        continue 'round;
                    }
                    found = true;
                } else if cur & SWITCH_VALUE == 0 {
                    room = room.or(Some((word, cur)));
                }
            }
            if found || value == 0 {
                return Ok(());
            }
            let Some((word, cur)) = room else {
                return Err(SwitchError::Full);
            };
            if set(word, cur, turned_on) {
                return Ok(());
            }
        }
        Err(SwitchError::Contended)
    }

    /// The value of kill switch `key`: 0 when off.
    pub fn switch(&self, key: u64) -> u64 {
        let (tag, words) = self.switch_words(key);
        for word in words {
            match word.load(Ordering::Acquire) {
                0 => break,
                cur if cur & !SWITCH_VALUE == tag => return cur & SWITCH_VALUE,
                _ => {}
            }
        }
        0
    }

    /// Whether any kill switch is thrown anywhere: one load.
    pub fn any_switch(&self) -> bool {
        self.own[THROWN].load(Ordering::Acquire) != 0
    }

    /// Counts that found no slot: the table is too small for the configuration.
    pub fn lost(&self) -> u64 {
        self.own[LOST].load(Ordering::Relaxed)
    }

    /// How many counters the table holds.
    pub fn capacity(&self) -> usize {
        self.counters.len() / 2
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn per_minute_counts_start_again_each_minute() {
        let slots = table(2 * 64);
        let t = CounterTable::new(&slots);
        t.add_in_minute(7, 100, 1);
        t.add_in_minute(7, 100, 1);
        assert_eq!(t.get_in_minute(7, 100), 2);
        assert_eq!(t.get_in_minute(7, 101), 0);
        t.add_in_minute(7, 116, 1);
        assert_eq!(t.get_in_minute(7, 116), 1, "a new minute starts at one");
        assert_eq!(t.get_in_minute(7, 100), 0, "the old minute is gone");
        t.add_in_minute(7, 115, 3);
        assert_eq!(
            t.get_in_minute(7, 116),
            4,
            "a late flush of an older minute adds to the newer one, never wipes it"
        );
    }

    use super::*;

    fn table(n: usize) -> Vec<AtomicU64> {
        (0..n).map(|_| AtomicU64::new(0)).collect()
    }

    #[test]
    fn counts_per_key_and_window() {
        let slots = table(1024);
        let t = WindowTable::new(&slots);
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
        let t = WindowTable::new(&slots);
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
        // The table's own pair, one pair of switches, two of counters.
        let tiny_slots = table(2 * 4);
        let tiny = CounterTable::new(&tiny_slots);
        for k in 0..10u64 {
            tiny.add(k << 20, 1);
        }
        assert_eq!(tiny.lost(), 8);
    }

    #[test]
    fn a_full_table_still_counts() {
        let slots = table(4);
        let t = WindowTable::new(&slots);
        for i in 0..100u32 {
            assert!(t.incr(&i.to_le_bytes(), 60, 0) >= 1);
        }
    }

    fn words(s: &[AtomicU64]) -> Vec<u64> {
        s.iter().map(|w| w.load(Ordering::Relaxed)).collect()
    }

    #[test]
    fn a_full_switch_room_refuses_a_new_switch_and_keeps_the_others() {
        // 16 pairs after the table's own: one of them (two words) for switches.
        let slots = table(2 * (1 + 16));
        let t = CounterTable::new(&slots);
        assert_eq!(t.set_switch(1 << 8, 1), Ok(()));
        assert_eq!(t.set_switch(2 << 8, 2), Ok(()));
        assert_eq!(t.set_switch(3 << 8, 1), Err(SwitchError::Full));
        assert_eq!(t.switch(3 << 8), 0, "refused, so not thrown");
        assert!(t.any_switch());
        // The switches already in the table still set and reset.
        assert_eq!(t.set_switch(1 << 8, 0), Ok(()));
        assert_eq!(t.switch(1 << 8), 0);
        assert_eq!(t.set_switch(1 << 8, 2), Ok(()));
        assert_eq!(t.switch(1 << 8), 2);
        assert_eq!(t.switch(2 << 8), 2);
        assert_eq!(t.set_switch(2 << 8, 0), Ok(()));
        assert_eq!(t.set_switch(1 << 8, 0), Ok(()));
        assert!(!t.any_switch(), "none thrown: the one-load path again");
        // Resetting a switch never needs room; a new one takes a word that is off.
        assert_eq!(t.set_switch(9 << 8, 0), Ok(()));
        assert_eq!(t.set_switch(3 << 8, 1), Ok(()));
        assert_eq!(t.switch(3 << 8), 1);
        assert!(t.any_switch());
        assert_eq!(t.switch(1 << 8), 0);
        assert_eq!(t.set_switch(3 << 8, 4), Err(SwitchError::Value(4)));
        assert_eq!(t.switch(3 << 8), 1, "a refused value changes nothing");
        let message = SwitchError::Full.to_string();
        assert!(message.contains("not thrown"), "{message}");
    }

    #[test]
    fn counters_cannot_take_the_switches_room() {
        let slots = table(2 * 4);
        let t = CounterTable::new(&slots);
        for k in 0..1000u64 {
            t.add(k << 20, 1);
        }
        assert!(t.lost() >= 998, "counters found no room: {}", t.lost());
        assert_eq!(t.set_switch(0xdead_beef, 1), Ok(()));
        assert!(t.any_switch());
        assert_eq!(t.switch(0xdead_beef), 1);
        assert_eq!(t.set_switch(0xdead_beef, 0), Ok(()));
        assert!(!t.any_switch());
    }

    #[test]
    fn threads_killing_and_reviving_keep_the_killed_count() {
        let slots = table(2 * (1 + 64));
        let t = CounterTable::new(&slots);
        std::thread::scope(|s| {
            for thread in 0..4u64 {
                s.spawn(move || {
                    for i in 0..2000u64 {
                        let key = (i % 3) << 40;
                        let value = (i + thread) % 3;
                        t.set_switch(key, value).unwrap();
                    }
                });
            }
        });
        for k in 0..3u64 {
            t.set_switch(k << 40, 0).unwrap();
        }
        assert!(!t.any_switch(), "every switch is off, so is the count");
        t.set_switch(1 << 40, 1).unwrap();
        assert!(t.any_switch());
    }

    #[test]
    fn separately_initialised_tables_hash_apart() {
        let a_slots = table(1024);
        let b_slots = table(1024);
        let (a, b) = (WindowTable::new(&a_slots), WindowTable::new(&b_slots));
        for k in 0..4u32 {
            a.incr(&k.to_le_bytes(), 60, 0);
            b.incr(&k.to_le_bytes(), 60, 0);
        }
        let slots = 1024 - SLOT_RESERVED;
        assert_ne!(
            words(&a_slots[..slots]),
            words(&b_slots[..slots]),
            "random keys put the same keys in other places"
        );
        assert_ne!(words(&a_slots[slots..]), words(&b_slots[slots..]));
    }

    #[test]
    fn every_view_of_one_table_agrees() {
        let slots = table(1024);
        // The master's, before fork, then a worker's and a reload's.
        let master = WindowTable::new(&slots);
        let keys = words(&slots[1024 - SLOT_RESERVED..]);
        assert!(keys[K0] != 0 && keys[K1] != 0);
        let worker = WindowTable::new(&slots);
        let reload = WindowTable::new(&slots);
        assert_eq!(words(&slots[1024 - SLOT_RESERVED..]), keys, "drawn once");
        assert_eq!(master.incr(b"k", 60, 0), 1);
        assert_eq!(worker.incr(b"k", 60, 0), 2);
        assert_eq!(reload.get(b"k", 60, 0), 2);
        assert_eq!(master.get(b"k", 60, 0), 2);
        // Processes drawing at once: every one ends with the same keys.
        let fresh = table(64);
        std::thread::scope(|s| {
            let views: Vec<_> = (0..4)
                .map(|_| s.spawn(|| WindowTable::new(&fresh).keys))
                .collect();
            let keys: Vec<_> = views.into_iter().map(|v| v.join().unwrap()).collect();
            assert!(keys.windows(2).all(|w| w[0] == w[1]), "{keys:?}");
        });
    }

    #[test]
    fn an_eviction_is_counted_and_keeps_the_count() {
        let slots = table(SLOT_RESERVED + 1);
        let t = WindowTable::new(&slots);
        for _ in 0..5 {
            t.incr(b"a", 60, 0);
        }
        assert_eq!(t.evictions(), 0);
        assert_eq!(t.incr(b"b", 60, 0), 6, "starts from the count it evicts");
        assert_eq!(t.evictions(), 1);
        assert_eq!(
            t.incr(b"c", 60, 60),
            1,
            "a slot whose window is over is free"
        );
        assert_eq!(t.evictions(), 1);
    }

    #[test]
    fn a_flood_of_fresh_keys_does_not_reset_a_heavy_key() {
        let slots = table(64);
        let t = WindowTable::new(&slots);
        for _ in 0..500 {
            t.incr(b"heavy", 60, 0);
        }
        for i in 0..5000u32 {
            t.incr(&i.to_le_bytes(), 60, 0);
        }
        assert!(t.evictions() > 4000);
        assert!(t.incr(b"heavy", 60, 0) > 500);
    }

    #[test]
    fn a_flood_in_short_windows_does_not_reset_a_long_window() {
        let slots = table(SLOT_RESERVED + 8);
        let t = WindowTable::new(&slots);
        for _ in 0..50 {
            t.incr(b"heavy", 3600, 10);
        }
        // Minutes of fresh keys, each counted in windows of 60 s.
        for now in (10..3000u64).step_by(7) {
            t.incr(&now.to_le_bytes(), 60, now);
        }
        assert!(t.incr(b"heavy", 3600, 3000) > 50);
    }

    #[test]
    fn never_counts_lower_than_the_truth() {
        let slots = table(SLOT_RESERVED + 32);
        let t = WindowTable::new(&slots);
        let mut truth = std::collections::HashMap::new();
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // A few heavy keys and many light ones.
            let key = if x.is_multiple_of(4) { x % 8 } else { x % 2000 };
            let n = truth.entry(key).or_insert(0u64);
            *n += 1;
            let counted = t.incr(&key.to_le_bytes(), 60, 0);
            assert!(counted >= *n, "key {key}: {counted} < {n}");
        }
        assert!(t.evictions() > 0);
    }

    #[test]
    fn threads_flooding_a_small_table_keep_a_heavy_count() {
        let slots = table(SLOT_RESERVED + 16);
        let t = WindowTable::new(&slots);
        std::thread::scope(|s| {
            for thread in 0..4u32 {
                s.spawn(move || {
                    for i in 0..2000u32 {
                        t.incr(b"heavy", 60, 0);
                        t.incr(&(thread << 16 | i).to_le_bytes(), 60, 0);
                    }
                });
            }
        });
        // Two workers storing one key at once may split a count between two
        // slots: a rare count or two, never the whole.
        let heavy = t.get(b"heavy", 60, 0);
        assert!(heavy >= 7_990, "{heavy}");
    }
}
