//! The condition language: a first line of JSON compiled with
//! `Condition::parse` (and translated for the Lua side), then evaluated
//! against the request that the rest describes (`graft_fuzz::request`):
//! every field, query and form arguments, JSON bodies, headers, prefixes.
#![no_main]

use graft_conditions::{lua_condition, Condition, EqualsIndex, Subject};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (first, rest) = graft_fuzz::split_first_line(data);
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(first) else {
        return;
    };
    let _ = lua_condition(&value);
    let Ok(cond) = Condition::parse(&value) else {
        return;
    };
    let req = graft_fuzz::request(rest);
    let subject = Subject::new(&req);
    let hit = cond.eval(&subject);
    let _ = cond.reads_body();
    // An equality test answered by the index agrees with the test itself.
    if let Some((field, v)) = cond.equals_test() {
        let mut index = EqualsIndex::new(field);
        index.insert(v, 7);
        let by_index = index.matching(&Subject::new(&req)) == [7];
        assert_eq!(by_index, hit, "EqualsIndex and eval disagree");
    }
});
