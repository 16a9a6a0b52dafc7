//! The JSON string scanner (`graft_contract::body`) and the choice of a
//! body's decoding by its Content-Type, on any bytes: no panic, at most one
//! string per `"`, and a document cut anywhere gives the strings of the
//! whole document up to the cut (the last one perhaps cut).
#![no_main]

use graft_contract::body::{for_each_json_string, BodyKind};
use libfuzzer_sys::fuzz_target;

fn strings(body: &[u8]) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    for_each_json_string(body, |s| v.push(s.to_vec()));
    v
}

fuzz_target!(|data: &[u8]| {
    let _ = BodyKind::of(Some(data));
    let whole = strings(data);
    let quotes = data.iter().filter(|&&b| b == b'"').count();
    assert!(
        whole.len() <= quotes,
        "{} strings from {quotes} quotes",
        whole.len()
    );
    // The zone's body limit cuts a body anywhere: what is read of the cut
    // document is what the whole one gives, but for the last string.
    let cut = data.len() / 2;
    let part = strings(&data[..cut]);
    if let Some((last, before)) = part.split_last() {
        assert!(
            whole.len() >= part.len(),
            "cut at {cut}: more strings than whole"
        );
        assert_eq!(before, &whole[..before.len()], "cut at {cut}");
        // The string cut may end in an escape cut short: `\u00` gives
        // `u00`, a high surrogate whose low half is cut U+FFFD and the
        // rest, 7 bytes at most that the whole document decodes otherwise.
        let same = &whole[before.len()];
        let common = last.iter().zip(same).take_while(|(a, b)| a == b).count();
        assert!(
            last.len() - common <= 7,
            "cut at {cut}: {last:?} vs {same:?}"
        );
    }
});
