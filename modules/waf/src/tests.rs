use super::*;
use graft_contract::{LocalWindows, OwnedRequest};
use serde_json::json;

fn decide(config: serde_json::Value, target: &str) -> Decision {
    let waf = Waf::from_config(&config).unwrap();
    let counters = LocalWindows::default();
    waf.on_request(
        &OwnedRequest::get("a.test", target),
        &Context::local(0, &counters),
    )
    .unwrap()
}

fn status(d: &Decision) -> Option<u16> {
    match d {
        Decision::Respond(r) => Some(r.status),
        _ => None,
    }
}

fn all_lists() -> serde_json::Value {
    json!({ "signatures": ["sql_injection", "path_traversal", "script_injection"] })
}

#[test]
fn signatures_catch_the_classics_in_path_and_args() {
    let hostile = [
        "/search?q=1%27%20UNION%20SELECT%20password%20FROM%20users",
        "/item?id=1%20or%201=1",
        "/static/../../etc/passwd",
        "/download?file=../../etc/passwd",
        "/x?f=%252e%252e%252f",
        "/comment?text=%3Cscript%3Ealert(1)%3C/script%3E",
        "/p?u=javascript:alert(1)",
        "/p?%3Cimg%20src=x%20onerror=alert(1)%3E=1",
        "/q?a=1;%20DROP%20TABLE%20users",
    ];
    for t in hostile {
        assert_eq!(status(&decide(all_lists(), t)), Some(403), "{t}");
    }
    let clean = [
        "/",
        "/search?q=union+station",
        "/blog/select-your-plan",
        "/a.b/c?x=1&y=2",
        "/script.js",
    ];
    for t in clean {
        assert_eq!(status(&decide(all_lists(), t)), None, "{t}");
    }
}

#[test]
fn rules_block_allow_and_log_in_order() {
    let config = json!({
        "rules": [
            { "id": "curl", "when": { "field": "arg:ua", "op": "equals", "value": "curl" }, "action": "log" },
            { "id": "office", "when": { "field": "arg:from", "op": "equals", "value": "office" }, "action": "allow" },
            { "id": "admin", "when": { "field": "path", "op": "prefix", "value": "/admin" }, "action": "block", "status": 401 },
        ],
        "signatures": ["script_injection"],
    });
    let d = decide(config.clone(), "/admin/x?ua=curl");
    assert_eq!(
        d,
        Decision::Respond(Response {
            status: 401,
            headers: vec![],
            body: vec![],
            log: vec!["rule \"admin\" blocked the request".into()],
        })
    );
    let d = decide(
        config.clone(),
        "/admin/x?from=office&ua=curl&q=%3Cscript%3E",
    );
    assert_eq!(
        d,
        Decision::Continue(Changes {
            log: vec!["rule \"curl\" matched".into()],
            ..Default::default()
        })
    );
    assert_eq!(status(&decide(config, "/p?q=%3Cscript%3E")), Some(403));
}

#[test]
fn signature_log_mode_and_list_order() {
    let config =
        json!({ "signatures": ["script_injection", "sql_injection"], "signature_action": "log" });
    let d = decide(config, "/p?a=1%20or%201=1&b=%3Cscript%3E");
    assert_eq!(
        d,
        Decision::Continue(Changes {
            log: vec!["signature \"script_injection\" matched".into()],
            ..Default::default()
        })
    );
}

#[test]
fn a_payload_after_thousands_of_arguments_is_caught() {
    let mut t = String::from("/p?");
    for i in 0..3000 {
        t.push_str(&format!("a{i}=1&"));
    }
    t.push_str("z=%3Cscript%3E");
    assert_eq!(status(&decide(all_lists(), &t)), Some(403));
}

