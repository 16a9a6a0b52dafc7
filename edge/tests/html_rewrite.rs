//! html_rewrite's response-body phase in graft-edge: the pages an origin
//! sends and the answers graft-edge's own steps make are rewritten as FL1
//! rewrites them (compared with a reference FL1 on the same origin), with
//! nothing passed to FL1 for the phase; a step not in `rust` sends the
//! request to FL1 at request time; a rewriter that fails mid-body follows
//! the step's failure policy, counted and logged.
mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

use graft_tests::edge::{Fl1Setup, Trio};
use graft_tests::Response;
use serde_json::json;
use support::{send, Edge, Recorder};

const HEAD_END: &str = "<script src=\"/rum.js\"></script>";

fn rewrite(mode: &str) -> serde_json::Value {
    json!({ "module": "html_rewrite", "mode": mode, "config": {
        "head_end": HEAD_END, "https_hosts": ["example.com", "cdn.example.com"],
        "obfuscate_emails": true } })
}

/// url_normalize (400 for an encoded CR or LF), a WAF that answers 403
/// (`/admin`) and 406 (a scanner's agent), then html_rewrite in `mode`.
fn zone(mode: &str) -> serde_json::Value {
    json!({ "modules": [
        { "module": "url_normalize", "mode": "rust" },
        { "module": "waf", "mode": "rust", "config": { "rules": [
            { "id": "admin", "action": "block", "when": { "field": "path", "op": "prefix", "value": "/admin" } },
            { "id": "scanner", "action": "block", "status": 406,
              "when": { "field": "header:user-agent", "op": "regex", "value": "(?i)sqlmap" } } ] } },
        rewrite(mode) ] })
}

fn get(port: u16, method: &str, host: &str, target: &str, extra: &str) -> Response {
    let req =
        format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n");
    send(port, req.as_bytes()).expect("a whole response")
}

/// The page nginx and graft-edge sign their error pages with, left out.
fn unsigned(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .replace("<hr><center>nginx/1.22.1</center>", "<hr>")
        .replace("<hr><center>graft-edge</center>", "<hr>")
}

#[test]
fn pages_from_the_origin_and_from_graft_edge_are_rewritten_as_fl1_rewrites_them() {
    let graft =
        json!({ "zones": { "rust.test": zone("rust"), "lua.test": zone("lua") } }).to_string();
    let trio = Trio::start(&graft, &Fl1Setup::default());
    let cases = [
        ("GET", "/html/7/", ""),
        ("GET", "/html/4096/", ""),
        ("GET", "/admin/x", ""),
        ("GET", "/x", "User-Agent: sqlmap/1.0\r\n"),
        ("GET", "/plain", ""),
        ("HEAD", "/html/7/", ""),
        ("HEAD", "/admin", ""),
        // nginx takes it (url_normalize refuses it, and its page is
        // rewritten): graft-edge must not refuse it before the steps.
        ("GET", "/crlf%0d%0a", ""),
    ];
    for host in ["rust.test", "lua.test"] {
        for (method, target, extra) in cases {
            let fl1 = get(trio.fl1.port, method, host, target, extra);
            let fl2 = get(trio.edge.port, method, host, target, extra);
            let what = format!("{method} {host}{target}");
            assert_eq!(fl2.status, fl1.status, "{what}\n{}", trio.edge.log());
            assert_eq!(unsigned(&fl2.body), unsigned(&fl1.body), "{what}");
            for name in ["Content-Type", "ETag", "Last-Modified", "Accept-Ranges"] {
                assert_eq!(fl2.header(name), fl1.header(name), "{what}: {name}");
            }
            // Framed by the server: a length, when there is one, is the
            // body's own.
            if let Some(len) = fl2.header("Content-Length") {
                if method != "HEAD" {
                    assert_eq!(len, fl2.body.len().to_string(), "{what}");
                }
            }
        }
    }
    // The rewrite shows: FL1's and graft-edge's alike, and rewritten.
    let page = get(trio.edge.port, "GET", "rust.test", "/html/7/", "");
    let text = page.text();
    assert!(text.contains(&format!("{HEAD_END}</head>")), "{text}");
    assert!(text.contains("sales&#64;example.com"), "{text}");
    assert!(text.contains("https://cdn.example.com/s.css"), "{text}");
    assert_eq!(
        page.header("Content-Length"),
        None,
        "a rewritten body streams"
    );
    assert_eq!(page.header("Transfer-Encoding"), Some("chunked"));
    let denied = get(trio.edge.port, "GET", "rust.test", "/admin", "");
    assert!(denied.text().contains(&format!("{HEAD_END}</head>")));
    let refused = get(trio.edge.port, "GET", "rust.test", "/crlf%0d%0a", "");
    assert_eq!(refused.status, 400);
    assert!(refused.text().contains(&format!("{HEAD_END}</head>")));

    // In rust, nothing went to FL1; with html_rewrite in lua, every
    // request of the zone went to FL1 whole, counted on html_rewrite (its
    // mode): FL1 rewrites the WAF's answers too.
    let m = trio.edge.metrics();
    let passed = |zone: &str, reason: &str| {
        graft_tests::metric(
            &m,
            &format!(
                r#"graft_edge_passed_total{{zone="{zone}",module="html_rewrite",reason="{reason}"}}"#
            ),
        )
        .unwrap_or(0)
    };
    assert_eq!(passed("rust.test", "mode"), 0, "{m}");
    // No module has a phase graft-edge does not run: no such reason.
    assert!(!m.contains(r#"reason="phase""#), "{m}");
    assert_eq!(passed("lua.test", "mode"), cases.len() as u64);
    // Its log line says FL1 took it whole, from step 0, for html_rewrite.
    let log = trio.edge.log();
    assert!(
        log.contains(
            r#"zone "lua.test": passed to FL1 whole from step 0, for step 2 (module "html_rewrite"): mode"#
        ),
        "{log}"
    );
    assert!(!log.contains("passed to FL1 from step 2"), "{log}");
    assert!(
        !m.contains(
            r#"graft_requests_total{zone="rust.test",module="html_rewrite",path="failed"} 1"#
        ),
        "{m}"
    );
}

/// An origin that sends, for any request, an HTML page with `heads`
/// `<head>` elements (chunked, in pieces), or plain text for `/plain`.
fn heads_origin(heads: usize) -> u16 {
    let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut out = stream.try_clone().unwrap();
                let mut reader = BufReader::new(stream);
                let mut first = String::new();
                let _ = reader.read_line(&mut first);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                }
                let mut head = "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_string();
                if first.contains("/plain") {
                    head = head.replace("text/html", "text/plain");
                }
                if out.write_all(head.as_bytes()).is_err() {
                    return;
                }
                for i in 0..heads {
                    let piece = format!("<head><title>{i}</title></head><p>a@example.com</p>\n");
                    let chunk = format!("{:x}\r\n{piece}\r\n", piece.len());
                    if out.write_all(chunk.as_bytes()).is_err() {
                        return;
                    }
                }
                let _ = out.write_all(b"0\r\n\r\n");
            });
        }
    });
    port
}

