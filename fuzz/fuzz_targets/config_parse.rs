//! `Config::parse`: any bytes as graft's configuration file. It refuses or
//! accepts, never panics; an accepted configuration builds every zone's
//! plan for the Lua side and finds its zones by name and host.
#![no_main]

use graft_engine::Config;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(config) = Config::parse(Path::new("/fuzz/graft.json"), data) else {
        return;
    };
    for zone in &config.zones {
        let plan: serde_json::Value =
            serde_json::from_str(&zone.plan_json()).expect("a zone's plan is JSON");
        assert!(plan.is_object());
        assert!(
            config.zone_named(&zone.name).is_some(),
            "zone {} not found by its name",
            zone.name
        );
        let _ = config.zone_index(zone.name.as_bytes());
    }
    let _ = config.module_names();
});
