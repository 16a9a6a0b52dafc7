//! Fail safe: no failure, hostile request or operator action switches a
//! module off in silence. A step that cannot decide is served by its
//! failure policy, counted as `failed`, logged within a budget, and the
//! steps after it still run; the pipeline runs once per main request.
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use graft_tests::{metric, one_zone, Nginx};
use serde_json::json;

/// A WAF step (Rust) that blocks paths under `prefix` with 403.
fn waf_blocking(prefix: &str) -> serde_json::Value {
    json!({ "module": "waf", "mode": "rust", "config": { "rules": [
        { "id": "deny", "when": { "field": "path", "op": "prefix", "value": prefix }, "action": "block", "status": 403 } ] } })
}

/// What starting nginx printed, and whether it started.
fn start_output(nginx: &Nginx) -> (bool, String) {
    let out = nginx.run(&[]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        nginx.error_log()
    );
    (out.status.success(), text)
}

#[test]
fn a_missing_legacy_module_refuses_start_and_reload_naming_zone_and_module() {
    let config = one_zone(
        "a.test",
        json!([{ "module": "waf", "mode": "rust", "config": { "rules": [] } }]),
    );
    let nginx = Nginx::prepare(&config);
    let legacy = nginx.prefix.join("graft/lua/graft/legacy/waf.lua");
    let kept = std::fs::read(&legacy).unwrap();
    std::fs::remove_file(&legacy).unwrap();
    let (ok, text) = start_output(&nginx);
    assert!(!ok, "nginx started without the waf's Lua side:\n{text}");
    assert!(
        text.contains("zone \"a.test\"") && text.contains("\"waf\""),
        "the error names neither zone nor module:\n{text}"
    );
    // Started with it, then a reload without it: refused, the old serves.
    std::fs::write(&legacy, kept).unwrap();
    let (ok, text) = start_output(&nginx);
    assert!(ok, "{text}");
    std::thread::sleep(Duration::from_millis(200));
    std::fs::remove_file(&legacy).unwrap();
    let workers = nginx.worker_pids();
    let refusals = || nginx.error_log().matches("init_by_lua error").count();
    let before = refusals();
    let out = nginx.run(&["-s", "reload"]);
    assert!(out.status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while refusals() == before {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            nginx.error_log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(nginx.worker_pids(), workers, "the reload was not refused");
    assert_eq!(nginx.get("a.test", "/").status, 200);
}

#[test]
fn a_legacy_file_that_is_not_a_module_refuses_start_and_a_live_apply() {
    let nginx = Nginx::prepare(&one_zone(
        "a.test",
        json!([{ "module": "waf", "mode": "rust", "config": { "rules": [] } }]),
    ));
    let legacy = nginx.prefix.join("graft/lua/graft/legacy/ip_access.lua");
    std::fs::write(&legacy, "return true\n").unwrap();
    // Not named by the configuration: nginx starts.
    let (ok, text) = start_output(&nginx);
    assert!(ok, "{text}");
    // A live apply naming it is refused whole, and counted.
    nginx.write_config(&one_zone(
        "a.test",
        json!([{ "module": "ip_access", "mode": "rust", "config": { "deny": ["127.0.0.1"] } }]),
    ));
    let r = nginx.admin("POST", "/graft/admin/apply");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("\"ip_access\" has no new(config, zone)"),
        "{}",
        r.text()
    );
    assert_eq!(
        nginx.get("a.test", "/").status,
        200,
        "the old configuration serves"
    );
    let metrics = nginx.get("a.test", "/graft/metrics").text();
    assert_eq!(
        metric(&metrics, "graft_configuration_refused_total{}"),
        Some(1),
        "{metrics}"
    );
}

#[test]
fn a_legacy_module_refusing_its_configuration_refuses_start() {
    let nginx = Nginx::prepare(&one_zone(
        "a.test",
        json!([{ "module": "probe", "mode": "rust", "config": { "lua_refuse": true } }]),
    ));
    let (ok, text) = start_output(&nginx);
    assert!(!ok, "{text}");
    assert!(
        text.contains("zone \"a.test\"") && text.contains("lua_refuse"),
        "{text}"
    );
}

#[test]
fn a_throwing_lua_side_is_served_by_the_failure_policy_and_later_steps_run() {
    let config = json!({ "zones": {
        // probe continues by default policy; the WAF after it still blocks.
        "c.test": { "modules": [
            { "module": "probe", "mode": "lua", "config": { "continue": true, "lua_error_on": "/x", "lua_bad_on": "/bad" } },
            waf_blocking("/x/admin"),
        ] },
        // A WAF whose Lua side throws fails closed (its default: 503).
        "w.test": { "modules": [
            { "module": "probe", "mode": "lua", "config": { "continue": true, "lua_error_on": "/" }, "on_failure": { "respond": 503 } },
            waf_blocking("/never"),
        ] },
    }});
    let nginx = Nginx::start(&config.to_string());
    let r = nginx.get("c.test", "/x/admin");
    assert_eq!(r.status, 403, "the WAF after a failing step did not run");
    let r = nginx.get("c.test", "/x/page");
    assert_eq!(r.status, 200, "{}", r.text());
    let r = nginx.get("c.test", "/bad");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(nginx.counter("c.test", 0, "failed"), 3);
    let r = nginx.get("w.test", "/page");
    assert_eq!(r.status, 503);
    assert_eq!(nginx.counter("w.test", 0, "failed"), 1);
    let metrics = nginx.get("localhost", "/graft/metrics").text();
    assert_eq!(
        metric(
            &metrics,
            r#"graft_requests_total{zone="c.test",module="probe",path="failed"}"#
        ),
        Some(3),
        "{metrics}"
    );
    let log = nginx.error_log();
    assert!(
        log.contains("could not decide: its Lua side threw"),
        "no failure line:\n{log}"
    );
    nginx.assert_clean_log(&["could not decide"]);
}

#[test]
fn access_controls_fail_closed_by_default() {
    // ip_access in rust mode whose Rust side cannot run and whose Lua side
    // throws: without a policy in the file, the module's own (503).
    let config = one_zone(
        "a.test",
        json!([
            { "module": "probe", "mode": "rust", "config": { "continue": true, "error_on": "/", "lua_error_on": "/" } },
            { "module": "ip_access", "mode": "lua", "config": { "deny": ["127.0.0.0/8"] } },
        ]),
    );
    let nginx = Nginx::prepare(&config);
    // The ip_access Lua side throws at run time.
    let legacy = nginx.prefix.join("graft/lua/graft/legacy/ip_access.lua");
    let text = std::fs::read_to_string(&legacy).unwrap();
    let broken = text.replacen(
        "function _M.on_request(",
        "function _M.on_request(...) error(\"broken\") end\nfunction _M.unused(",
        1,
    );
    assert_ne!(text, broken, "ip_access.lua has no on_request to break");
    std::fs::write(&legacy, broken).unwrap();
    let nginx_started = nginx;
    let out = nginx_started.run(&[]);
    assert!(out.status.success(), "{}", nginx_started.error_log());
    std::thread::sleep(Duration::from_millis(200));
    let r = nginx_started.get("a.test", "/");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(nginx_started.counter("a.test", 0, "failed"), 1);
    assert_eq!(nginx_started.counter("a.test", 1, "failed"), 1);
}

const NATIVE_EXTRA: &str = r#"
        location /nat/ {
            graft_native on;
            alias @PREFIX@/html/native/;
        }
"#;

#[test]
fn in_a_native_location_a_failing_step_never_skips_the_later_ones() {
    let config = json!({ "zones": {
        "n.test": { "modules": [
            { "module": "probe", "mode": "rust", "config": { "continue": true, "error_on": "/nat/e", "panic_on": "/nat/p", "decline_on": "/nat/d" } },
            { "module": "probe", "mode": "lua", "config": { "continue": true } },
            waf_blocking("/nat/"),
        ] },
        "policy.test": { "modules": [
            { "module": "probe", "mode": "rust", "config": { "continue": true, "error_on": "/nat/" }, "on_failure": { "respond": 418 } },
            waf_blocking("/nat/"),
        ] },
        "redirect.test": { "modules": [
            { "module": "redirects", "mode": "rust", "config": { "rules": [ { "from": "/nat/old", "to": "/new", "match": "prefix" } ] } },
            { "module": "waf", "mode": "rust", "config": { "rules": [], "signatures": ["script_injection"] } },
        ] },
    }});
    let nginx = Nginx::start_extra(&config.to_string(), false, NATIVE_EXTRA);
    for path in ["/nat/e", "/nat/p", "/nat/d", "/nat/index.html"] {
        let r = nginx.get("n.test", path);
        assert_eq!(
            r.status, 403,
            "{path}: the WAF after a failing step did not run"
        );
    }
    // Step 1 (mode lua) cannot be served here: 4 failures; step 0 failed 3.
    assert_eq!(nginx.counter("n.test", 0, "failed"), 3);
    assert_eq!(nginx.counter("n.test", 1, "failed"), 4);
    let r = nginx.get("policy.test", "/nat/index.html");
    assert_eq!(r.status, 418, "the step's own policy answers");
    // A request made to trip a redirect (a Location over its limit) must
    // not carry a script past the WAF configured after it.
    let mut target = b"/nat/old?".to_vec();
    target.extend(std::iter::repeat_n(0x80u8, 2800));
    target.extend_from_slice(b"&q=<script>alert(1)</script>");
    let mut req = b"GET ".to_vec();
    req.extend_from_slice(&target);
    req.extend_from_slice(b" HTTP/1.1\r\nHost: redirect.test\r\nConnection: close\r\n\r\n");
    let r = nginx.raw(&req);
    assert_eq!(r.status, 403, "{}", r.text());
    nginx.assert_clean_log(&["could not decide", "returned an error:", "panicked"]);
}

const REDIRECT_EXTRA: &str = r#"
        location /tf/ {
            try_files /nonexistent @app;
        }
        location /ep/ {
            error_page 404 = @app;
            return 404;
        }
        location @app {
            access_by_lua_block { require("graft").access() }
            content_by_lua_block { require("graft.echo")() }
        }
        location /once/ {
            access_by_lua_block { require("graft").access() }
            try_files /nonexistent @app;
        }
        location /xa/ {
            proxy_pass http://127.0.0.1:@PORT@/xa-origin/;
        }
        location /xa-origin/ {
            add_header X-Accel-Redirect /protected/admin;
            return 200 "origin\n";
        }
        location /protected/ {
            internal;
            access_by_lua_block { require("graft").access() }
            content_by_lua_block { require("graft.echo")() }
        }
        location /ar/ {
            auth_request /auth;
            access_by_lua_block { require("graft").access() }
            content_by_lua_block { require("graft.echo")() }
        }
        location = /auth {
            access_by_lua_block { require("graft").access() }
            content_by_lua_block { ngx.exit(200) }
        }
        location /arn/ {
            graft_native on;
            auth_request /auth-native;
            alias @PREFIX@/html/native/;
        }
        location = /auth-native {
            graft_native on;
            alias @PREFIX@/html/native/index.html;
        }
"#;

#[test]
fn the_pipeline_runs_once_per_main_request_however_it_arrives() {
    let config = json!({ "zones": { "r.test": { "modules": [
        { "module": "probe", "mode": "lua", "config": { "continue": true } },
        { "module": "waf", "mode": "rust", "config": { "rules": [
            { "id": "deny", "when": { "field": "path", "op": "contains", "value": "admin" }, "action": "block", "status": 403 } ] } },
        { "module": "headers", "mode": "rust", "config": { "rules": [
            { "response": [ { "set": "Strict-Transport-Security", "value": "max-age=60" } ] } ] } },
    ] } } });
    let nginx = Nginx::start_extra(&config.to_string(), false, REDIRECT_EXTRA);
    let lua_count = || nginx.counter("r.test", 0, "lua");
    for path in ["/tf/admin", "/ep/admin"] {
        let r = nginx.get("r.test", path);
        assert_eq!(
            r.status, 403,
            "{path}: an internal redirect skipped the pipeline"
        );
    }
    let r = nginx.get("r.test", "/xa/admin");
    assert_eq!(r.status, 403, "X-Accel-Redirect skipped the pipeline");
    // Ran at /once/, then redirected into @app: once, not twice.
    let before = lua_count();
    let r = nginx.get("r.test", "/once/page");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(lua_count() - before, 1, "the pipeline ran twice");
    // auth_request: the subrequest does not run the pipeline.
    let before = lua_count();
    let r = nginx.get("r.test", "/ar/page");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(lua_count() - before, 1, "the subrequest ran the pipeline");
    nginx.assert_clean_log(&[]);
}

#[test]
fn a_subrequest_never_takes_the_main_requests_response_headers() {
    let config = one_zone(
        "s.test",
        json!([
            { "module": "headers", "mode": "rust", "config": { "rules": [
                { "response": [ { "set": "Strict-Transport-Security", "value": "max-age=60" } ] } ] } },
        ]),
    );
    let nginx = Nginx::start_extra(&config, false, REDIRECT_EXTRA);
    let r = nginx.get("s.test", "/arn/index.html");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("Strict-Transport-Security"),
        Some("max-age=60"),
        "the auth subrequest took the main response's header: {:?}",
        r.headers
    );
}

