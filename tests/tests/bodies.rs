//! Request bodies through the real nginx: a zone whose WAF reads bodies
//! inspects form and JSON bodies in every mode (Lua, Rust over the bridge,
//! native, shadow with no difference), however the body arrives (one read
//! or many, chunked, in memory or in nginx's temporary file), up to the
//! zone's max_bytes and by its rule above it; the origin still gets the
//! whole body.
use graft_tests::{metric, Nginx};
use serde_json::json;

const SQLI: &str = "q=1%27+UNION+SELECT+password+FROM+users";

/// A zone whose WAF reads bodies, in `mode`, reading `max_bytes` of each
/// and doing `over` above that.
fn config(mode: &str, max_bytes: usize, over: serde_json::Value) -> String {
    json!({ "zones": { "localhost": {
        "body": { "max_bytes": max_bytes, "over": over },
        "modules": [ { "module": "waf", "mode": mode, "config": {
            "signatures": ["sql_injection", "script_injection", "path_traversal"],
            "inspect_body": true,
            "rules": [ { "id": "no-admin-role", "action": "block", "status": 451,
                         "when": { "field": "body_arg:role", "op": "equals", "value": "admin" } } ] } } ] } } })
    .to_string()
}

/// Extra locations: the native pipeline alone in front of the echoing
/// origin, and a small body buffer, so that bodies above 1 KiB go to
/// nginx's temporary file.
const EXTRA: &str = r#"
        client_body_buffer_size 1k;
        location /nat/ {
            graft_native on;
            content_by_lua_block { require("graft.echo")() }
        }
"#;