#[test]
fn bad_configs_are_refused_naming_the_rule() {
    let cases = [
        (json!({ "signatures": ["sqli"] }), "signatures[0]"),
        (
            json!({ "rules": [ { "id": "a", "when": { "field": "path", "op": "regex", "value": "(" }, "action": "block" } ] }),
            "rules[0].when.value",
        ),
        (
            json!({ "rules": [ { "id": "a", "when": { "field": "path", "op": "equals", "value": "/" }, "action": "block", "status": 200 } ] }),
            "rules[0].status",
        ),
        (
            json!({ "rules": [ { "id": "a", "when": {}, "action": "drop" } ] }),
            "rules[0].action",
        ),
        (json!({ "signature_action": "allow" }), "signature_action"),
        (
            json!({ "rules": [ { "id": "a", "when": { "field": "path", "op": "regex", "value": "\\<zz" }, "action": "block" } ] }),
            "rules[0].when.value",
        ),
        (
            json!({ "rules": [
                { "id": "a", "when": { "field": "path", "op": "regex", "value": "^/a$" }, "action": "block" },
                { "id": "b", "when": { "not": { "field": "arg:q", "op": "regex", "value": "(?m)^x$" } }, "action": "log" },
            ] }),
            "rules[1].when.not.value",
        ),
    ];
    for (c, field) in cases {
        let e = Waf::from_config(&c).err().unwrap();
        assert_eq!(e.field, field, "{c}: {e}");
    }
}

#[test]
fn every_signature_compiles_alone() {
    for (name, list) in signature_lists() {
        // The Lua side joins a list into one alternation, where PCRE
        // refuses a group name used twice.
        let mut group_names = std::collections::HashSet::new();
        for p in list {
            let re = compile_regex(p).unwrap_or_else(|e| panic!("{name}: {p}: {e}"));
            for n in re.capture_names().flatten() {
                assert!(group_names.insert(n.to_string()), "{name}: group {n} twice");
            }
        }
    }
}

#[test]
fn a_rule_regex_pcre_reads_otherwise_is_refused_naming_it() {
    let config = json!({ "rules": [ { "id": "deny", "when": { "field": "path", "op": "regex", "value": "\\<zz" }, "action": "block" } ] });
    let e = Waf::from_config(&config).err().unwrap();
    assert_eq!(e.field, "rules[0].when.value");
    assert!(e.message.contains("`\\<`"), "{e}");
}

#[test]
fn a_signature_pcre_reads_otherwise_is_refused_naming_the_list() {
    let lists: HashMap<String, Vec<String>> = [
        ("fine".to_string(), vec!["(?i)<script\\b".to_string()]),
        (
            "angle".to_string(),
            vec!["x".to_string(), "\\<script".to_string()],
        ),
    ]
    .into_iter()
    .collect();
    let names = ["fine".to_string(), "angle".to_string()];
    let e = signature_patterns(&names, &lists).err().unwrap();
    assert_eq!(e.field, "signatures[1]");
    assert!(e.message.contains("\"angle\""), "{e}");
    assert!(e.message.contains("`\\<`"), "{e}");
    let (patterns, list_of) = signature_patterns(&names[..1], &lists).unwrap();
    assert_eq!((patterns, list_of), (vec!["(?i)<script\\b"], vec![0]));
}

/// The Lua side reads every regex with PCRE, whose `$` also matches before
/// a final newline: it gets `\z` wherever graft's pattern has a `$` anchor,
/// in rule conditions and in the signature patterns it is handed.
#[test]
fn lua_config_hands_pcre_the_very_end_for_dollar() {
    let config = json!({
        "rules": [
            { "id": "a", "when": { "any": [
                { "field": "path", "op": "regex", "value": "^/admin$" },
                { "field": "arg:q", "op": "equals", "value": "$" },
            ] }, "action": "block" },
        ],
        "signatures": ["path_traversal", "script_injection"],
    });
    let lua = <Waf as Configured>::lua_config(&config);
    assert_eq!(
        lua["rules"][0]["when"]["any"][0]["value"],
        json!("^/admin\\z")
    );
    assert_eq!(lua["rules"][0]["when"]["any"][1]["value"], json!("$"));
    assert_eq!(lua["signatures"][0]["name"], json!("path_traversal"));
    let patterns = lua["signatures"][0]["patterns"].as_array().unwrap();
    assert_eq!(patterns.len(), signature_lists()["path_traversal"].len());
    assert_eq!(patterns[0], json!("(^|[/\\\\])\\.\\.([/\\\\]|\\z)"));
    for (lua, rust) in patterns.iter().zip(&signature_lists()["path_traversal"]) {
        assert_eq!(lua.as_str().unwrap(), pcre_pattern(rust));
    }
    // The Rust side keeps the pattern as written.
    assert_eq!(
        config["rules"][0]["when"]["any"][0]["value"],
        json!("^/admin$")
    );
    let waf = Waf::from_config(&config).unwrap();
    let counters = LocalWindows::default();
    let mut req = OwnedRequest::get("a.test", "/admin");
    assert_eq!(
        status(&waf.on_request(&req, &Context::local(0, &counters)).unwrap()),
        Some(403)
    );
    req.path = b"/admin\n".to_vec();
    assert_eq!(
        status(&waf.on_request(&req, &Context::local(0, &counters)).unwrap()),
        None
    );
}

