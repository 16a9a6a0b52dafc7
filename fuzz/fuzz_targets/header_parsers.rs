//! The header readers graft decides on: the admin API's guard
//! (`admin::judge`: Host, Content-Type, Authorization, and the token file
//! through `admin::parse_token`), a body's decoding by its Content-Type
//! (`BodyKind::of`) and whether graft can read it as a backend may
//! (`body::undecidable`, with the header line as a second header, a
//! Content-Encoding or another Content-Type), and the header names and
//! values graft writes
//! (`HeaderName`, `HeaderValue`). Lines of the input: token file, Host,
//! Content-Type, Authorization, then a header line `name: value`.
#![no_main]

use graft_contract::body::{undecidable, BodyKind};
use graft_contract::{HeaderName, HeaderValue};
use graft_engine::admin::{judge, parse_token, Call};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let mut next = || lines.next().filter(|l| !l.is_empty());
    let token = next().and_then(|t| parse_token(t).ok());
    let (host, content_type, authorization) = (next(), next(), next());
    if let Some(t) = &token {
        assert!(t.len() >= graft_engine::admin::MIN_TOKEN && t.iter().all(u8::is_ascii_graphic));
    }
    for browser_headers in [false, true] {
        let call = Call {
            host,
            browser_headers,
            content_type,
            authorization,
        };
        if judge(token.as_deref(), &call).is_ok() {
            assert!(!browser_headers);
            let (t, a) = (token.as_deref().unwrap(), authorization.unwrap());
            assert!(
                a.windows(t.len()).any(|w| w == t),
                "passed without the token"
            );
            assert!(
                BodyKind::of(content_type) != BodyKind::Form,
                "a form passed"
            );
        }
    }
    let _ = BodyKind::of(content_type);
    if let Some(line) = next() {
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(c) => (&line[..c], line[c + 1..].trim_ascii()),
            None => (line, &b""[..]),
        };
        if let Ok(name) = std::str::from_utf8(name) {
            if let Ok(n) = HeaderName::new(name) {
                assert!(!n
                    .as_str()
                    .bytes()
                    .any(|b| b <= b' ' || b == b':' || b >= 0x7f));
            }
        }
        let mut req = graft_contract::OwnedRequest::default();
        if let Some(ct) = content_type {
            req.headers.push((b"Content-Type".to_vec(), ct.to_vec()));
        }
        req.headers.push((name.to_vec(), value.to_vec()));
        let _ = undecidable(&req);
        if let Ok(v) = HeaderValue::new(value) {
            assert!(!v.as_bytes().iter().any(|&b| matches!(b, 0 | b'\r' | b'\n')));
        }
    }
});
