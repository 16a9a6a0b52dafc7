//! html_rewrite's memory through the real nginx: a 64 MiB page rewritten
//! for a client that reads slowly through a small receive buffer, from a
//! static file (one buffer naming the whole file) and from an unbuffered
//! upstream (`proxy_buffering off`). The worker's resident memory must
//! stay far below the page's size (graft feeds the rewriter in bounded
//! slices and takes no more input while its output waits for the client)
//! and the client must get the whole page, rewritten. A page whose rewrite
//! would grow past the bound one response may hold fails the step: counted,
//! logged, and the rest of the page passes as it is.
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use graft_contract::Module;
use graft_html_rewrite::{sample, HtmlRewrite, MAX_INSERTED, MAX_SNIPPET};
use graft_tests::Nginx;
use serde_json::json;

fn rewrite_config() -> serde_json::Value {
    json!({ "head_end": "<script src=\"/rum.js\"></script>",
            "https_hosts": ["example.com", "cdn.example.com"],
            "obfuscate_emails": true })
}

fn config(rewrite: serde_json::Value) -> String {
    json!({ "zones": { "localhost": { "modules": [
        { "module": "html_rewrite", "mode": "rust", "config": rewrite } ] } } })
    .to_string()
}

/// `/nat/`: static files through the native pipeline. `/up/`: the same
/// files from an unbuffered upstream (this nginx's own `/origin/`, which
/// runs no graft step).
const EXTRA: &str = r#"
        location /nat/ {
            graft_native on;
            default_type text/html;
            alias @PREFIX@/html/native/;
        }
        location /up/ {
            graft_native on;
            proxy_pass http://127.0.0.1:@PORT@/origin/;
            proxy_buffering off;
        }
        location /origin/ {
            default_type text/html;
            alias @PREFIX@/html/native/;
        }
"#;

/// The page's size.
const PAGE: usize = 64 << 20;
/// The most the worker's resident memory may grow while it serves a page,
/// in KiB (a sixteenth of the page).
const BOUND: u64 = 4 << 10;

fn rewrite(rules: &serde_json::Value, doc: &[u8]) -> Vec<u8> {
    let m = HtmlRewrite::from_config(rules).unwrap();
    let head = graft_contract::ResponseHead {
        status: 200,
        content_type: Some(b"text/html"),
        content_encoding: None,
    };
    let mut rw = m.on_response_body(&head).unwrap();
    let mut out = Vec::new();
    rw.write(doc, &mut out).unwrap();
    rw.end(&mut out).unwrap();
    out
}

fn pieces() -> Vec<String> {
    sample::PIECES.iter().map(|p| p.to_string()).collect()
}

/// A page of `n` blocks (every sample piece once each).
fn page(n: usize) -> Vec<u8> {
    let pieces = pieces();
    let body: Vec<String> = (0..n).flat_map(|_| pieces.iter().cloned()).collect();
    sample::document(&pieces[..4], &body).into_bytes()
}

/// The page of `n` blocks and its rewrite, built from the rewrites of
/// pages of one to four blocks (rewriting 64 MiB in an unoptimised test
/// build takes too long): the rewrite of `k` blocks is `pre + x^(k-1) +
/// post`, checked for `k` up to 4.
fn page_and_rewrite(n: usize) -> (Vec<u8>, Vec<u8>) {
    let rules = rewrite_config();
    let e: Vec<Vec<u8>> = (1..=4).map(|k| rewrite(&rules, &page(k))).collect();
    let block = e[1].len() - e[0].len();
    let at = e[0].iter().zip(&e[1]).take_while(|(a, b)| a == b).count();
    let x = &e[1][at..at + block];
    let build = |k: usize| {
        let mut out = Vec::with_capacity(e[0].len() + (k - 1) * block);
        out.extend_from_slice(&e[0][..at]);
        for _ in 1..k {
            out.extend_from_slice(x);
        }
        out.extend_from_slice(&e[0][at..]);
        out
    };
    for (k, want) in e.iter().enumerate() {
        assert!(build(k + 1) == *want, "the rewrite of {} blocks", k + 1);
    }
    (page(n), build(n))
}