const HEADERS_EXTRA: &str = r#"
        location /hp/ {
            graft_native on;
            alias @PREFIX@/html/native/;
            add_header X-Seen "host=$host|h=$http_host|c=$cookie_a|a=$http_authorization|x=$proxy_add_x_forwarded_for|u=$http_user_agent|e=$http_x_edge";
        }
"#;

#[test]
fn native_request_header_edits_keep_nginxs_own_pointers() {
    let config = one_zone(
        "h.test",
        json!([
            { "module": "headers", "mode": "rust", "config": { "rules": [
                { "request": [
                    { "remove": "Cookie" }, { "remove": "Authorization" }, { "remove": "X-Forwarded-For" },
                    { "set": "X-Edge", "value": "graft" }, { "set": "User-Agent", "value": "graft-ua" } ] } ] } },
        ]),
    );
    let nginx = Nginx::start_extra(&config, false, HEADERS_EXTRA);
    let r = nginx.raw(
        b"GET /hp/index.html HTTP/1.1\r\nCookie: a=secret\r\nAuthorization: Basic c2VjcmV0\r\nX-Forwarded-For: 10.9.9.9\r\nUser-Agent: curl/8\r\nHost: h.test\r\nAccept: */*\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = r.header("X-Seen").unwrap_or_default().to_string();
    assert_eq!(
        seen, "host=h.test|h=h.test|c=|a=|x=127.0.0.1|u=graft-ua|e=graft",
        "nginx read stale header pointers"
    );
}

#[test]
fn a_native_answer_sends_one_content_type_and_discards_the_body() {
    let config = one_zone("b.test", json!([{ "module": "probe", "mode": "rust" }]));
    let nginx = Nginx::start_extra(&config, false, NATIVE_EXTRA);
    // A POST whose body is another request: answered natively, the body
    // must be read and dropped, never taken for the next request.
    let smuggled = "GET /nat/smuggled HTTP/1.1\r\nHost: b.test\r\n\r\n";
    let request = format!(
        "POST /nat/x HTTP/1.1\r\nHost: b.test\r\nContent-Length: {}\r\n\r\n{smuggled}",
        smuggled.len()
    );
    let mut s = TcpStream::connect(("127.0.0.1", nginx.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(n) = s.read(&mut chunk) {
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    assert_eq!(
        text.matches("HTTP/1.1 ").count(),
        1,
        "the body was served as a second request:\n{text}"
    );
    assert!(text.contains("rust /nat/x"), "{text}");
    assert_eq!(
        text.to_ascii_lowercase().matches("content-type:").count(),
        1,
        "{text}"
    );
}

const FFI_EXTRA: &str = r#"
        location = /ffi-kill {
            content_by_lua_block {
                local ffi = require "ffi"
                require "graft"
                local r = require("resty.core.base").get_request()
                local buf = ffi.new("unsigned char[16]")
                local len = ffi.new("size_t[1]", 16)
                local module = ngx.var.arg_module
                local rc = ffi.C.graft_ffi_kill(r, module, #module, nil, 0, 1, buf, len)
                ngx.say(rc, " ", tonumber(len[0]), " ", ffi.string(buf, math.min(tonumber(len[0]), 16)))
            }
        }
"#;

#[test]
fn the_admin_api_never_answers_with_more_than_it_wrote() {
    let nginx = Nginx::start_extra(&one_zone("a.test", json!([])), false, FFI_EXTRA);
    let long = "a".repeat(5000);
    let r = nginx.admin("POST", &format!("/graft/admin/kill?module={long}"));
    assert!((400..500).contains(&r.status), "{}", r.status);
    assert!(r.body.len() < 1024, "{} bytes of reply", r.body.len());
    assert!(
        std::str::from_utf8(&r.body).is_ok(),
        "the reply holds bytes nobody wrote"
    );
    let name = "b".repeat(200);
    let r = nginx.admin("POST", &format!("/graft/admin/kill?module={name}"));
    assert_eq!(r.status, 400);
    assert_eq!(r.text(), format!("no module \"{name}\"\n"));
    // Below the admin API: an error message longer than the caller's
    // buffer is cut to it, and the length says what was written.
    let ffi_kill = |auth: &str| {
        nginx.raw(
            format!(
                "GET /ffi-kill?module={} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n",
                "c".repeat(100)
            )
            .as_bytes(),
        )
    };
    let r = ffi_kill(&format!(
        "Authorization: Bearer {}\r\n",
        nginx.admin_token()
    ));
    assert_eq!(r.text(), "-1 16 no module \"ccccc\n");
    // And a Lua side that calls it without the admin guard's approval
    // (an older admin.lua, a handler of its own) changes nothing.
    let r = ffi_kill("");
    assert_eq!(r.text(), "-1 16 refused by the a\n");
}

#[test]
fn per_request_log_lines_are_bounded() {
    let config = one_zone(
        "l.test",
        json!([
            { "module": "waf", "mode": "rust", "config": { "rules": [
                { "id": "deny", "when": { "field": "path", "op": "prefix", "value": "/" }, "action": "block", "status": 403 } ] } },
        ]),
    );
    let nginx = Nginx::start(&config);
    let started = std::time::Instant::now();
    for _ in 0..300 {
        assert_eq!(nginx.get("l.test", "/x").status, 403);
    }
    let seconds = started.elapsed().as_secs() + 1;
    let log = nginx.error_log();
    let lines = log.matches("module \"waf\": ").count() as u64;
    assert!(
        lines <= 10 * (seconds + 1),
        "{lines} block lines in {seconds} s:\n{log}"
    );
    if lines < 300 {
        // Whatever was left out is said, once a second allows it.
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(nginx.get("l.test", "/x").status, 403);
        assert!(
            nginx.error_log().contains("left out of the log"),
            "{}",
            nginx.error_log()
        );
    }
}

/// One worker serving `/a` → `/second` applied live over a file saying
/// `/first`.
fn applied_live_over_its_file() -> Nginx {
    let rules = |to: &str| {
        json!({ "zones": { "localhost": { "modules": [
            { "module": "redirects", "mode": "rust", "config": { "rules": [ { "from": "/a", "to": to } ] } } ] } } })
        .to_string()
    };
    let nginx = Nginx::start_workers(&rules("/first"), 1);
    nginx.write_config(&rules("/second"));
    let r = nginx.admin("POST", "/graft/admin/apply");
    assert_eq!(r.status, 200, "{}", r.text());
    nginx
}

/// Kills nginx's worker outright and waits for the master's new one.
fn kill_its_worker(nginx: &Nginx) {
    let before = nginx.worker_pids();
    assert!(std::process::Command::new("kill")
        .args(["-KILL", &before[0].to_string()])
        .status()
        .unwrap()
        .success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while nginx.worker_pids().is_empty() || nginx.worker_pids() == before {
        assert!(std::time::Instant::now() < deadline, "no respawn");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_worker_respawned_after_a_refused_reload_serves_what_was_applied() {
    let nginx = applied_live_over_its_file();
    // A reload that reads the graft file, then fails further on in
    // nginx's own configuration: the running cycle goes on.
    let conf = nginx.prefix.join("nginx.conf");
    let good = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(&conf, format!("{good}\nno_such_directive on;\n")).unwrap();
    nginx.reload_refused();
    assert!(
        nginx
            .error_log()
            .contains("unknown directive \"no_such_directive\""),
        "{}",
        nginx.error_log()
    );
    std::fs::write(&conf, good).unwrap();
    kill_its_worker(&nginx);
    // Its first tick (250 ms) would load a live apply it missed.
    std::thread::sleep(Duration::from_millis(600));
    let r = nginx.get("localhost", "/a");
    assert_eq!(
        r.header("Location"),
        Some("/second"),
        "the respawned worker serves the file, not what was applied live"
    );
    // The refused reload's [emerg] and the killed worker's [alert] only.
    for line in nginx.error_log().lines() {
        if ["[alert]", "[crit]", "[emerg]", "[error]"]
            .iter()
            .any(|l| line.contains(l))
        {
            assert!(
                line.contains("no_such_directive") || line.contains("exited on signal 9"),
                "{line}"
            );
        }
    }
}

#[test]
fn a_worker_respawned_after_a_live_apply_serves_what_was_applied() {
    let nginx = applied_live_over_its_file();
    // A live apply whose Lua twin cannot be built is refused whole.
    nginx.write_config(
        &json!({ "zones": { "localhost": { "modules": [
            { "module": "probe", "mode": "rust", "config": { "lua_refuse": true } } ] } } })
        .to_string(),
    );
    let r = nginx.admin("POST", "/graft/admin/apply");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("zone \"localhost\"") && r.text().contains("lua_refuse"),
        "{}",
        r.text()
    );
    // Refused on the Rust side too (not JSON): each refusal is counted.
    nginx.write_config("{ not json");
    assert_eq!(nginx.admin("POST", "/graft/admin/apply").status, 400);
    let metrics = nginx.get("localhost", "/graft/metrics").text();
    assert_eq!(
        metric(&metrics, "graft_configuration_refused_total{}"),
        Some(2),
        "{metrics}"
    );
    kill_its_worker(&nginx);
    let r = nginx.get("localhost", "/a");
    assert_eq!(
        r.header("Location"),
        Some("/second"),
        "the respawned worker serves the configuration from before the apply"
    );
    // A body sent to the apply is the configuration: garbage is refused
    // as a file of garbage would be, and the running one goes on.
    let r = nginx.admin_body(
        "POST",
        "/graft/admin/apply",
        "x".repeat(64 * 1024).as_bytes(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text()
            .starts_with("refused, the running configuration goes on: "),
        "{}",
        r.text()
    );
    assert_eq!(
        nginx.get("localhost", "/a").header("Location"),
        Some("/second")
    );
    // One over the 64 MiB a live apply takes is refused before it is read.
    let mut s = TcpStream::connect(("127.0.0.1", nginx.admin_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = write!(
        s,
        "POST /graft/admin/apply HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        (64 << 20) + 1
    );
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(
        String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 413"),
        "{}",
        String::from_utf8_lossy(&buf[..buf.len().min(200)])
    );
}

/// For every mode (and the native pipeline), a test module at step 0
/// that declines, errors, panics, or whose Lua side throws or answers no
/// decision, on every request: step 1, a WAF, still runs and decides as
/// it would have.
#[test]
fn whatever_fails_at_a_step_the_steps_after_it_still_decide() {
    let kinds = ["decline", "error", "panic", "lua_error", "lua_bad"];
    let waf = json!({ "module": "waf", "mode": "rust", "config": { "rules": [
        { "id": "deny", "when": { "field": "path", "op": "contains", "value": "admin" }, "action": "block", "status": 403 } ] } });
    let mut zones = serde_json::Map::new();
    let mut cases = Vec::new();
    for mode in ["lua", "rust", "shadow", "canary"] {
        for kind in kinds {
            let zone = format!("{mode}-{}.test", kind.replace('_', "-"));
            let mut config = json!({ "continue": true });
            config[format!("{kind}_on")] = json!("/");
            let mut step = json!({ "module": "probe", "mode": mode, "config": config });
            if mode == "canary" {
                step["percent"] = json!(50);
            }
            zones.insert(zone.clone(), json!({ "modules": [ step, waf ] }));
            cases.push(zone);
        }
    }
    // `location /` runs the native pipeline and then the Lua bridge;
    // `/nat/` the native pipeline alone.
    let nginx = Nginx::start_extra(&json!({ "zones": zones }).to_string(), true, NATIVE_EXTRA);
    for zone in &cases {
        for (path, want) in [
            ("/k/admin", 403),
            ("/k/page", 200),
            ("/nat/admin", 403),
            ("/nat/index.html", 200),
        ] {
            let r = nginx.get(zone, path);
            assert_eq!(r.status, want, "{zone} {path}: {}", r.text());
        }
    }
    nginx.assert_clean_log(&["could not decide", "returned an error:", "panicked"]);
}

#[test]
fn a_regex_pcre_and_rust_read_differently_is_refused_at_load() {
    let nginx = Nginx::prepare(&one_zone(
        "a.test",
        json!([{ "module": "waf", "mode": "shadow", "config": { "rules": [
            { "id": "zz", "when": { "field": "path", "op": "regex", "value": "\\<zz" }, "action": "block" } ] } }]),
    ));
    let (ok, text) = nginx.test_config();
    assert!(
        !ok,
        "nginx -t passed a pattern the engines read apart:\n{text}"
    );
    assert!(
        text.contains("zone \"a.test\"")
            && text.contains("\"waf\"")
            && text.contains("rules[0].when.value"),
        "{text}"
    );
}

/// The README's `make run`, from a clone in a directory only its owner
/// can enter (as `mktemp -d` makes, or root's home): nginx's workers run
/// as another user, and still serve.
#[test]
fn make_run_serves_from_a_private_clone() {
    let root = graft_tests::root();
    let private = std::env::temp_dir().join(format!("graft-private-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&private);
    std::fs::create_dir_all(&private).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let clone = private.join("graft");
    graft_tests::run_ok(
        std::process::Command::new("git")
            .args(["clone", "-q", "--no-hardlinks"])
            .arg(&root)
            .arg(&clone),
    );
    // The working tree's Lua side and template, which the test is about.
    for f in ["lua", "nginx", "Makefile"] {
        let _ = std::process::Command::new("cp")
            .args(["-R"])
            .arg(root.join(f))
            .arg(&clone)
            .status();
    }
    let (port, admin) = (graft_tests::free_port(), graft_tests::free_port());
    let run_prefix = std::env::temp_dir().join(format!("graft-run-test-{}", std::process::id()));
    // `-o build`: the module is the one already built (building it again
    // in the clone would take minutes and test nothing more here).
    let make = |target: &str| {
        std::process::Command::new("make")
            .args(["-s", "-o", "build", target])
            .arg(format!("RUN_PORT={port}"))
            .arg(format!("ADMIN_PORT={admin}"))
            .arg(format!("RUN_PREFIX={}", run_prefix.display()))
            .arg(format!(
                "GRAFT_MODULE={}",
                graft_tests::module_path().display()
            ))
            .current_dir(&clone)
            .output()
            .unwrap()
    };
    let out = make("run");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /page HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let _ = make("stop");
    std::thread::sleep(Duration::from_millis(300));
    let _ = std::fs::remove_dir_all(&private);
    let _ = std::fs::remove_dir_all(&run_prefix);
    let response = String::from_utf8_lossy(&buf);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

#[test]
fn response_headers_nginx_writes_itself_are_sent_once_on_both_paths() {
    let config = one_zone(
        "o.test",
        json!([
            { "module": "headers", "mode": "rust", "config": { "rules": [
                { "response": [ { "set": "Server", "value": "graft-edge" },
                                { "set": "Content-Type", "value": "text/x-graft" } ] } ] } },
        ]),
    );
    let nginx = Nginx::start_extra(&config, false, NATIVE_EXTRA);
    // The Lua bridge (location /) and the native pipeline alone (/nat/).
    for path in ["/page", "/nat/index.html"] {
        let r = nginx.get("o.test", path);
        assert_eq!(r.status, 200, "{path}");
        for (name, want) in [("server", "graft-edge"), ("content-type", "text/x-graft")] {
            let values: Vec<&str> = r
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
                .collect();
            assert_eq!(values, vec![want], "{path}: {name}: {:?}", r.headers);
        }
    }
}

const EDGE_EXTRA: &str = r#"
        location /en/ {
            graft_native on;
            error_page 503 /en-error;
            alias @PREFIX@/html/native/;
        }
        location = /en-error {
            access_by_lua_block { require("graft").access() }
            content_by_lua_block { require("graft.echo")() }
        }
        location /lr/ {
            access_by_lua_block { require("graft").access() }
            try_files /nonexistent @plain;
        }
        location @plain {
            content_by_lua_block { require("graft.echo")() }
        }
        location /sa/ {
            graft_native on;
            satisfy any;
            allow 127.0.0.1;
            deny all;
            alias @PREFIX@/html/native/;
        }
"#;

fn edge_config() -> String {
    let waf = |status: u16| {
        json!({ "module": "waf", "mode": "rust", "config": { "rules": [
            { "id": "deny", "when": { "field": "path", "op": "contains", "value": "admin" }, "action": "block", "status": status } ] } })
    };
    json!({ "zones": {
        "a.test": { "modules": [
            { "module": "headers", "mode": "rust", "config": { "rules": [ { "request": [ { "set": "X-A", "value": "1" } ] } ] } },
            { "module": "probe", "mode": "lua", "config": { "continue": true } },
            { "module": "waf", "mode": "lua", "config": { "rules": [
                { "id": "deny", "when": { "field": "path", "op": "contains", "value": "admin" }, "action": "block", "status": 403 } ] } },
        ] },
        "b.test": { "modules": [] },
        "e.test": { "modules": [ waf(503) ] },
        "h.test": { "modules": [
            { "module": "headers", "mode": "lua", "config": { "rules": [
                { "response": [ { "set": "Strict-Transport-Security", "value": "max-age=60" } ] } ] } },
        ] },
        "s.test": { "modules": [ waf(403) ] },
    } })
    .to_string()
}

#[test]
fn the_bridge_resumes_the_zone_the_native_pipeline_chose() {
    let nginx = Nginx::start_extra(&edge_config(), true, EDGE_EXTRA);
    // The request line names a.test, the Host header b.test: nginx serves
    // a.test, and the Lua bridge resumes a.test's steps after the native
    // header edit, not b.test's.
    let r =
        nginx.raw(b"GET http://a.test/admin HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n");
    assert_eq!(
        r.status,
        403,
        "the bridge resumed another zone: {}",
        r.text()
    );
}

#[test]
fn a_native_answer_redirected_to_an_error_page_runs_the_pipeline_once() {
    let nginx = Nginx::start_extra(&edge_config(), true, EDGE_EXTRA);
    let r = nginx.get("e.test", "/en/admin");
    assert_eq!(r.status, 503);
    assert_eq!(
        nginx.counter("e.test", 0, "rust"),
        1,
        "the pipeline ran twice"
    );
}

#[test]
fn response_headers_decided_in_lua_outlive_an_internal_redirect() {
    let nginx = Nginx::start_extra(&edge_config(), true, EDGE_EXTRA);
    let r = nginx.get("h.test", "/lr/page");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("Strict-Transport-Security"),
        Some("max-age=60"),
        "{:?}",
        r.headers
    );
}

#[test]
fn under_satisfy_any_an_allow_never_overrules_a_native_block() {
    let nginx = Nginx::start_extra(&edge_config(), true, EDGE_EXTRA);
    let r = nginx.get("s.test", "/sa/admin");
    assert_eq!(r.status, 403);
    assert_eq!(nginx.get("s.test", "/sa/index.html").status, 200);
}

#[test]
fn a_configuration_the_shared_tables_cannot_count_is_refused() {
    let modules: Vec<_> = (0..50)
        .map(|_| json!({ "module": "headers", "mode": "rust", "config": { "rules": [] } }))
        .collect();
    let config = json!({ "zones": {
        "a.test": { "modules": modules },
        "b.test": { "modules": modules },
        "c.test": { "modules": modules },
        "d.test": { "modules": modules },
        "e.test": { "modules": modules },
    } });
    let nginx = Nginx::prepare(&config.to_string());
    let conf = nginx.prefix.join("nginx.conf");
    let text = std::fs::read_to_string(&conf).unwrap();
    let small = text.replacen(
        "    graft_config ",
        "    graft_shared_memory 64k 64k;\n    graft_config ",
        1,
    );
    assert_ne!(small, text);
    std::fs::write(&conf, &small).unwrap();
    let (ok, out) = nginx.test_config();
    assert!(!ok, "{out}");
    // 50 steps in each of 5 zones, and one module.
    let needed =
        250 * graft_engine::counters::KEYS_PER_STEP + graft_engine::counters::KEYS_PER_MODULE;
    assert!(
        out.contains(&format!("250 steps need {needed} shared counters"))
            && out.contains("graft_shared_memory"),
        "{out}"
    );
    // Room enough: it starts; a reload asking for another size is refused
    // (the tables outlive reloads) and the running configuration serves.
    let roomy = text.replacen(
        "    graft_config ",
        "    graft_shared_memory 1m 64k;\n    graft_config ",
        1,
    );
    std::fs::write(&conf, &roomy).unwrap();
    let (ok, out) = start_output(&nginx);
    assert!(ok, "{out}");
    std::thread::sleep(Duration::from_millis(200));
    std::fs::write(&conf, small.replace("64k 64k", "2m 64k")).unwrap();
    nginx.reload_refused();
    assert!(
        nginx.error_log().contains("a new size needs a restart"),
        "{}",
        nginx.error_log()
    );
    assert_eq!(nginx.get("a.test", "/").status, 200);
    // After graft_config (which maps the tables), the directive is refused.
    let line_end = text.find("    graft_config ").unwrap();
    let line_end = line_end + text[line_end..].find('\n').unwrap() + 1;
    let late = format!(
        "{}    graft_shared_memory 1m;\n{}",
        &text[..line_end],
        &text[line_end..]
    );
    std::fs::write(&conf, &late).unwrap();
    let (ok, out) = nginx.test_config();
    assert!(!ok, "{out}");
    assert!(out.contains("must come before graft_config"), "{out}");
}
