//! The form and query decoder (`graft_contract::args`, which reads
//! `application/x-www-form-urlencoded` bodies and query strings alike):
//! no panic; every name non-empty; decoding never lengthens; a component
//! with neither `%` nor `+` decodes to itself.
#![no_main]

use graft_contract::args::{decode_component, for_each_arg};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut count = 0;
    let mut total = 0;
    for_each_arg(data, |name, value| {
        assert!(!name.is_empty());
        count += 1;
        total += name.len() + value.map_or(0, <[u8]>::len);
    });
    assert!(count <= data.split(|&b| b == b'&').count());
    assert!(total <= data.len());
    let mut out = Vec::new();
    decode_component(data, &mut out);
    assert!(out.len() <= data.len());
    if !data.iter().any(|&b| b == b'%' || b == b'+') {
        assert_eq!(out, data);
    }
});
