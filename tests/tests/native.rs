//! The native pipeline (`graft_native on`): modules in nginx's own phases,
//! with no Lua in the request's path, handing the rest of the pipeline to
//! the Lua bridge where a step is not in Rust or Rust cannot serve it.
use graft_tests::Nginx;
use serde_json::json;

fn config() -> String {
    json!({ "zones": {
        "n.test": { "modules": [
            { "module": "url_normalize", "mode": "rust" },
            { "module": "waf", "mode": "rust", "config": {
                "rules": [ { "id": "curl", "when": { "field": "header:user-agent", "op": "prefix", "value": "curl/" }, "action": "log" } ],
                "signatures": ["script_injection"] } },
            { "module": "redirects", "mode": "rust", "config": { "rules": [ { "from": "/native/old", "to": "/native/page" } ] } },
            { "module": "headers", "mode": "rust", "config": { "rules": [
                { "request": [ { "set": "X-Edge", "value": "graft" } ], "response": [ { "set": "X-Frame-Options", "value": "DENY" } ] } ] } },
        ] },
        "mixed.test": { "modules": [
            { "module": "redirects", "mode": "rust", "config": { "rules": [ { "from": "/old", "to": "/new" } ] } },
            { "module": "probe", "mode": "lua" },
        ] },
        "fallback.test": { "modules": [
            { "module": "probe", "mode": "rust", "config": { "decline_on": "/decline", "panic_on": "/panic" } },
        ] },
        "native-fallback.test": { "modules": [
            { "module": "probe", "mode": "rust", "config": { "decline_on": "/native/dx", "panic_on": "/native/px" } },
            { "module": "headers", "mode": "rust", "config": { "rules": [ { "response": [ { "set": "X-Late", "value": "1" } ] } ] } },
        ] },
    }})
    .to_string()
}

#[test]
fn a_native_only_location_serves_without_lua() {
    let nginx = Nginx::start(&config());
    let r = nginx.get("n.test", "/native/page");
    assert_eq!((r.status, r.text().as_str()), (200, "native page\n"));
    assert_eq!(r.header("X-Frame-Options"), Some("DENY"));
    let r = nginx.get("n.test", "/native/a/../old?x=1");
    assert_eq!(r.status, 301);
    assert_eq!(r.header("Location"), Some("/native/page?x=1"));
    assert_eq!(
        nginx.get("n.test", "/native/page?q=%3Cscript%3E").status,
        403
    );
    // An index page is an internal redirect: the pipeline runs once, and
    // its response headers still apply.
    let r = nginx.get("n.test", "/native/");
    assert_eq!((r.status, r.text().as_str()), (200, "native origin\n"));
    assert_eq!(r.header("X-Frame-Options"), Some("DENY"));
    let r = nginx.raw(b"GET /native/page HTTP/1.1\r\nHost: n.test\r\nUser-Agent: curl/8\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 200);

    assert_eq!(
        nginx.counter("n.test", 1, "rust"),
        5,
        "waf ran once per request"
    );
    assert_eq!(nginx.counter("n.test", 1, "lua"), 0);
    let log = nginx.error_log();
    let line = log
        .lines()
        .find(|l| l.contains(r#"module "waf": rule "curl" matched"#))
        .expect("the waf's log line");
    assert!(!line.contains("[lua]"), "logged through Lua: {line}");
    nginx.assert_clean_log(&[]);
}

#[test]
fn the_bridge_resumes_where_the_native_pipeline_stops() {
    let nginx = Nginx::start_native(&config());
    assert_eq!(nginx.get("mixed.test", "/old").status, 301);
    let r = nginx.get("mixed.test", "/elsewhere");
    assert_eq!(r.text(), "lua /elsewhere\n");
    assert_eq!(nginx.counter("mixed.test", 0, "rust"), 2);
    assert_eq!(nginx.counter("mixed.test", 1, "lua"), 1);

    // All in Rust: Lua's access handler has nothing left to do.
    let r = nginx.get("n.test", "/hello");
    assert!(r.text().starts_with("origin: /hello\n"), "{}", r.text());
    assert!(r.text().contains("x-edge: graft\n"), "{}", r.text());
    assert_eq!(r.header("X-Frame-Options"), Some("DENY"));
    nginx.assert_clean_log(&[]);
}

#[test]
fn a_native_fallback_is_served_by_lua_once() {
    let nginx = Nginx::start_native(&config());
    let workers = nginx.worker_pids();
    let r = nginx.get("fallback.test", "/decline/x");
    assert_eq!(r.text(), "lua /decline/x\n");
    let r = nginx.get("fallback.test", "/panic/y");
    assert_eq!(r.text(), "lua /panic/y\n");
    let r = nginx.get("fallback.test", "/fine");
    assert_eq!(r.text(), "rust /fine\n");
    assert_eq!(nginx.counter("fallback.test", 0, "fallback"), 2);
    assert_eq!(
        nginx.counter("fallback.test", 0, "decline"),
        1,
        "Rust ran twice for one request"
    );
    assert_eq!(nginx.counter("fallback.test", 0, "panic"), 1);
    assert_eq!(nginx.counter("fallback.test", 0, "rust"), 1);
    assert_eq!(nginx.worker_pids(), workers);
    nginx.assert_clean_log(&[r#"module "probe" panicked"#]);
}

#[test]
fn without_lua_a_fallback_is_served_by_the_failure_policy_and_later_steps_run() {
    let nginx = Nginx::start(&config());
    let r = nginx.get("native-fallback.test", "/native/page");
    assert_eq!(r.text(), "rust /native/page\n");
    // The probe declines, then panics: with no Lua in this location its
    // failure policy (continue, the probe's default) serves it, counted as
    // failed; the request goes on to the static content and the steps
    // after it still run.
    for page in ["dx", "px"] {
        let r = nginx.get("native-fallback.test", &format!("/native/{page}"));
        assert_eq!((r.status, r.text()), (200, format!("native {page}\n")));
        assert_eq!(r.header("X-Late"), Some("1"));
    }
    assert_eq!(nginx.counter("native-fallback.test", 0, "fallback"), 2);
    assert_eq!(nginx.counter("native-fallback.test", 0, "failed"), 2);
    assert_eq!(nginx.counter("native-fallback.test", 0, "decline"), 1);
    assert_eq!(nginx.counter("native-fallback.test", 0, "panic"), 1);
    assert_eq!(nginx.counter("native-fallback.test", 1, "rust"), 2);
    nginx.assert_clean_log(&[r#"module "probe" panicked"#, "could not decide"]);
}
