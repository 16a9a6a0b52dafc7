//! Request bodies through graft-edge: a zone whose WAF reads bodies
//! inspects them (up to its max_bytes) before a byte reaches the origin or
//! FL1, and the origin or FL1 gets the whole body however much was read:
//! less than Pingora replays itself (64 KiB), more with the body going on,
//! or the whole body read before the steps ran.
mod support;

use serde_json::json;
use support::{Edge, Recorder};

const SQLI: &str = "q=1%27+UNION+SELECT+password+FROM+users";

fn graft() -> String {
    let waf = json!({ "module": "waf", "mode": "rust", "config": {
        "signatures": ["sql_injection"], "inspect_body": true } });
    json!({ "zones": {
        "body.test": { "body": { "max_bytes": 131072, "over": "inspect" }, "modules": [ waf,
            { "module": "probe", "mode": "rust", "config": { "continue": true, "decline_on": "/decline" } } ] },
        "small.test": { "body": { "max_bytes": 1024, "over": { "respond": 413 } }, "modules": [ waf ] }
    } })
    .to_string()
}

/// A form body of `n` bytes that no signature matches.
fn form(n: usize) -> Vec<u8> {
    let mut body = b"text=".to_vec();
    let letters = b"abcdefghijklmnopqrstuvwxyz";
    body.extend((0..n - 5).map(|i| letters[(i * 7 + i / 26) % 26]));
    body
}

fn post(host: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

fn chunked(host: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for c in body.chunks(10_000) {
        req.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        req.extend_from_slice(c);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    req
}

#[test]
fn the_origin_and_fl1_get_the_whole_body_however_much_was_read() {
    let fl1 = Recorder::start("fl1");
    let origin = Recorder::start("origin");
    let edge = Edge::start(&graft(), json!({ "default": origin.addr() }), &fl1.addr());
    // Within Pingora's replay (1 KiB), read whole beyond it (100 KiB, under
    // max_bytes), and over max_bytes with the body going on (300 KiB).
    for size in [1_000, 100_000, 300_000] {
        let body = form(size);
        for (how, request) in [
            ("length", post("body.test", "/up", &body)),
            ("chunked", chunked("body.test", "/up", &body)),
        ] {
            let r = edge.raw(&request);
            assert_eq!(
                r.text(),
                format!("origin /up {size}\n"),
                "{size} {how}\n{}",
                edge.log()
            );
            assert!(
                origin.last().body == body,
                "{size} bytes ({how}): the origin got other bytes"
            );
        }
        // Passed to FL1 from step 1, after step 0 read the body.
        let r = edge.raw(&post("body.test", "/decline", &body));
        assert_eq!(
            r.text(),
            format!("fl1 /decline {size}\n"),
            "{size}\n{}",
            edge.log()
        );
        let seen = fl1.last();
        assert!(seen.body == body, "{size} bytes: FL1 got other bytes");
        assert_eq!(seen.handoff(), ("body.test".into(), 1, true));
    }
    assert_eq!(
        edge.metric(r#"graft_request_bodies_over_limit_total{zone="body.test"}"#),
        3,
        "300 KiB, twice to the origin and once to FL1"
    );
}

#[test]
fn a_body_is_inspected_before_anything_is_sent() {
    let fl1 = Recorder::start("fl1");
    let origin = Recorder::start("origin");
    let edge = Edge::start(&graft(), json!({ "default": origin.addr() }), &fl1.addr());
    let r = edge.raw(&post("body.test", "/up", SQLI.as_bytes()));
    assert_eq!(r.status, 403, "{}", r.text());
    // Past Pingora's replay, still inspected.
    let mut late = form(90_000);
    late.extend_from_slice(format!("&{SQLI}").as_bytes());
    let r = edge.raw(&post("body.test", "/up", &late));
    assert_eq!(r.status, 403, "{}", r.text());
    // Declared over the zone's max_bytes: answered before it is read.
    let r = edge.raw(&post("small.test", "/up", &form(2_000)));
    assert_eq!(r.status, 413, "{}", r.text());
    // Over it, chunked: answered once read past it.
    let r = edge.raw(&chunked("small.test", "/up", &form(20_000)));
    assert_eq!(r.status, 413, "{}", r.text());
    let r = edge.raw(&post("small.test", "/up", &form(1_000)));
    assert_eq!(r.text(), "origin /up 1000\n");
    assert_eq!(
        (origin.count(), fl1.count()),
        (1, 0),
        "only the clean body went through"
    );
    assert_eq!(
        edge.metric(r#"graft_requests_total{zone="body.test",module="waf",path="rust"}"#),
        2
    );
}
