//! The fleet agent's report to nginx (`graft_engine::fleet_report::parse`, the
//! body of an admin call): no panic; a report taken has known, distinct
//! names and a rollout state of 0 to 3.
#![no_main]

use graft_engine::fleet_report::{parse, FIELDS, ROLLOUT_STATES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(fields) = parse(text) else {
        return;
    };
    assert!(!fields.is_empty() && fields.len() <= FIELDS.len());
    for (i, (name, value)) in fields.iter().enumerate() {
        assert!(FIELDS.iter().any(|(n, _)| n == name));
        assert!(!fields[..i].iter().any(|(n, _)| n == name), "{name} twice");
        if *name == "rollout_state" {
            assert!((*value as usize) < ROLLOUT_STATES.len());
        }
    }
});
