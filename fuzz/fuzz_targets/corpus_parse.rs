//! The request corpus reader (`graft_engine::corpus::parse`, what
//! `graft-replay` and `make diff` read) on any text: no panic, and what the
//! format promises ("a line can carry any byte"): every request it reads,
//! written back with `to_line`, reads as the same request.
#![no_main]

use graft_engine::corpus::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(requests) = parse(text) else {
        return;
    };
    for req in requests {
        let line = req.to_line();
        let again = parse(&line).unwrap_or_else(|e| panic!("{line:?} written, refused: {e}"));
        assert_eq!(again, [req.clone()], "{line:?}");
        let _ = req.to_wire();
        let _ = req.describe();
    }
});
