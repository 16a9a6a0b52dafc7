//! Requests nginx 1.22.1 refuses before any phase (while it reads the
//! request line and head): graft-edge answers them as nginx does, the
//! status and nginx's own page (no step runs, so no html_rewrite either),
//! before any step reads them, and counts them
//! (`graft_edge_refused_total{status}`).
mod support;

use graft_tests::flamingo::observe;
use graft_tests::{replay, root, Nginx};
use serde_json::Value;
use support::{Edge, Recorder};

/// Requests nginx refuses before its first phase, and its status. (A
/// space or a control byte in the target, which nginx refuses too, never
/// reaches graft-edge as sent: Pingora's parser escapes it, README,
/// Flamingo, "Not compared".)
fn refused() -> Vec<(&'static str, u16, Vec<u8>)> {
    let req = |line: &str, extra: &str| {
        format!("{line}\r\nHost: shop.example\r\n{extra}Connection: close\r\n\r\n").into_bytes()
    };
    vec![
        ("TRACE", 405, req("TRACE / HTTP/1.1", "")),
        (
            "TRACE from a client the WAF blocks",
            405,
            req("TRACE /about HTTP/1.1", "User-Agent: sqlmap/1.7\r\n"),
        ),
        ("a lower-case method", 400, req("get /admin HTTP/1.1", "")),
        ("a digit in the method", 400, req("G3T / HTTP/1.1", "")),
    ]
}

#[test]
fn requests_nginx_refuses_before_any_phase_get_nginx_s_answer() {
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/corpus/config.json")).unwrap(),
    )
    .unwrap();
    let config = replay::with_modes(&config, &|_| "rust").to_string();
    let nginx = Nginx::prepare(&config);
    nginx.launch();
    let fl1 = Recorder::start("fl1");
    let origin = Recorder::start("origin");
    let edge = Edge::start(
        &config,
        serde_json::json!({ "default": origin.addr() }),
        &fl1.addr(),
    );
    let mut wrong = Vec::new();
    for (what, status, bytes) in refused() {
        let by_nginx = support::send(nginx.port, &bytes).map(|r| observe(r, false));
        let by_edge = support::send(edge.port, &bytes).map(|r| observe(r, false));
        if by_nginx.as_ref().map(|r| r.status) != Some(status) {
            wrong.push(format!("{what}: nginx answered {by_nginx:?}, not {status}"));
        } else if by_edge != by_nginx {
            wrong.push(format!(
                "{what}: nginx {by_nginx:?}\n    graft-edge {by_edge:?}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}\n{}", wrong.join("\n"), edge.log());
    // No step ran: nothing reached FL1 or the origin.
    assert_eq!((fl1.count(), origin.count()), (0, 0));
    assert_eq!(edge.metric("graft_edge_refused_total{status=\"405\"}"), 2);
    assert_eq!(edge.metric("graft_edge_refused_total{status=\"400\"}"), 2);
    assert!(edge
        .log()
        .contains("graft-edge: request refused (405): TRACE"));
    nginx.assert_clean_log(&[]);
}
