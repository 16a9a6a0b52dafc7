//! Bodies made to hide from the WAF: compressed, with a Content-Type read
//! one way by graft and another by a backend, with a charset that is not
//! ASCII-compatible, or JSON a lenient parser reads past graft's scanner.
//! A body graft cannot read as a backend may is undecidable: the WAF's
//! step fails and its failure policy answers (closed: 503), counted and
//! logged; graft also matches the raw bytes of every body, so a payload
//! outside what its decoders see is still found. Each case gets the same
//! verdict from the Lua side, the Rust side over the bridge, the native
//! pipeline and shadow.
use graft_tests::Nginx;
use serde_json::json;

const SQLI: &str = "1' UNION SELECT password FROM users";

fn config(mode: &str) -> String {
    json!({ "zones": { "localhost": {
        "body": { "max_bytes": 1 << 20, "over": "inspect" },
        "modules": [ { "module": "waf", "mode": mode, "config": {
            "signatures": ["sql_injection", "script_injection"], "inspect_body": true } } ] } } })
    .to_string()
}

const EXTRA: &str = r#"
        location /nat/ {
            graft_native on;
            content_by_lua_block { require("graft.echo")() }
        }
"#;

fn post(path: &str, headers: &[&str], body: &[u8]) -> Vec<u8> {
    let mut req = format!("POST {path} HTTP/1.1\r\nHost: localhost\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    let mut req = req.into_bytes();
    req.extend_from_slice(body);
    req
}

/// (headers, body, status): 503 undecidable, 403 found, 200 let through.
fn cases() -> Vec<(Vec<&'static str>, Vec<u8>, u16)> {
    let form = "Content-Type: application/x-www-form-urlencoded";
    let json_ct = "Content-Type: application/json";
    let benign = b"name=hello".to_vec();
    let sqli_form = format!("q={}", SQLI.replace(' ', "+")).into_bytes();
    let mut cases = vec![];
    // Compressed: a backend may inflate what graft cannot read.
    for ce in [
        "gzip",
        "deflate",
        "br",
        "GZIP",
        "x-gzip",
        "gzip, identity",
        "compress",
    ] {
        let h = Box::leak(format!("Content-Encoding: {ce}").into_boxed_str());
        cases.push((vec![form, &*h], benign.clone(), 503));
        cases.push((vec![json_ct, &*h], b"\x1f\x8b\x08\x00".to_vec(), 503));
    }
    cases.push((
        vec![form, "Content-Encoding: identity"],
        benign.clone(),
        200,
    ));
    cases.push((
        vec![form, "Content-Encoding: identity"],
        sqli_form.clone(),
        403,
    ));
    // A Content-Type graft and a backend may read differently.
    for ct in [
        "application/json, text/plain",
        "application/x-www-form-urlencoded;charset",
        "multipart/form-data; boundary=a; boundary=b",
        "application/x-www-form-urlencoded; charset=\"utf-8",
        "application",
        "application /json",
        "text/plain; a=b c",
    ] {
        let h = Box::leak(format!("Content-Type: {ct}").into_boxed_str());
        cases.push((vec![&*h], benign.clone(), 503));
    }
    cases.push((
        vec![form, "Content-Type: application/json"],
        benign.clone(),
        503,
    ));
    // A charset that is not ASCII-compatible: the bytes are not the text.
    for cs in ["utf-16", "UTF-16LE", "utf-32", "utf-7", "ibm037", "cp500"] {
        let h = Box::leak(format!("Content-Type: application/json; charset={cs}").into_boxed_str());
        cases.push((vec![&*h], b"{\"q\":\"x\"}".to_vec(), 503));
    }
    for cs in ["utf-8", "UTF-8", "iso-8859-15", "windows-1252", "\"utf-8\""] {
        let h = Box::leak(format!("Content-Type: application/json; charset={cs}").into_boxed_str());
        cases.push((vec![&*h], b"{\"q\":\"hello\"}".to_vec(), 200));
    }
    // JSON a lenient parser reads past graft's scanner: the raw bytes.
    for body in [
        format!("{{\"a\":1}} {SQLI}"),
        format!("{{\"a\": 1, {SQLI} }}"),
        format!("[1, 2, {SQLI}]"),
        format!("{{\"a\":\"x\"}}\n{{\"b\":\"{SQLI}\"}}"),
    ] {
        cases.push((vec![json_ct], body.into_bytes(), 403));
    }
    // A form read past graft's decoder (a name with no `=`): the raw bytes.
    cases.push((vec![form], format!("a=1&{SQLI}").into_bytes(), 403));
    cases.push((vec![form], benign.clone(), 200));
    cases
}

fn check(nginx: &Nginx, path: &str, what: &str) {
    for (headers, body, want) in cases() {
        let r = nginx.raw(&post(path, &headers, &body));
        assert_eq!(
            r.status,
            want,
            "{what} {path} {headers:?} {:?}: {}",
            String::from_utf8_lossy(&body[..body.len().min(60)]),
            r.text()
        );
    }
}

#[test]
fn a_body_made_to_hide_from_the_waf_never_passes_uninspected_in_any_mode() {
    let undecidable = cases().iter().filter(|c| c.2 == 503).count() as u64;
    for mode in ["lua", "rust", "shadow"] {
        let nginx = Nginx::start_extra(&config(mode), false, EXTRA);
        check(&nginx, "/", mode);
        // Counted as the step's failures, on every side that ran it.
        assert_eq!(
            nginx.counter("localhost", 0, "failed"),
            undecidable,
            "{mode}"
        );
        if mode == "rust" {
            check(&nginx, "/nat/", "native");
            assert_eq!(
                nginx.counter("localhost", 0, "failed"),
                2 * undecidable,
                "native"
            );
            assert_eq!(nginx.counter("localhost", 0, "error"), 2 * undecidable);
        }
        if mode == "shadow" {
            assert_eq!(nginx.counter("localhost", 0, "shadow_diff"), 0);
        }
        let log = nginx.error_log();
        assert!(
            log.contains("an undecidable body: its Content-Encoding is \"gzip\""),
            "{mode}: {log}"
        );
        nginx.assert_clean_log(&["an undecidable body", "could not decide"]);
    }
}
