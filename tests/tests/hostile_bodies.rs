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

/// The same WAF, opted in to bounded decompression: at most 64 KiB out,
/// and never more than 1000 times the bytes in.
fn decompress_config(mode: &str) -> String {
    json!({ "zones": { "localhost": {
        "body": { "max_bytes": 1 << 20, "over": "inspect" },
        "modules": [ { "module": "waf", "mode": mode, "config": {
            "signatures": ["sql_injection", "script_injection"], "inspect_body": true,
            "decompress": { "max_bytes": 65536, "max_ratio": 1000 } } } ] } } })
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

/// Compressed bodies, as `gzip -9`, `zlib`, raw deflate and `brotli -q 11`
/// (flate2 and the brotli crate) write them: the hex of each, and what it
/// decodes to.
mod packed {
    /// `q=1'+UNION+SELECT+password+FROM+users`, a form.
    pub const SQLI_GZIP: &str = "1f8b08000000000002ff012500daff713d31272b554e494f4e2b53454c4543542b70617373776f72642b46524f4d2b7573657273bdf57ea325000000";
    pub const SQLI_ZLIB: &str = "78da012500daff713d31272b554e494f4e2b53454c4543542b70617373776f72642b46524f4d2b7573657273d2bf0c00";
    pub const SQLI_RAW: &str =
        "012500daff713d31272b554e494f4e2b53454c4543542b70617373776f72642b46524f4d2b7573657273";
    pub const SQLI_BR: &str =
        "0b1280713d31272b554e494f4e2b53454c4543542b70617373776f72642b46524f4d2b757365727303";
    /// `{"q":"1' UNION SELECT password FROM users"}`, JSON.
    pub const JSON_GZIP: &str = "1f8b08000000000002ff012b00d4ff7b2271223a22312720554e494f4e2053454c4543542070617373776f72642046524f4d207573657273227d4265df8f2b000000";
    pub const JSON_ZLIB: &str = "78da012b00d4ff7b2271223a22312720554e494f4e2053454c4543542070617373776f72642046524f4d207573657273227d0c3d0d46";
    pub const JSON_BR: &str = "1b2a00f81d0976ec841bc7e04e2972b2573171a5d3070e3960ff57f34ceb353cc1e927b7d0939974b8905f2a13";
    /// `name=hello`, a form.
    pub const BENIGN_GZIP: &str = "1f8b08000000000004ffcb4bcc4db5cd48cdc9c90700925a0abd0a000000";
    pub const BENIGN_ZLIB: &str = "78dacb4bcc4db5cd48cdc9c90700157f03f3";
    pub const BENIGN_RAW: &str = "cb4bcc4db5cd48cdc9c90700";
    pub const BENIGN_BR: &str = "8b04806e616d653d68656c6c6f03";
    /// `name=hello`, with the gzip header's comment
    /// `1' UNION SELECT password FROM users`: in the raw bytes only.
    pub const COMMENT_GZIP: &str = "1f8b08100000000004ff312720554e494f4e2053454c4543542070617373776f72642046524f4d20757365727300cb4bcc4db5cd48cdc9c90700925a0abd0a000000";
    /// 128 KiB of zeros in 161 bytes: past 64 KiB (814 times its size).
    pub const ZEROS_128K_GZIP: &str = concat!(
        "1f8b08000000000002ffedc03101000000c2a0f54fed610d2800000000000000",
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0000000000000000000000000000000000000000000000801bcdcde87e000002",
        "00",
    );
    /// 128 KiB of zeros in 14 bytes: past 1000 times its size.
    pub const ZEROS_128K_BR: &str = "5bffff817f02201e0b0472ef0300";
    /// 16 MiB of zeros in 27 bytes: past both.
    pub const ZEROS_16M_BR: &str = "cbffff3ff82700e2b14020f7fe8fffff7ff04f00c4611180eefddf";
    /// 32 KiB of zeros in 64 bytes: within both (512 times its size).
    pub const ZEROS_32K_GZIP: &str = "1f8b08000000000002ffedc0810000000080a0fda917a9020000000000000000000000000000000000000000000000000000000000000006a6fc1f0100800000";

    pub fn bytes(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }
}

/// (headers, body, status) with the zone opted in to decompression: a
/// body graft decodes within the limits is inspected decoded and raw; one
/// past a limit, corrupt, cut short, or in codings stacked or unknown is
/// undecidable (503).
fn decompress_cases() -> Vec<(Vec<&'static str>, Vec<u8>, u16)> {
    use packed::*;
    let form = "Content-Type: application/x-www-form-urlencoded";
    let json_ct = "Content-Type: application/json";
    let mut cases = vec![];
    for (ce, sqli, benign) in [
        ("gzip", SQLI_GZIP, BENIGN_GZIP),
        ("x-gzip", SQLI_GZIP, BENIGN_GZIP),
        ("GZip", SQLI_GZIP, BENIGN_GZIP),
        ("deflate", SQLI_ZLIB, BENIGN_ZLIB),
        ("deflate", SQLI_RAW, BENIGN_RAW),
        ("br", SQLI_BR, BENIGN_BR),
        ("identity, gzip", SQLI_GZIP, BENIGN_GZIP),
    ] {
        let h = Box::leak(format!("Content-Encoding: {ce}").into_boxed_str());
        cases.push((vec![form, &*h], bytes(sqli), 403));
        cases.push((vec![form, &*h], bytes(benign), 200));
    }
    for (ce, json) in [("gzip", JSON_GZIP), ("deflate", JSON_ZLIB), ("br", JSON_BR)] {
        let h = Box::leak(format!("Content-Encoding: {ce}").into_boxed_str());
        cases.push((vec![json_ct, &*h], bytes(json), 403));
    }
    // The raw bytes are matched too: a payload in the gzip header's comment.
    cases.push((
        vec![form, "Content-Encoding: gzip"],
        bytes(COMMENT_GZIP),
        403,
    ));
    // Past a limit: never decoded whole.
    for (ce, bomb) in [
        ("gzip", ZEROS_128K_GZIP),
        ("br", ZEROS_128K_BR),
        ("br", ZEROS_16M_BR),
    ] {
        let h = Box::leak(format!("Content-Encoding: {ce}").into_boxed_str());
        cases.push((vec![form, &*h], bytes(bomb), 503));
    }
    cases.push((
        vec![form, "Content-Encoding: gzip"],
        bytes(ZEROS_32K_GZIP),
        200,
    ));
    // Cut short, corrupt, with bytes after the stream, in the wrong coding.
    let sqli = bytes(SQLI_GZIP);
    let mut bad_crc = sqli.clone();
    let n = bad_crc.len();
    bad_crc[n - 8] ^= 1;
    let mut trailing = bytes(BENIGN_GZIP);
    trailing.extend_from_slice(b"q=1' UNION SELECT password FROM users");
    for (ce, body) in [
        ("gzip", sqli[..sqli.len() - 4].to_vec()),
        ("gzip", sqli[..sqli.len() / 2].to_vec()),
        ("gzip", bad_crc),
        ("gzip", trailing),
        ("gzip", bytes(BENIGN_BR)),
        ("br", bytes(BENIGN_GZIP)),
        ("deflate", bytes(BENIGN_GZIP)),
        ("br", bytes(SQLI_BR)[..20].to_vec()),
    ] {
        let h = Box::leak(format!("Content-Encoding: {ce}").into_boxed_str());
        cases.push((vec![form, &*h], body, 503));
    }
    // Codings stacked, or unknown.
    for ce in [
        vec!["Content-Encoding: gzip, gzip"],
        vec!["Content-Encoding: gzip", "Content-Encoding: br"],
        vec!["Content-Encoding: compress"],
        vec!["Content-Encoding: zstd"],
    ] {
        let mut h = vec![form];
        h.extend(ce);
        cases.push((h, bytes(BENIGN_GZIP), 503));
    }
    // The Content-Type rules hold for a decoded body too.
    cases.push((
        vec![
            "Content-Type: application/json; charset=utf-16",
            "Content-Encoding: gzip",
        ],
        bytes(BENIGN_GZIP),
        503,
    ));
    // No body: nothing to decode.
    cases.push((vec![form, "Content-Encoding: gzip"], vec![], 200));
    // And a body sent as it is is read as before.
    cases.push((
        vec![form],
        b"q=1'+UNION+SELECT+password+FROM+users".to_vec(),
        403,
    ));
    cases.push((vec![form], b"name=hello".to_vec(), 200));
    cases
}

fn check(nginx: &Nginx, path: &str, what: &str) {
    check_cases(nginx, path, what, cases());
}

type Case = (Vec<&'static str>, Vec<u8>, u16);

fn check_cases(nginx: &Nginx, path: &str, what: &str, cases: Vec<Case>) {
    for (headers, body, want) in cases {
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

#[test]
fn a_zone_that_opts_in_decodes_gzip_deflate_and_br_within_its_limits_in_every_mode() {
    let undecidable = decompress_cases().iter().filter(|c| c.2 == 503).count() as u64;
    for mode in ["lua", "rust", "shadow"] {
        let nginx = Nginx::start_extra(&decompress_config(mode), false, EXTRA);
        check_cases(&nginx, "/", mode, decompress_cases());
        assert_eq!(
            nginx.counter("localhost", 0, "failed"),
            undecidable,
            "{mode}"
        );
        if mode == "rust" {
            check_cases(&nginx, "/nat/", "native", decompress_cases());
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
        // The first failures (a family logs 10 lines a second), each
        // saying why.
        let log = nginx.error_log();
        for why in [
            "an undecidable body: its gzip body decodes to more than 65536 bytes",
            "an undecidable body: its br body of 14 bytes decodes to more than 1000 times that",
            "an undecidable body: its gzip body ends inside its stream",
        ] {
            assert!(log.contains(why), "{mode}: no {why:?} in\n{log}");
        }
        nginx.assert_clean_log(&["an undecidable body", "could not decide"]);
    }
}
