//! The sizes graft-bench gives nginx, from the configuration it runs.
//!
//! How many shared counters a configuration needs is the engine's to say
//! (`Config::fits`, which nginx itself calls at load): the size given to
//! `graft_shared_memory` is the smallest, in 64 KiB steps, that `fits`
//! accepts, so the bench can never ask for less than a configuration needs
//! as it grows.
use std::path::Path;
use std::sync::atomic::AtomicU64;

use graft_engine::shared::CounterTable;
use graft_engine::Config;

/// The unit of the sizes tried (nginx's smallest `graft_shared_memory`).
const STEP_KIB: usize = 64;
/// nginx's largest `graft_shared_memory` (16g).
const MAX_KIB: usize = 16 << 20;

/// Words of the counter table that `graft_shared_memory <bytes>` maps,
/// as nginx's module sizes it.
fn counter_words(bytes: usize) -> usize {
    CounterTable::words_for(bytes)
}

/// The `graft_shared_memory` size, in KiB, that the configuration in
/// `path` needs: the smallest multiple of 64 KiB whose counter table
/// `Config::fits` accepts. An error when the file does not load or no
/// size up to 16g fits.
pub fn counter_kib(path: &Path) -> Result<usize, String> {
    let config = Config::load(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let fits = |slots: &[AtomicU64], kib: usize| {
        config
            .fits(&CounterTable::new(&slots[..counter_words(kib * 1024)]))
            .is_ok()
    };
    // Doubling to a size that fits, then the smallest between: one table
    // of the largest size tried, its prefixes for the others (`fits`
    // reads only a table's length).
    let mut high = STEP_KIB;
    let mut slots: Vec<AtomicU64> = Vec::new();
    loop {
        let words = counter_words(high * 1024);
        slots.resize_with(words, || AtomicU64::new(0));
        if fits(&slots, high) {
            break;
        }
        if high >= MAX_KIB {
            return Err(format!(
                "{}: needs more shared counters than graft_shared_memory 16g holds",
                path.display()
            ));
        }
        high = (high * 2).min(MAX_KIB);
    }
    let mut low = STEP_KIB; // the last size that may not fit
    if fits(&slots, low) {
        return Ok(low);
    }
    while high - low > STEP_KIB {
        let mid = (low + high) / 2 / STEP_KIB * STEP_KIB;
        if fits(&slots, mid) {
            high = mid;
        } else {
            low = mid;
        }
    }
    Ok(high)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of `zones` zones of two steps each, and the size found for it.
    fn sized(zones: usize) -> (Config, usize) {
        let zones: serde_json::Map<String, serde_json::Value> = (0..zones)
            .map(|i| {
                (
                    format!("z{i}.example"),
                    serde_json::json!({ "modules": [
                        { "module": "url_normalize", "mode": "rust" },
                        { "module": "headers", "mode": "rust", "config": { "rules": [] } },
                    ] }),
                )
            })
            .collect();
        let path = std::env::temp_dir().join(format!(
            "graft-sizing-{}-{}.json",
            std::process::id(),
            zones.len()
        ));
        std::fs::write(&path, serde_json::json!({ "zones": zones }).to_string()).unwrap();
        let kib = counter_kib(&path).unwrap();
        let config = Config::load(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        (config, kib)
    }

    fn fits(config: &Config, kib: usize) -> bool {
        let slots: Vec<AtomicU64> = (0..counter_words(kib * 1024))
            .map(|_| AtomicU64::new(0))
            .collect();
        config.fits(&CounterTable::new(&slots)).is_ok()
    }

    #[test]
    fn the_size_is_the_smallest_that_fits() {
        assert_eq!(sized(1).1, STEP_KIB);
        for zones in [5_000, 40_000] {
            let (config, kib) = sized(zones);
            assert_eq!(kib % STEP_KIB, 0);
            assert!(fits(&config, kib), "{zones} zones: {kib}k does not fit");
            assert!(
                !fits(&config, kib - STEP_KIB),
                "{zones} zones: {kib}k is not the smallest"
            );
        }
    }
}