mod folded {
    use super::*;
    use proptest::prelude::*;

    /// Runs of rules on one field (mostly `equals` tests, so that runs of
    /// four and more fold; now and then a `prefix` test that breaks one),
    /// with any values and actions.
    fn rules() -> impl Strategy<Value = Vec<serde_json::Value>> {
        let run = (
            prop::sample::select(vec!["args", "arg:q", "path", "header:x-a", "method"]),
            prop::collection::vec(
                (
                    prop::sample::select(vec!["equals", "equals", "equals", "equals", "prefix"]),
                    prop::sample::select(vec!["a", "b", "/p", "GET", "q", "1", ""]),
                    prop::sample::select(vec!["block", "allow", "log", "log"]),
                ),
                1..9,
            ),
        );
        prop::collection::vec(run, 0..5).prop_map(|runs| {
            let mut rules = Vec::new();
            for (field, tests) in runs {
                for (op, value, action) in tests {
                    rules.push(json!({
                        "id": format!("r{}", rules.len()), "action": action,
                        "when": { "field": field, "op": op, "value": value } }));
                }
            }
            rules
        })
    }

    fn request() -> impl Strategy<Value = OwnedRequest> {
        (
            prop::sample::select(vec![
                "/p",
                "/p?q=a",
                "/x?a=b&q=1",
                "/?b",
                "/p?q=&q=b",
                "/?GET=a",
            ]),
            prop::option::of(prop::sample::select(vec!["a", "b", "/p", ""])),
        )
            .prop_map(|(target, header)| {
                let mut req = OwnedRequest::get("a.test", target);
                if let Some(h) = header {
                    req.headers.push((b"X-A".to_vec(), h.as_bytes().to_vec()));
                }
                req
            })
    }

    /// Folded runs decide exactly as the rules tested one by one: the
    /// same answer and the same log lines, in the same order.
    #[test]
    fn folding_changes_no_decision() {
        use proptest::test_runner::{Config, TestRunner};
        let mut runner = TestRunner::new(Config::with_cases(256));
        let folds = std::cell::Cell::new(0);
        let strategy = (rules(), prop::collection::vec(request(), 16));
        runner
            .run(&strategy, |(rules, reqs)| {
                let config = json!({ "rules": rules });
                let folded = Waf::from_config(&config).unwrap();
                folds.set(folds.get() + folded.folds.len());
                let mut one_by_one = Waf::from_config(&config).unwrap();
                one_by_one.folds = Vec::new();
                let windows = LocalWindows::default();
                let ctx = Context::local(0, &windows);
                for req in &reqs {
                    prop_assert_eq!(
                        folded.on_request(req, &ctx).unwrap(),
                        one_by_one.on_request(req, &ctx).unwrap(),
                        "{:?}",
                        req
                    );
                }
                Ok(())
            })
            .unwrap();
        assert!(
            folds.get() > 50,
            "too few runs folded to test: {}",
            folds.get()
        );
    }

    #[test]
    fn a_long_run_is_folded_into_one_lookup() {
        let rules: Vec<_> = (0..40)
            .map(|i| json!({ "id": format!("r{i}"), "action": "block",
                             "when": { "field": "args", "op": "equals", "value": format!("v{i}") } }))
            .collect();
        let waf = Waf::from_config(&json!({ "rules": rules })).unwrap();
        assert_eq!(waf.folds.len(), 1);
        assert_eq!((waf.folds[0].first, waf.folds[0].end), (0, 40));
        let d = decide(json!({ "rules": rules }), "/?x=v39");
        assert_eq!(status(&d), Some(403));
        let d = decide(json!({ "rules": rules }), "/?x=v40");
        assert_eq!(status(&d), None);
    }
}

