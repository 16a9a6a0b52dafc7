//! url_normalize: any request target, with and without merged slashes.
//! A path it gives starts with `/`, has no `.` or `..` segment and no NUL,
//! CR or LF, and (with merged slashes) no empty segment but a final one.
#![no_main]

use graft_url_normalize::{decode_once, UrlNormalize};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_once(data);
    for config in [r#"{}"#, r#"{"merge_slashes":false}"#] {
        let n: UrlNormalize = serde_json::from_str(config).unwrap();
        let Ok(Some(path)) = n.normalize(data) else {
            continue;
        };
        assert_eq!(path.first(), Some(&b'/'), "{path:?}");
        assert!(
            !path.iter().any(|b| matches!(b, 0 | b'\r' | b'\n')),
            "{path:?}"
        );
        let segments: Vec<&[u8]> = path[1..].split(|&b| b == b'/').collect();
        let last = segments.len() - 1;
        for (i, s) in segments.iter().enumerate() {
            assert!(*s != b"." && *s != b"..", "dot segment left in {path:?}");
            if config == "{}" && i != last {
                assert!(!s.is_empty(), "repeated slash left in {path:?}");
            }
        }
    }
});
