//! A module's answer goes on the wire alike whoever sends it: the Lua side
//! (mode `lua`), the Rust side through the Lua bridge (mode `rust`), and
//! the native pipeline (`graft_native on`, no Lua in the request's path).
//! Every status class, with and without a body, with and without the
//! decision's own `Content-Length`: the same status line, framing and
//! body, never `Transfer-Encoding` beside `Content-Length`, never an
//! empty reply. A decision that breaks HTTP's framing is refused whole by
//! the contract, on both sides alike.
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use graft_tests::Nginx;
use serde_json::json;

/// The native pipeline alone, in front of the same origin as `location /`.
const NATIVE: &str = r#"
        location /wire/ {
            graft_native on;
            content_by_lua_block {
                require("graft.echo")()
            }
        }
"#;

fn step(mode: &str, answer: &serde_json::Value) -> serde_json::Value {
    json!([{ "module": "probe", "mode": mode, "on_failure": { "respond": 502 },
             "config": { "answer": answer } }])
}

/// The response to `GET path` exactly as sent, but its Date line.
fn wire(nginx: &Nginx, host: &str, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", nginx.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf)
        .split("\r\n")
        .filter(|l| !l.starts_with("Date: "))
        .collect::<Vec<_>>()
        .join("\r\n")
}

#[test]
fn every_answer_goes_on_the_wire_alike_from_lua_the_bridge_and_native() {
    let statuses = [200u16, 201, 204, 206, 301, 304, 403, 404, 429, 503];
    let mut cases = vec![];
    for status in statuses {
        for body in ["", "answered\n"] {
            for length in [false, true] {
                let mut headers = vec![json!(["X-Answer", "yes"])];
                if length {
                    headers.push(json!(["Content-Length", body.len().to_string()]));
                }
                if (300..400).contains(&status) {
                    headers.push(json!(["Location", "/elsewhere"]));
                }
                cases.push((
                    status,
                    body,
                    length,
                    json!({ "status": status, "headers": headers, "body": body }),
                ));
            }
        }
    }
    // One zone per case and side.
    let mut zones = serde_json::Map::new();
    for (i, (_, _, _, answer)) in cases.iter().enumerate() {
        zones.insert(
            format!("l{i}.test"),
            json!({ "modules": step("lua", answer) }),
        );
        zones.insert(
            format!("r{i}.test"),
            json!({ "modules": step("rust", answer) }),
        );
    }
    let nginx = Nginx::start_extra(&json!({ "zones": zones }).to_string(), false, NATIVE);
    for (i, (status, body, length, _)) in cases.iter().enumerate() {
        let what =
            format!("status {status}, body {body:?}, Content-Length in the decision: {length}");
        let lua = wire(&nginx, &format!("l{i}.test"), "/w/x");
        let bridge = wire(&nginx, &format!("r{i}.test"), "/w/x");
        let native = wire(&nginx, &format!("r{i}.test"), "/wire/x");
        assert_eq!(lua, bridge, "{what}: Lua and the bridge differ");
        assert_eq!(lua, native, "{what}: Lua and the native pipeline differ");

        let (head, sent_body) = lua.split_once("\r\n\r\n").expect("a whole response");
        let head = head.to_ascii_lowercase();
        assert!(
            !(head.contains("\r\ncontent-length:") && head.contains("\r\ntransfer-encoding:")),
            "{what}: both framings\n{lua}"
        );
        let refused = matches!(status, 204 | 304) && !body.is_empty();
        let expected = if refused { 502 } else { *status };
        assert!(
            head.starts_with(&format!("http/1.1 {expected} ")),
            "{what}: {lua}"
        );
        if refused {
            continue;
        }
        assert!(head.contains("\r\nx-answer: yes"), "{what}: {lua}");
        assert_eq!(
            head.matches("\r\ncontent-length:").count(),
            usize::from(*status != 204),
            "{what}: one Content-Length, and none in a 204 (RFC 9110, 8.6)\n{lua}"
        );
        if !body.is_empty() || *status < 300 {
            assert!(!head.contains("transfer-encoding"), "{what}: {lua}");
            let sent = if matches!(status, 204 | 304) {
                ""
            } else {
                body
            };
            assert_eq!(sent_body, sent, "{what}");
        }
    }
    // A refused decision is the step's failure, counted on both sides.
    let refused = cases
        .iter()
        .position(|(s, b, _, _)| *s == 204 && !b.is_empty())
        .unwrap();
    let counters = nginx.counters();
    assert_eq!(
        counters["zones"][format!("l{refused}.test")][0]["failed"],
        1
    );
    assert_eq!(counters["zones"][format!("r{refused}.test")][0]["error"], 2);
    let log = nginx.error_log();
    assert!(
        log.contains("answers 204 with a body of 9 bytes, which that status cannot carry"),
        "{log}"
    );
    nginx.assert_clean_log(&[
        "answers 204 with a body",
        "answers 304 with a body",
        "this location runs no Lua bridge",
    ]);
}

#[test]
fn a_framing_header_or_a_wrong_length_is_refused_whole_on_both_sides() {
    let wrong =
        json!({ "status": 200, "headers": [["X-A", "1"], ["Content-Length", "99"]], "body": "ok" });
    let chunked =
        json!({ "status": 200, "headers": [["Transfer-Encoding", "chunked"]], "body": "ok" });
    let mut zones = serde_json::Map::new();
    for (name, answer) in [("wrong", &wrong), ("chunked", &chunked)] {
        for mode in ["lua", "rust"] {
            zones.insert(
                format!("{name}-{mode}.test"),
                json!({ "modules": step(mode, answer) }),
            );
        }
    }
    let nginx = Nginx::start_extra(&json!({ "zones": zones }).to_string(), false, NATIVE);
    for name in ["wrong", "chunked"] {
        for (mode, path) in [("lua", "/w/x"), ("rust", "/w/x"), ("rust", "/wire/x")] {
            let r = nginx.get(&format!("{name}-{mode}.test"), path);
            assert_eq!(r.status, 502, "{name} {mode} {path}: {}", r.text());
            assert_eq!(
                r.header("X-A"),
                None,
                "{name} {mode} {path}: applied in part"
            );
        }
    }
    nginx.assert_clean_log(&["only the server frames", "this location runs no Lua bridge"]);
}
