//! The bounded decoder of compressed bodies (`graft_contract::body::decode`)
//! on any bytes. The first byte picks the coding (its low two bits: gzip,
//! deflate, br, or a `Content-Encoding` list read from the rest's first
//! line) and the cap (the next three bits); the rest is the body. Whatever
//! the body: no panic; nothing decoded past the cap; a body decoded
//! exactly to the cap decodes with that cap and is past a cap one byte
//! smaller; and what graft decodes is what flate2's and brotli's own
//! readers read from the same bytes (graft's gzip header, member and
//! trailer handling checked against flate2's).
#![no_main]

use std::io::Read;

use graft_contract::body::decode::{coding, decode, decode_as, Coding, Failure, Limits};
use libfuzzer_sys::fuzz_target;

const CAPS: [usize; 8] = [0, 1, 7, 64, 1024, 16 * 1024, 64 * 1024, 1 << 20];

/// What the crates' own readers make of the body, read to at most `cap`
/// and one: `None` when they refuse it.
fn reference(c: Coding, body: &[u8], cap: usize) -> Vec<Vec<u8>> {
    let limit = cap as u64 + 1;
    let read = |r: &mut dyn Read| {
        let mut out = Vec::new();
        r.take(limit).read_to_end(&mut out).ok().map(|_| out)
    };
    match c {
        Coding::Gzip => read(&mut flate2::read::MultiGzDecoder::new(body))
            .into_iter()
            .collect(),
        Coding::Deflate => [
            read(&mut flate2::read::ZlibDecoder::new(body)),
            read(&mut flate2::read::DeflateDecoder::new(body)),
        ]
        .into_iter()
        .flatten()
        .collect(),
        Coding::Br => read(&mut brotli_decompressor::Decompressor::new(body, 4096))
            .into_iter()
            .collect(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let cap = CAPS[usize::from(pick >> 2) & 7];
    let c = match pick & 3 {
        0 => Coding::Gzip,
        1 => Coding::Deflate,
        2 => Coding::Br,
        _ => {
            // A Content-Encoding list, then the body.
            let end = body.iter().position(|&b| b == b'\n').unwrap_or(body.len());
            let (list, rest) = (&body[..end], body.get(end + 1..).unwrap_or_default());
            let limits = Limits {
                max_bytes: cap.max(1),
                max_ratio: 1000,
            };
            match decode(list, rest, limits) {
                Ok(Some(out)) => assert!(out.len() <= limits.cap(rest.len())),
                Ok(None) => assert_eq!(coding(list), Ok(None)),
                Err(why) => assert!(!why.is_empty()),
            }
            return;
        }
    };
    let out = match decode_as(c, body, cap) {
        Ok(out) => out,
        Err(_) => return,
    };
    assert!(
        out.len() <= cap,
        "{c:?}: {} bytes past a cap of {cap}",
        out.len()
    );
    assert_eq!(decode_as(c, body, out.len()).as_ref(), Ok(&out));
    if !out.is_empty() {
        assert_eq!(decode_as(c, body, out.len() - 1), Err(Failure::Past));
    }
    let theirs = reference(c, body, cap);
    assert!(
        theirs.contains(&out),
        "{c:?}: graft decoded {} bytes the crates' readers do not ({:?})",
        out.len(),
        theirs.iter().map(Vec::len).collect::<Vec<_>>()
    );
});