/// A field of /proc/<pid>/status, in KiB.
fn status_kib(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// What one slow download saw: the response, and the worker's resident
/// memory before it and at its highest while it ran (KiB).
struct Download {
    response: graft_tests::Response,
    before: u64,
    peak: u64,
}

/// `GET target` from a client with a small receive buffer that reads
/// nothing for two seconds, then 8 KiB every 2 ms for two seconds, then the
/// rest as fast as it can, while the worker's resident memory is watched.
fn slow_download(nginx: &Nginx, target: &str) -> Download {
    use socket2::{Domain, Socket, Type};
    let worker = nginx.worker_pids()[0];
    // The peak so far is forgotten (Linux's clear_refs 5), where allowed
    // (the kernel's peak then counts too); the memory is sampled as well.
    let hwm = std::fs::write(format!("/proc/{worker}/clear_refs"), "5").is_ok();
    let before = status_kib(worker, "VmRSS:");
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], nginx.port).into();
    socket.connect(&addr.into()).unwrap();
    let mut s: std::net::TcpStream = socket.into();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut peak = before;
    let sample = |peak: &mut u64| *peak = (*peak).max(status_kib(worker, "VmRSS:"));
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        sample(&mut peak);
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 8192];
    let slow = Instant::now();
    let mut last_sample = Instant::now();
    loop {
        let n = match s.read(&mut chunk) {
            Ok(n) => n,
            Err(e) => panic!("{target}: read after {} bytes: {e}", buf.len()),
        };
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if last_sample.elapsed() > Duration::from_millis(20) {
            sample(&mut peak);
            last_sample = Instant::now();
        }
        if slow.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    sample(&mut peak);
    if hwm {
        peak = peak.max(status_kib(worker, "VmHWM:"));
    }
    let response = graft_tests::parse_response(&buf).expect("a response");
    Download {
        response,
        before,
        peak,
    }
}

/// One slow download at a time: the tests share the machine's cores.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serve_slowly(target: &str) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let blocks = PAGE / (page(2).len() - page(1).len());
    let (doc, want) = page_and_rewrite(blocks);
    assert!(doc.len() > 60 << 20, "{}", doc.len());
    assert!(want != doc);
    let nginx = Nginx::start_extra(&config(rewrite_config()), false, EXTRA);
    std::fs::write(nginx.prefix.join("html/native/big.html"), &doc).unwrap();
    let (small, small_want) = page_and_rewrite(3);
    std::fs::write(nginx.prefix.join("html/native/small.html"), &small).unwrap();
    // A first page warms the worker up (its first rewriter, the upstream
    // connection's buffers).
    let path = |file: &str| format!("{target}{file}");
    let r = nginx.get("localhost", &path("small.html"));
    assert!(r.body == small_want, "{}", r.text());
    let d = slow_download(&nginx, &path("big.html"));
    let growth = d.peak.saturating_sub(d.before);
    eprintln!(
        "{target}: {} bytes rewritten; worker RSS {} KiB before, {} KiB at most: {growth} KiB more",
        want.len(),
        d.before,
        d.peak
    );
    assert_eq!(d.response.status, 200);
    assert!(
        d.response.body == want,
        "{target}: {} bytes, not the {} expected\n{}",
        d.response.body.len(),
        want.len(),
        nginx.error_log()
    );
    assert!(
        growth < BOUND,
        "{target}: the worker grew by {growth} KiB serving a {} byte page (bound {BOUND} KiB)",
        doc.len()
    );
    assert_eq!(nginx.counter("localhost", 0, "native"), 2);
    assert_eq!(nginx.counter("localhost", 0, "failed"), 0);
    nginx.assert_clean_log(&[]);
}

#[test]
fn a_large_static_page_is_rewritten_for_a_slow_client_in_bounded_memory() {
    serve_slowly("/nat/");
}

#[test]
fn a_large_page_from_an_unbuffered_upstream_is_rewritten_for_a_slow_client_in_bounded_memory() {
    serve_slowly("/up/");
}

