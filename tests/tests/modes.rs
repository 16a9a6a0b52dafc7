//! Modes, fallback and counters, through the real nginx and Lua module.
use graft_tests::Nginx;
use serde_json::json;

fn rules() -> serde_json::Value {
    json!({ "rules": [
        { "from": "/old", "to": "/new" },
        { "from": "/blog/", "to": "https://blog.example.com/", "match": "prefix", "status": 308 },
        { "from": "/promo", "to": "/sale?src=promo", "status": 302 },
        { "from": "/tmp", "to": "/", "status": 307, "query": "drop" },
    ]})
}

fn config() -> String {
    let probe = json!({ "decline_on": "/decline", "error_on": "/error", "panic_on": "/panic" });
    json!({ "zones": {
        "lua.test": { "modules": [ { "module": "redirects", "mode": "lua", "config": rules() } ] },
        "rust.test": { "modules": [ { "module": "redirects", "mode": "rust", "config": rules() } ] },
        "shadow.test": { "modules": [ { "module": "redirects", "mode": "shadow", "config": rules() } ] },
        "probe.test": { "modules": [ { "module": "probe", "mode": "rust", "config": probe } ] },
        "probe-shadow.test": { "modules": [ { "module": "probe", "mode": "shadow" } ] },
        "pipeline.test": { "modules": [
            { "module": "redirects", "mode": "rust", "config": rules() },
            { "module": "probe", "mode": "lua" } ] },
    }})
    .to_string()
}

/// (request target, status, Location suffix; None: the origin answers).
const REDIRECT_CASES: &[(&str, u16, Option<&str>)] = &[
    ("/old", 301, Some("/new")),
    ("/old?a=1&b=2", 301, Some("/new?a=1&b=2")),
    (
        "/blog/2024/post?x=1",
        308,
        Some("https://blog.example.com/2024/post?x=1"),
    ),
    ("/promo?utm=1", 302, Some("/sale?src=promo&utm=1")),
    ("/tmp?secret=1", 307, Some("/")),
    ("/oldest", 200, None),
    ("/blog", 200, None),
];

#[test]
fn redirects_answer_alike_in_every_mode() {
    let nginx = Nginx::start(&config());
    for zone in ["lua.test", "rust.test", "shadow.test"] {
        for &(target, status, location) in REDIRECT_CASES {
            let r = nginx.get(zone, target);
            assert_eq!(r.status, status, "{zone} {target}: {}", r.text());
            match location {
                Some(loc) => {
                    let got = r.header("Location").expect("a Location");
                    assert!(
                        got.ends_with(loc),
                        "{zone} {target}: Location {got}, want …{loc}"
                    );
                }
                None => assert!(
                    r.text().starts_with("origin: "),
                    "{zone} {target}: {}",
                    r.text()
                ),
            }
        }
    }
    let n = REDIRECT_CASES.len() as u64;
    assert_eq!(nginx.counter("lua.test", 0, "lua"), n);
    assert_eq!(nginx.counter("lua.test", 0, "rust"), 0);
    assert_eq!(nginx.counter("rust.test", 0, "rust"), n);
    assert_eq!(nginx.counter("rust.test", 0, "fallback"), 0);
    assert_eq!(nginx.counter("shadow.test", 0, "shadow_match"), n);
    assert_eq!(nginx.counter("shadow.test", 0, "shadow_diff"), 0);
    assert_eq!(nginx.counter("shadow.test", 0, "lua"), n);
    nginx.assert_clean_log(&[]);
}