fn decide_body(config: serde_json::Value, content_type: &str, body: &str) -> Decision {
    let waf = Waf::from_config(&config).unwrap();
    let mut req = OwnedRequest::get("a.test", "/");
    req.method = b"POST".to_vec();
    req.headers
        .push((b"Content-Type".to_vec(), content_type.as_bytes().to_vec()));
    req.body = Some(body.as_bytes().to_vec());
    let windows = LocalWindows::default();
    waf.on_request(&req, &Context::local(0, &windows)).unwrap()
}

#[test]
fn with_inspect_body_signatures_catch_form_and_json_bodies_at_any_depth() {
    let mut config = all_lists();
    config["inspect_body"] = json!(true);
    let form = "application/x-www-form-urlencoded";
    let json_ct = "application/json; charset=utf-8";
    for (ct, body) in [
        (form, "q=1%27%20UNION%20SELECT%20password%20FROM%20users"),
        (form, "a=1&q=1'+UNION+SELECT+password+FROM+users"),
        (json_ct, r#"{"q":"1' UNION SELECT password FROM users"}"#),
        (
            json_ct,
            r#"{"a":[{"b":[[{"c":"<script>alert(1)</script>"}]]}]}"#,
        ),
        (json_ct, r#"{"\u003cscript\u003e":1}"#),
        // Broken or cut JSON is read as far as it goes.
        (json_ct, r#"{"q": "../../etc/passwd"  ,,, "#),
    ] {
        assert_eq!(
            status(&decide_body(config.clone(), ct, body)),
            Some(403),
            "{ct}: {body}"
        );
    }
    for (ct, body) in [
        (form, "q=hello+world&page=2"),
        (json_ct, r#"{"q":"hello","n":[1,2,{"x":"y"}]}"#),
    ] {
        assert_eq!(
            status(&decide_body(config.clone(), ct, body)),
            None,
            "{body}"
        );
    }
    // Any other body is read as it is.
    for ct in ["text/plain", "multipart/form-data; boundary=x", ""] {
        assert_eq!(
            status(&decide_body(
                config.clone(),
                ct,
                "--x\r\n1' UNION SELECT password FROM users"
            )),
            Some(403),
            "{ct}"
        );
    }
    // Without inspect_body, signatures read path and query only.
    assert_eq!(
        status(&decide_body(
            all_lists(),
            form,
            "q=1'+UNION+SELECT+x+FROM+y"
        )),
        None
    );
    assert!(!Waf::from_config(&all_lists()).unwrap().wants_body());
    assert!(Waf::from_config(&config).unwrap().wants_body());
}

#[test]
fn rules_read_body_fields() {
    let config = json!({ "rules": [
        { "id": "no-admin-role", "when": { "field": "body_arg:role", "op": "equals", "value": "admin" }, "action": "block" },
        { "id": "no-json-debug", "when": { "field": "json", "op": "equals", "value": "debug" }, "action": "block", "status": 400 },
        { "id": "raw", "when": { "field": "body", "op": "prefix", "value": "MAGIC" }, "action": "block", "status": 418 } ] });
    assert!(Waf::from_config(&config).unwrap().wants_body());
    let form = "application/x-www-form-urlencoded";
    assert_eq!(
        status(&decide_body(config.clone(), form, "name=x&role=admin")),
        Some(403)
    );
    assert_eq!(
        status(&decide_body(
            config.clone(),
            "application/vnd.api+json",
            r#"{"mode":{"level":"debug"}}"#
        )),
        Some(400)
    );
    assert_eq!(
        status(&decide_body(config.clone(), "text/plain", "MAGIC!")),
        Some(418)
    );
    // A form field in a JSON body is not a form field.
    assert_eq!(
        status(&decide_body(
            config,
            "application/json",
            r#"{"x":"role=admin"}"#
        )),
        None
    );
}

#[test]
fn a_body_it_cannot_read_as_a_backend_may_is_its_error_never_a_pass() {
    let mut config = all_lists();
    config["inspect_body"] = json!(true);
    let waf = Waf::from_config(&config).unwrap();
    let windows = LocalWindows::default();
    for (name, value) in [
        ("Content-Encoding", "gzip"),
        ("Content-Type", "application/json; charset=utf-16"),
        ("Content-Type", "application/json, text/plain"),
    ] {
        let mut req = OwnedRequest::get("a.test", "/");
        req.method = b"POST".to_vec();
        req.headers
            .push((name.as_bytes().to_vec(), value.as_bytes().to_vec()));
        req.body = Some(b"q=hello".to_vec());
        let err = waf
            .on_request(&req, &Context::local(0, &windows))
            .unwrap_err();
        assert!(
            err.message.contains("an undecidable body"),
            "{}",
            err.message
        );
    }
    // JSON a lenient parser reads past the scanner: the raw bytes.
    let d = decide_body(
        config,
        "application/json",
        "{\"a\":1} 1' UNION SELECT password FROM users",
    );
    assert_eq!(status(&d), Some(403));
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zlib(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn raw_deflate(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn brotli(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut out = Vec::new();
    {
        let mut w = ::brotli::CompressorWriter::new(&mut out, 4096, 9, 22);
        w.write_all(data).unwrap();
    }
    out
}

fn decompressing() -> serde_json::Value {
    let mut config = all_lists();
    config["inspect_body"] = json!(true);
    config["decompress"] = json!({ "max_bytes": 65536, "max_ratio": 100 });
    config
}

fn run_encoded(
    config: &serde_json::Value,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<Decision, ModuleError> {
    let waf = Waf::from_config(config).unwrap();
    let mut req = OwnedRequest::get("a.test", "/");
    req.method = b"POST".to_vec();
    for (n, v) in headers {
        req.headers
            .push((n.as_bytes().to_vec(), v.as_bytes().to_vec()));
    }
    req.body = Some(body);
    let windows = LocalWindows::default();
    waf.on_request(&req, &Context::local(0, &windows))
}

const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");
const SQLI_FORM: &[u8] = b"q=1'+UNION+SELECT+password+FROM+users";

#[test]
fn with_decompress_a_gzip_deflate_or_br_body_is_inspected_decoded() {
    let config = decompressing();
    let json_ct = ("Content-Type", "application/json");
    let json_sqli = br#"{"a":{"q":"1' UNION SELECT password FROM users"}}"#;
    for (ce, body) in [
        ("gzip", gzip(SQLI_FORM)),
        ("x-gzip", gzip(SQLI_FORM)),
        ("deflate", zlib(SQLI_FORM)),
        ("deflate", raw_deflate(SQLI_FORM)),
        ("br", brotli(SQLI_FORM)),
        ("identity, br", brotli(SQLI_FORM)),
    ] {
        let d = run_encoded(&config, &[FORM, ("Content-Encoding", ce)], body).unwrap();
        assert_eq!(status(&d), Some(403), "{ce}");
        let d = run_encoded(&config, &[FORM, ("Content-Encoding", ce)], {
            match ce {
                "deflate" => zlib(b"name=hello"),
                "br" | "identity, br" => brotli(b"name=hello"),
                _ => gzip(b"name=hello"),
            }
        })
        .unwrap();
        assert_eq!(status(&d), None, "{ce}: a benign body passes");
    }
    for (ce, body) in [
        ("gzip", gzip(json_sqli)),
        ("deflate", zlib(json_sqli)),
        ("br", brotli(json_sqli)),
    ] {
        let d = run_encoded(&config, &[json_ct, ("Content-Encoding", ce)], body).unwrap();
        assert_eq!(status(&d), Some(403), "json {ce}");
    }
    // Without decompress, the same bodies are undecidable.
    let mut off = all_lists();
    off["inspect_body"] = json!(true);
    let e = run_encoded(&off, &[FORM, ("Content-Encoding", "gzip")], gzip(SQLI_FORM)).unwrap_err();
    assert!(
        e.message
            .contains("its Content-Encoding is \"gzip\": graft reads no compressed body"),
        "{}",
        e.message
    );
}

#[test]
fn with_decompress_rules_read_the_decoded_body() {
    let mut config = decompressing();
    config["rules"] = json!([
        { "id": "role", "when": { "field": "body_arg:role", "op": "equals", "value": "admin" }, "action": "block", "status": 401 },
        { "id": "magic", "when": { "field": "body", "op": "prefix", "value": "MAGIC" }, "action": "block", "status": 418 },
    ]);
    let d = run_encoded(
        &config,
        &[FORM, ("Content-Encoding", "gzip")],
        gzip(b"a=1&role=admin"),
    )
    .unwrap();
    assert_eq!(status(&d), Some(401));
    let d = run_encoded(
        &config,
        &[("Content-Encoding", "br")],
        brotli(b"MAGIC and more"),
    )
    .unwrap();
    assert_eq!(status(&d), Some(418));
}

#[test]
fn with_decompress_the_bytes_as_sent_are_matched_too() {
    // A payload in the gzip header's comment: not in the decoded body.
    use std::io::Write;
    let mut e = flate2::GzBuilder::new()
        .comment("1' UNION SELECT password FROM users")
        .write(Vec::new(), flate2::Compression::fast());
    e.write_all(b"name=hello").unwrap();
    let d = run_encoded(
        &decompressing(),
        &[FORM, ("Content-Encoding", "gzip")],
        e.finish().unwrap(),
    )
    .unwrap();
    assert_eq!(status(&d), Some(403));
}

#[test]
fn with_decompress_a_body_past_a_limit_corrupt_cut_or_stacked_is_the_step_s_error() {
    let config = decompressing();
    let zeros = vec![0u8; 1 << 20];
    let sqli = gzip(SQLI_FORM);
    let mut bad_crc = sqli.clone();
    let n = bad_crc.len();
    bad_crc[n - 8] ^= 1;
    for (headers, body, why) in [
        (
            vec![FORM, ("Content-Encoding", "gzip")],
            gzip(&zeros),
            "its gzip body decodes to more than 65536 bytes (decompress.max_bytes)",
        ),
        (
            vec![FORM, ("Content-Encoding", "br")],
            brotli(&zeros),
            "times that (decompress.max_ratio)",
        ),
        (
            vec![FORM, ("Content-Encoding", "gzip")],
            sqli[..sqli.len() - 4].to_vec(),
            "its gzip body ends inside its stream",
        ),
        (
            vec![FORM, ("Content-Encoding", "gzip")],
            bad_crc,
            "its gzip body is corrupt: its CRC-32 does not match",
        ),
        (
            vec![FORM, ("Content-Encoding", "gzip, gzip")],
            gzip(&gzip(b"a=1")),
            "stacks 2 codings",
        ),
        (
            vec![
                FORM,
                ("Content-Encoding", "gzip"),
                ("Content-Encoding", "br"),
            ],
            gzip(b"a=1"),
            "its Content-Encoding \"gzip, br\" stacks 2 codings",
        ),
        (
            vec![FORM, ("Content-Encoding", "compress")],
            b"a=1".to_vec(),
            "is not one graft decodes",
        ),
        (
            vec![
                ("Content-Type", "application/json; charset=utf-16"),
                ("Content-Encoding", "gzip"),
            ],
            gzip(b"{}"),
            "is not ASCII-compatible",
        ),
    ] {
        let e = run_encoded(&config, &headers, body).unwrap_err();
        assert!(
            e.message.starts_with("an undecidable body: ") && e.message.contains(why),
            "{headers:?}: {}",
            e.message
        );
    }
    // A body sent as it is reads as before.
    let d = run_encoded(&config, &[FORM], SQLI_FORM.to_vec()).unwrap();
    assert_eq!(status(&d), Some(403));
}

#[test]
fn decompress_is_checked_at_load() {
    for (decompress, field) in [
        (
            json!({ "max_bytes": 0, "max_ratio": 10 }),
            "decompress.max_bytes",
        ),
        (
            json!({ "max_bytes": 1 << 30, "max_ratio": 10 }),
            "decompress.max_bytes",
        ),
        (
            json!({ "max_bytes": 10, "max_ratio": 0 }),
            "decompress.max_ratio",
        ),
        (json!({ "max_bytes": 10 }), "decompress"),
        (
            json!({ "max_bytes": 10, "max_ratio": 10, "formats": ["gzip"] }),
            "decompress",
        ),
    ] {
        let mut config = decompressing();
        config["decompress"] = decompress;
        let e = Waf::from_config(&config).err().expect("refused");
        assert!(e.field.starts_with(field), "{field}: {e}");
    }
    // A WAF that reads no body has none to decode.
    let mut config = all_lists();
    config["decompress"] = json!({ "max_bytes": 1024, "max_ratio": 10 });
    let e = Waf::from_config(&config).err().expect("refused");
    assert_eq!(e.field, "decompress");
}