#[test]
fn a_page_whose_rewrite_would_grow_past_the_bound_fails_the_step_counted_logged_and_passes_as_it_is(
) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // A head_end of 64 KiB and a thousand <head>s: 64 MiB more, unbounded.
    let rules = json!({ "head_end": "x".repeat(MAX_SNIPPET), "obfuscate_emails": true });
    let pieces = pieces();
    let blocks = |n: usize| -> String { (0..n).flat_map(|_| pieces.iter().cloned()).collect() };
    let head = format!(
        "<!DOCTYPE html>\n<html><head><title>t</title></head><body>{}",
        blocks(200)
    );
    let rest = format!("{}</body></html>\n", blocks(200));
    let doc = format!("{head}{}{rest}", "<head></head>".repeat(1000));
    let nginx = Nginx::start_extra(&config(rules.clone()), false, EXTRA);
    std::fs::write(nginx.prefix.join("html/native/bomb.html"), &doc).unwrap();
    std::fs::write(nginx.prefix.join("html/native/small.html"), page(3)).unwrap();
    let r = nginx.get("localhost", "/nat/small.html");
    assert!(r.body == rewrite(&rules, &page(3)), "{}", r.text());
    let d = slow_download(&nginx, "/nat/bomb.html");
    let growth = d.peak.saturating_sub(d.before);
    let body = &d.response.body;
    eprintln!(
        "bomb: {} bytes served for a {} byte page; worker RSS {} KiB before, {} KiB at most: {growth} KiB more",
        body.len(),
        doc.len(),
        d.before,
        d.peak
    );
    assert_eq!(d.response.status, 200);
    // The page's start is rewritten, its rest passes as it is, and no more
    // than the bound was added.
    let start = String::from_utf8_lossy(&body[..head.len()]);
    assert!(start.contains("</title>xxxxxxxx"), "{start}");
    assert!(start.contains("ann&#64;example.org"), "{start}");
    assert!(body.ends_with(rest.as_bytes()));
    assert!(body.len() < doc.len() + MAX_INSERTED, "{}", body.len());
    assert_eq!(nginx.counter("localhost", 0, "failed"), 1);
    let log = nginx.error_log();
    let why = format!("head_end would insert more than {MAX_INSERTED} bytes");
    assert!(
        log.contains(&format!(
            r#"graft: zone "localhost" module "html_rewrite" returned an error: html_rewrite: {why}"#
        )) && log.contains("the rest of the response body passes as it is"),
        "{log}"
    );
    let metrics = nginx.get("localhost", "/graft/metrics").text();
    assert!(
        metrics.contains(
            r#"graft_requests_total{zone="localhost",module="html_rewrite",path="failed"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        growth < BOUND,
        "the worker grew by {growth} KiB (bound {BOUND} KiB)"
    );
    nginx.assert_clean_log(&[&why]);
}

/// The Lua twin holds a body whole: past its bound (the Rust side's
/// memory bound), or when its rewrite throws (head_end's bound), it gives
/// up, the body goes on whole and as it came, counted and logged.
#[test]
fn the_lua_side_gives_up_past_its_bounds_and_passes_the_whole_body() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    const LUA: &str = r#"
        location /lua/ {
            access_by_lua_block { require("graft").access() }
            header_filter_by_lua_block { require("graft").header_filter() }
            body_filter_by_lua_block { require("graft").body_filter() }
            default_type text/html;
            alias @PREFIX@/html/native/;
        }
"#;
    let lua = |rules: serde_json::Value| {
        json!({ "zones": { "localhost": { "modules": [
            { "module": "html_rewrite", "mode": "lua", "config": rules } ] } } })
        .to_string()
    };
    // Over 8 MiB: the body passes whole, unchanged.
    let nginx = Nginx::start_extra(&lua(rewrite_config()), false, LUA);
    let block = page(2).len() - page(1).len();
    let big = page((9 << 20) / block);
    assert!(big.len() > 8 << 20);
    std::fs::write(nginx.prefix.join("html/native/big.html"), &big).unwrap();
    let r = nginx.get("localhost", "/lua/big.html");
    assert_eq!(r.status, 200);
    assert!(r.body == big, "{} bytes of {}", r.body.len(), big.len());
    assert_eq!(nginx.counter("localhost", 0, "failed"), 1);
    nginx.assert_clean_log(&["which its Lua side holds whole"]);

    // head_end's copies past 1 MiB: the rewrite throws at the end, and the
    // whole body it held goes on.
    let rules = json!({ "head_end": "x".repeat(MAX_SNIPPET) });
    let nginx = Nginx::start_extra(&lua(rules), false, LUA);
    let doc = format!(
        "<!DOCTYPE html>\n<html><head></head>{}<body>b</body></html>\n",
        "<head></head>".repeat(100)
    );
    std::fs::write(nginx.prefix.join("html/native/bomb.html"), &doc).unwrap();
    let r = nginx.get("localhost", "/lua/bomb.html");
    assert_eq!(r.status, 200);
    assert!(r.body == doc.as_bytes(), "{}", r.text().len());
    assert_eq!(nginx.counter("localhost", 0, "failed"), 1);
    nginx.assert_clean_log(&["head_end would insert more than"]);
}
