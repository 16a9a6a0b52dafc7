//! A request with a body, then plain GETs, on graft-edge's kept-alive
//! connection to Flamingo's origin (nginx with graft's echo): the origin
//! reads every body whole (its echo says how many bytes), and nothing of
//! one request is left on the connection for the next to be read with:
//! each GET after the POST is answered 200, and the origin logs no 400.
//! Bodies of every way graft-edge forwards them: replayed by Pingora
//! (under 64 KiB), read whole and sent from memory, read in part and put
//! before the rest; with a length and chunked.
mod support;

use graft_tests::edge::start_origin;
use serde_json::json;
use support::Edge;

fn graft() -> String {
    let waf = json!({ "module": "waf", "mode": "rust", "config": {
        "signatures": ["sql_injection"], "inspect_body": true } });
    json!({ "zones": {
        // Its body read before the steps run, up to 128 KiB.
        "read.test": { "body": { "max_bytes": 131072, "over": "inspect" },
                       "modules": [ waf ] },
        // Its body only streamed through.
        "plain.test": { "modules": [] }
    } })
    .to_string()
}

fn post(host: &str, body: &[u8], chunked: bool) -> Vec<u8> {
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_string()
    } else {
        format!("Content-Length: {}", body.len())
    };
    let mut req = format!(
        "POST /about HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/plain\r\n{framing}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    if chunked {
        for c in body.chunks(10_000) {
            req.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            req.extend_from_slice(c);
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"0\r\n\r\n");
    } else {
        req.extend_from_slice(body);
    }
    req
}

#[test]
fn a_body_is_read_whole_and_leaves_nothing_for_the_next_request() {
    let origin = start_origin();
    let at = format!("127.0.0.1:{}", origin.port);
    let edge = Edge::start(&graft(), json!({ "default": at }), &at);
    let mut round = 0;
    for host in ["read.test", "plain.test"] {
        // Replayed, read whole (over Pingora's 64 KiB), read in part.
        for size in [8, 100_000, 300_000] {
            for chunked in [false, true] {
                round += 1;
                let body: Vec<u8> = (0..size).map(|i| b"item-423"[i % 8]).collect();
                let r = edge.raw(&post(host, &body, chunked));
                let what = format!("{host}, {size} bytes, chunked: {chunked}");
                assert_eq!(r.status, 200, "{what}: {}", r.text());
                assert!(
                    r.text().contains(&format!("body: {size} bytes\n")),
                    "{what}: the origin did not read the body whole:\n{}",
                    r.text()
                );
                // Next on the same upstream connection (graft-edge's pool).
                let r = edge.get(host, &format!("/next-{round}"));
                assert_eq!(r.status, 200, "{what}: the GET after it: {}", r.text());
                assert!(r.text().starts_with(&format!("origin: /next-{round}\n")));
            }
        }
    }
    let log = std::fs::read_to_string(origin.prefix.join("access.log")).unwrap();
    assert!(
        !log.lines().any(|l| l.split(' ').nth(2) == Some("400")),
        "the origin read something that was no request:\n{log}"
    );
}