#[test]
fn rust_falls_back_to_lua_on_decline_error_and_panic() {
    let nginx = Nginx::start(&config());
    let workers = nginx.worker_pids();
    assert_eq!(workers.len(), 1);

    // (path, body, counter that grows besides fallback)
    let cases = [
        ("/decline/a", "lua /decline/a\n", "decline"),
        ("/error/b", "lua /error/b\n", "error"),
        ("/panic/c", "lua /panic/c\n", "panic"),
        ("/panic/d", "lua /panic/d\n", "panic"),
    ];
    for (path, body, _) in cases {
        let r = nginx.get("probe.test", path);
        assert_eq!((r.status, r.text().as_str()), (200, body));
        assert_eq!(r.header("X-Graft-Impl"), Some("lua"));
    }
    let r = nginx.get("probe.test", "/fine");
    assert_eq!(r.text(), "rust /fine\n");
    assert_eq!(r.header("X-Graft-Impl"), Some("rust"));

    assert_eq!(nginx.counter("probe.test", 0, "fallback"), 4);
    assert_eq!(nginx.counter("probe.test", 0, "decline"), 1);
    assert_eq!(nginx.counter("probe.test", 0, "error"), 1);
    assert_eq!(nginx.counter("probe.test", 0, "panic"), 2);
    assert_eq!(nginx.counter("probe.test", 0, "rust"), 1);
    assert_eq!(nginx.worker_pids(), workers, "a panic restarted the worker");

    let log = nginx.error_log();
    assert!(
        log.contains(
            r#"graft: zone "probe.test" module "probe" panicked: probe panics on /panic/c"#
        ),
        "{log}"
    );
    assert!(
        log.contains(
            r#"graft: zone "probe.test" module "probe" returned an error: probe fails on this path"#
        ),
        "{log}"
    );
    assert!(
        log.contains(r#"graft: zone "probe.test" module "probe" declined"#),
        "{log}"
    );
    nginx.assert_clean_log(&[
        "module \"probe\" panicked",
        "module \"probe\" returned an error",
    ]);
}

#[test]
fn shadow_serves_lua_and_logs_the_difference() {
    let nginx = Nginx::start(&config());
    let r = nginx.get("probe-shadow.test", "/x?y=1");
    assert_eq!(r.text(), "lua /x\n");
    assert_eq!(nginx.counter("probe-shadow.test", 0, "shadow_diff"), 1);
    assert_eq!(nginx.counter("probe-shadow.test", 0, "shadow_match"), 0);
    let log = nginx.error_log();
    let line = log
        .lines()
        .find(|l| l.contains("graft: shadow diff"))
        .unwrap_or_else(|| panic!("no shadow diff line:\n{log}"));
    assert!(line.contains("[warn]"), "{line}");
    assert!(
        line.contains(r#"zone "probe-shadow.test" module "probe" request "GET /x?y=1 HTTP/1.1""#),
        "{line}"
    );
    assert!(line.contains("lua: respond 200; X-Graft-Impl: lua; Content-Type: text/plain; body 7 bytes | rust: respond 200; X-Graft-Impl: rust; Content-Type: text/plain; body 8 bytes"), "{line}");
    nginx.assert_clean_log(&[]);
}

#[test]
fn modules_run_in_zone_order_and_a_response_ends_the_pipeline() {
    let nginx = Nginx::start(&config());
    let r = nginx.get("pipeline.test", "/old");
    assert_eq!(r.status, 301);
    assert_eq!(
        nginx.counter("pipeline.test", 1, "lua"),
        0,
        "probe ran after a redirect"
    );
    let r = nginx.get("pipeline.test", "/elsewhere");
    assert_eq!(r.text(), "lua /elsewhere\n");
    assert_eq!(nginx.counter("pipeline.test", 0, "rust"), 2);
    assert_eq!(nginx.counter("pipeline.test", 1, "lua"), 1);
    nginx.assert_clean_log(&[]);
}

#[test]
fn a_host_without_a_zone_goes_straight_to_the_origin() {
    let nginx = Nginx::start(&config());
    let r = nginx.get("nobody.test", "/old");
    assert_eq!(r.status, 200);
    assert!(r.text().starts_with("origin: /old\n"), "{}", r.text());
    nginx.assert_clean_log(&[]);
}

/// In shadow a Rust side that declines is counted as a decline, not as a
/// difference: a module that leaves some requests to Lua on purpose can
/// reach 0 differences, and a parity test says which requests decline.
#[test]
fn a_decline_in_shadow_is_not_a_difference() {
    use graft_tests::corpus::CorpusRequest;
    use graft_tests::parity::{shadow_parity, shadow_parity_declining, ZONE};
    // Both sides answer alike, but the Rust side declines under /d/.
    let config = json!({ "answer": { "status": 200, "body": "same\n" }, "decline_on": "/d/" });
    let requests: Vec<_> = ["/a", "/d/1", "/b?x=1", "/d/2"]
        .iter()
        .map(|t| CorpusRequest::get(ZONE, t))
        .collect();
    let declines = |r: &CorpusRequest| r.target.starts_with(b"/d/");
    shadow_parity_declining("probe", &config, &requests, declines).unwrap();
    // Declines nobody expected are named.
    let err = shadow_parity("probe", &config, &requests).unwrap_err();
    assert!(err.contains("/d/1") && err.contains("declined"), "{err}");
    // And a decline expected where the Rust side decided.
    let err = shadow_parity_declining("probe", &config, &requests, |_| true).unwrap_err();
    assert!(err.contains("/a") && err.contains("decided"), "{err}");
}