fn post(path: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

fn chunked(path: &str, content_type: &str, chunks: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut pieces = vec![format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()];
    for c in chunks {
        let mut p = format!("{:x}\r\n", c.len()).into_bytes();
        p.extend_from_slice(c);
        p.extend_from_slice(b"\r\n");
        pieces.push(p);
    }
    pieces.push(b"0\r\n\r\n".to_vec());
    pieces
}

const FORM: &str = "application/x-www-form-urlencoded";
const JSON: &str = "application/json";

/// The cases every mode must decide alike: (content type, body, status).
fn cases() -> Vec<(&'static str, Vec<u8>, u16)> {
    let deep = "[".repeat(50_000) + "\"<script>alert(1)</script>\"" + &"]".repeat(50_000);
    vec![
        (FORM, SQLI.as_bytes().to_vec(), 403),
        (FORM, b"name=x&role=admin".to_vec(), 451),
        (FORM, b"name=hello+world&page=2".to_vec(), 200),
        // Broken escapes stay as they are, the payload is still read.
        (FORM, b"q=%ZZ%27+UNION+SELECT+1+FROM+t".to_vec(), 403),
        (
            JSON,
            br#"{"a":{"b":[{"c":"1' UNION SELECT password FROM users"}]}}"#.to_vec(),
            403,
        ),
        (JSON, br#"{"\u003cscript\u003e":"x"}"#.to_vec(), 403),
        (JSON, br#"{"q": "../../etc/passwd" ,,,"#.to_vec(), 403),
        (
            JSON,
            b"{\"bad utf-8\": \"\xff\xfe\", \"ok\": 1}".to_vec(),
            200,
        ),
        (JSON, br#"{"q":"hello","n":[1,2,{"x":"y"}]}"#.to_vec(), 200),
        (JSON, deep.into_bytes(), 403),
        // Neither form nor JSON: the bytes themselves.
        ("text/plain", b"1' UNION SELECT password FROM users".to_vec(), 403),
        ("multipart/form-data; boundary=b", b"--b\r\nContent-Disposition: form-data; name=\"q\"\r\n\r\n<script>alert(1)</script>\r\n--b--\r\n".to_vec(), 403),
        ("text/plain", b"hello world".to_vec(), 200),
    ]
}

fn check_every_case(nginx: &Nginx, path: &str) {
    for (ct, body, want) in cases() {
        let r = nginx.raw(&post(path, ct, &body));
        assert_eq!(
            r.status,
            want,
            "{path} {ct} {:?}: {}",
            String::from_utf8_lossy(&body[..body.len().min(80)]),
            r.text()
        );
        if want == 200 {
            assert!(
                r.text().contains(&format!("body: {} bytes", body.len())),
                "the origin gets the whole body: {}",
                r.text()
            );
        }
    }
}

#[test]
fn a_waf_reading_bodies_blocks_what_hides_in_them_in_every_mode() {
    for mode in ["lua", "rust"] {
        let nginx = Nginx::start_extra(&config(mode, 1 << 20, json!("inspect")), false, EXTRA);
        check_every_case(&nginx, "/");
        if mode == "rust" {
            check_every_case(&nginx, "/nat/");
            assert!(
                nginx.counter("localhost", 0, "native") > 0,
                "{}",
                nginx.counters()
            );
            assert_eq!(nginx.counter("localhost", 0, "fallback"), 0);
        }
        nginx.assert_clean_log(&[]);
    }
}

#[test]
fn in_shadow_the_two_waf_sides_read_every_body_alike() {
    let nginx = Nginx::start_extra(&config("shadow", 1 << 20, json!("inspect")), false, EXTRA);
    check_every_case(&nginx, "/");
    let n = cases().len() as u64;
    assert_eq!(nginx.counter("localhost", 0, "shadow_match"), n);
    assert_eq!(nginx.counter("localhost", 0, "shadow_diff"), 0);
    nginx.assert_clean_log(&[]);
}

#[test]
fn a_body_in_many_reads_chunked_or_in_a_temporary_file_is_inspected_whole() {
    // The Lua bridge; the native pipeline alone; and the native pipeline
    // reading the body for a Lua step after it (the legacy side then reads
    // nginx's temporary file).
    for (native, mode, path) in [
        (false, "rust", "/x"),
        (true, "rust", "/nat/x"),
        (true, "lua", "/x"),
    ] {
        let nginx = Nginx::start_extra(&config(mode, 1 << 20, json!("inspect")), native, EXTRA);
        // 6 KiB of harmless arguments, then the payload: past the 1 KiB
        // buffer, so nginx writes the body to its temporary file.
        let padding = "pad=".to_string() + &"a".repeat(6000) + "&";
        let body = format!("{padding}{SQLI}");
        let r = nginx.raw(&post(path, FORM, body.as_bytes()));
        assert_eq!(r.status, 403, "native {native}: {}", r.text());
        // The same, in 50-byte reads.
        let request = post(path, FORM, body.as_bytes());
        let pieces: Vec<&[u8]> = request.chunks(500).collect();
        assert_eq!(nginx.raw_in_pieces(&pieces).status, 403);
        // Chunked, the payload cut across chunks and reads.
        let cut = SQLI.len() / 2;
        let chunks = chunked(
            path,
            FORM,
            &[
                padding.as_bytes(),
                &SQLI.as_bytes()[..cut],
                &SQLI.as_bytes()[cut..],
            ],
        );
        let pieces: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        let r = nginx.raw_in_pieces(&pieces);
        assert_eq!(r.status, 403, "chunked, native {native}: {}", r.text());
        // A harmless chunked body reaches the origin whole.
        let chunks = chunked(path, FORM, &[padding.as_bytes(), b"b=1"]);
        let pieces: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        let r = nginx.raw_in_pieces(&pieces);
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(
            r.text()
                .contains(&format!("body: {} bytes", padding.len() + 3)),
            "{}",
            r.text()
        );
        nginx.assert_clean_log(&[]);
    }
}

#[test]
fn a_body_over_the_zone_limit_is_answered_or_inspected_as_far_as_the_limit_as_configured() {
    let padding = "pad=".to_string() + &"a".repeat(3000) + "&";
    let late = format!("{padding}{SQLI}");
    for native in [false, true] {
        let path = if native { "/nat/x" } else { "/x" };
        // "respond": a longer body gets the zone's status, declared or chunked.
        let nginx = Nginx::start_extra(
            &config("rust", 1024, json!({ "respond": 413 })),
            native,
            EXTRA,
        );
        assert_eq!(nginx.raw(&post(path, FORM, late.as_bytes())).status, 413);
        let chunks = chunked(path, FORM, &[padding.as_bytes(), b"b=1"]);
        let pieces: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        assert_eq!(nginx.raw_in_pieces(&pieces).status, 413);
        assert_eq!(nginx.raw(&post(path, FORM, b"b=1")).status, 200);
        let text = nginx.get("localhost", "/graft/metrics").text();
        assert_eq!(
            metric(
                &text,
                r#"graft_request_bodies_over_limit_total{zone="localhost"}"#
            ),
            Some(2),
            "{text}"
        );
        let log = nginx.error_log();
        assert!(
            log.contains(&format!(
                "request body of {} bytes is over its max_bytes of 1024: answered 413",
                late.len()
            )),
            "{log}"
        );
        nginx.assert_clean_log(&[]);
        drop(nginx);

        // "inspect": the first max_bytes are read; the rest passes to the
        // origin unread, and the count says so.
        let nginx = Nginx::start_extra(&config("rust", 1024, json!("inspect")), native, EXTRA);
        let r = nginx.raw(&post(path, FORM, late.as_bytes()));
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.text().contains(&format!("body: {} bytes", late.len())));
        let early = format!("{SQLI}&{padding}");
        assert_eq!(nginx.raw(&post(path, FORM, early.as_bytes())).status, 403);
        let text = nginx.get("localhost", "/graft/metrics").text();
        assert_eq!(
            metric(
                &text,
                r#"graft_request_bodies_over_limit_total{zone="localhost"}"#
            ),
            Some(2),
            "{text}"
        );
        nginx.assert_clean_log(&[]);
    }
}

#[test]
fn a_zone_whose_modules_read_no_bodies_never_reads_one() {
    let config = json!({ "zones": { "localhost": {
        "body": { "max_bytes": 1024, "over": { "respond": 413 } },
        "modules": [ { "module": "waf", "mode": "rust", "config": { "signatures": ["sql_injection"] } } ] } } })
    .to_string();
    let nginx = Nginx::start_extra(&config, false, EXTRA);
    let big = "a=".to_string() + &"b".repeat(5000);
    let r = nginx.raw(&post("/x", FORM, big.as_bytes()));
    assert_eq!(r.status, 200, "{}", r.text());
    nginx.assert_clean_log(&[]);
}
