//! The regex portability check (`check_portable`, `pcre_pattern`,
//! `compile_regex`) over any pattern: no panic, and what it promises of
//! itself: a pattern that compiles passed the check; the Lua side's copy of
//! a portable pattern differs only where a `$` became `\z`, and is itself
//! portable.
#![no_main]

use graft_conditions::{check_portable, compile_regex, pcre_pattern};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(pattern) = std::str::from_utf8(data) else {
        return;
    };
    let portable = check_portable(pattern);
    let pcre = pcre_pattern(pattern);
    match portable {
        Ok(()) => {
            let dollars = pattern.matches('$').count();
            let zs = pcre.matches("\\z").count() - pattern.matches("\\z").count();
            assert!(zs <= dollars, "{pattern:?} -> {pcre:?}");
            assert_eq!(pcre.len(), pattern.len() + zs, "{pattern:?} -> {pcre:?}");
            assert_eq!(pcre.replace("\\z", "$"), pattern.replace("\\z", "$"));
        }
        Err(_) => assert_eq!(pcre, pattern),
    }
    if compile_regex(pattern).is_ok() {
        assert!(
            check_portable(pattern).is_ok(),
            "{pattern:?} compiled but is not portable"
        );
    }
});