#[test]
fn a_rewriter_that_fails_mid_body_follows_its_failure_policy() {
    // 40 KiB inserted into each of 40 heads: past html_rewrite's bound of
    // 1 MiB a document, the step fails with the body half sent.
    let big = format!("<script>{}</script>", "x".repeat(40 * 1024));
    let step = |policy: serde_json::Value| {
        json!({ "modules": [ { "module": "html_rewrite", "mode": "rust", "on_failure": policy,
            "config": { "head_end": big, "obfuscate_emails": true } } ] })
    };
    let graft = json!({ "zones": {
        "open.test": step(json!("continue")),
        "closed.test": step(json!({ "respond": 503 })) } })
    .to_string();
    let fl1 = Recorder::start("fl1");
    let origin = heads_origin(40);
    let edge = Edge::start(
        &graft,
        json!({ "default": format!("127.0.0.1:{origin}") }),
        &fl1.addr(),
    );

    // continue: the rest of the body passes as it is, counted and logged.
    let r = edge.get("open.test", "/x");
    assert_eq!(r.status, 200, "{}", edge.log());
    let text = r.text();
    assert_eq!(text.matches("<title>").count(), 40, "the whole body came");
    assert!(
        text.contains("<title>0</title><script>"),
        "rewritten at first"
    );
    assert!(
        text.contains("<title>39</title></head><p>a@example.com"),
        "then as it was"
    );
    assert!(text.starts_with("<head><title>0</title><script>"));

    // respond: the response has started; it is cut, never ended as if whole.
    let raw = {
        use std::io::Read;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", edge.port)).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        s.write_all(b"GET /x HTTP/1.1\r\nHost: closed.test\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        buf
    };
    assert!(
        raw.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    assert!(
        !raw.ends_with(b"0\r\n\r\n"),
        "a cut body has no last chunk: the client sees it is not whole"
    );

    // A page the rewriter leaves alone (not HTML) passes as it came.
    let r = edge.get("closed.test", "/plain");
    assert_eq!(r.status, 200);
    assert_eq!(r.text().matches("<title>").count(), 40);

    let failed = |zone: &str| {
        edge.metric(&format!(
            r#"graft_requests_total{{zone="{zone}",module="html_rewrite",path="failed"}}"#
        ))
    };
    assert_eq!((failed("open.test"), failed("closed.test")), (1, 1));
    let log = edge.log();
    assert!(
        log.contains("the rest of the response body passes as it is"),
        "{log}"
    );
    assert!(log.contains("the response is cut"), "{log}");
    assert_eq!(fl1.count(), 0, "nothing went to FL1");
}
