//! The portability promise itself: a pattern that `check_portable` passes
//! is read alike by the Rust engine (as graft compiles it, `compile_regex`)
//! and by PCRE2 as the Lua side runs it (`ngx.re.find(v, p, "jo")`: no UTF
//! mode, JIT, the pattern translated by `pcre_pattern`). The first line is
//! the pattern, the rest the subject; PCRE must compile every portable
//! pattern, and both engines must agree on whether the subject matches.
#![no_main]

use graft_conditions::{compile_regex, pcre_pattern};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (first, subject) = graft_fuzz::split_first_line(data);
    let Ok(pattern) = std::str::from_utf8(first) else {
        return;
    };
    // compile_regex runs check_portable first: Ok means portable too.
    let Ok(rust) = compile_regex(pattern) else {
        return;
    };
    let lua_side = pcre_pattern(pattern);
    let pcre = match pcre2::bytes::RegexBuilder::new()
        .jit_if_available(true)
        .build(&lua_side)
    {
        Ok(re) => re,
        // PCRE's own limits on a pattern's size are not a difference of meaning.
        Err(e) if e.to_string().contains("too large") => return,
        Err(e) => panic!("portable {pattern:?} refused by PCRE as {lua_side:?}: {e}"),
    };
    // A match that hits PCRE's backtracking or depth limits is an error on
    // the Lua side (ngx.re returns nil, err), not a verdict.
    let Ok(by_pcre) = pcre.is_match(subject) else {
        return;
    };
    let by_rust = rust.is_match(subject);
    assert_eq!(
        by_rust, by_pcre,
        "{pattern:?} (PCRE: {lua_side:?}) on {subject:?}: Rust {by_rust}, PCRE {by_pcre}"
    );
});
