//! graft-edge in front of FL1: the real nginx with graft and Lua (the
//! harness's), or a stand-in that records what reached it, and an origin
//! that does the same. What graft-edge serves itself, what it passes to
//! FL1 (from which step, with which header), what comes back, what happens
//! when FL1 is down, and the files it refuses.
mod support;

use serde_json::json;
use support::{fl1, Edge, Recorder, TOKEN};

/// A step with a response-header phase: one header added to every
/// response, one removed, and one on a 403 only.
fn on_response(mode: &str) -> serde_json::Value {
    json!({ "module": "headers", "mode": mode, "config": { "rules": [
        { "on_response": {}, "response": [ { "add": "X-Once", "value": "1" }, { "remove": "X-Served-By" } ] },
        { "on_response": { "status": [403] }, "response": [ { "set": "X-Denied", "value": "yes" } ] } ] } })
}

/// Zones for every case: a probe in rust (declining and panicking on some
/// paths), the same in lua, two steps (a header change, then a probe that
/// lets the request on), and steps whose failure policy answers or lets
/// the request on when FL1 cannot be reached.
fn graft() -> String {
    let headers = json!({ "module": "headers", "mode": "rust", "config": { "rules": [
        { "request": [ { "set": "X-Step0", "value": "ran" } ],
          "response": [ { "set": "X-Edge-Step0", "value": "ran" } ] } ] } });
    json!({ "zones": {
        "rust.test": { "modules": [
            { "module": "probe", "mode": "rust", "config": { "decline_on": "/decline", "panic_on": "/panic" } } ] },
        "lua.test": { "modules": [ { "module": "probe", "mode": "lua" } ] },
        "two.test": { "modules": [ headers,
            { "module": "probe", "mode": "rust", "config": { "continue": true, "decline_on": "/decline" } } ] },
        "closed.test": { "modules": [
            { "module": "probe", "mode": "lua", "on_failure": { "respond": 503 } } ] },
        "open.test": { "modules": [
            { "module": "probe", "mode": "lua", "on_failure": "continue" }, headers ] },
        "ip.test": { "modules": [
            { "module": "ip_access", "mode": "lua", "config": { "deny": ["127.0.0.2/32"] } } ] },
        "ipr.test": { "modules": [
            { "module": "ip_access", "mode": "rust", "config": { "deny": ["127.0.0.2/32"] } } ] },
        "resp.test": { "modules": [ on_response("rust"),
            { "module": "probe", "mode": "rust", "config": { "continue": true, "decline_on": "/decline" } },
            { "module": "ip_access", "mode": "rust", "config": { "deny": ["127.0.0.1/32"] } } ] },
        "respl.test": { "modules": [ on_response("lua") ] }
    } })
    .to_string()
}

fn origins(origin: &Recorder) -> serde_json::Value {
    json!({ "default": origin.addr() })
}

#[test]
fn a_rust_step_answers_from_graft_edge_and_a_lua_step_from_fl1() {
    let fl1 = fl1(&graft());
    let origin = Recorder::start("origin");
    let edge = Edge::start(
        &graft(),
        origins(&origin),
        &format!("127.0.0.1:{}", fl1.port),
    );

    let r = edge.get("rust.test", "/x");
    assert_eq!((r.status, r.text().as_str()), (200, "rust /x\n"));
    assert_eq!(r.header("X-Graft-Impl"), Some("rust"));
    assert_eq!(r.header("Content-Length"), Some("8"));

    // Lua's: FL1 answers, and its answer comes back as FL1 gave it.
    let direct = fl1.get("lua.test", "/x");
    let r = edge.get("lua.test", "/x");
    assert_eq!((r.status, r.text()), (direct.status, direct.text()));
    assert_eq!(r.text(), "lua /x\n");
    for name in ["X-Graft-Impl", "Content-Type", "Content-Length"] {
        assert_eq!(r.header(name), direct.header(name), "{name}");
    }
    assert_eq!(origin.count(), 0, "neither went to the origin");

    let m = edge.metrics();
    for (series, n) in [
        (
            r#"graft_requests_total{zone="rust.test",module="probe",path="rust"}"#,
            1,
        ),
        (
            r#"graft_requests_total{zone="lua.test",module="probe",path="lua"}"#,
            0,
        ),
        (r#"graft_edge_requests_total{zone="rust.test"}"#, 1),
        (r#"graft_edge_requests_total{zone="lua.test"}"#, 1),
        (
            r#"graft_edge_passed_total{zone="lua.test",module="probe",reason="mode"}"#,
            1,
        ),
        (
            r#"graft_edge_passed_total{zone="rust.test",module="probe",reason="mode"}"#,
            0,
        ),
    ] {
        assert_eq!(graft_tests::metric(&m, series), Some(n), "{series}\n{m}");
    }
    // FL1 served lua.test's step, and counted it there.
    assert_eq!(fl1.counter("lua.test", 0, "lua"), 2);
    assert_eq!(fl1.counter("rust.test", 0, "rust"), 0);
    fl1.assert_clean_log(&[]);
}

#[test]
fn a_rust_step_that_declines_or_panics_passes_to_fl1_from_that_step() {
    let fl1 = fl1(&graft());
    let origin = Recorder::start("origin");
    let edge = Edge::start(
        &graft(),
        origins(&origin),
        &format!("127.0.0.1:{}", fl1.port),
    );

    // FL1 runs the step again (it holds no graft_edge_key here) and its
    // Rust side declines again: its Lua side serves.
    let r = edge.get("rust.test", "/decline/a");
    assert_eq!((r.status, r.text().as_str()), (200, "lua /decline/a\n"));
    let r = edge.get("rust.test", "/panic/a");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), edge.log());
    assert_eq!(r.header("X-Graft-Impl"), Some("lua"));
    // A panic took one request: the next is served.
    let r = edge.get("rust.test", "/fine");
    assert_eq!(r.text(), "rust /fine\n");

    // Step 1 declines: FL1 takes it from there, step 0's change made here
    // (and counted here only), step 1's Lua side serving.
    let r = edge.get("two.test", "/decline");
    let text = r.text().to_ascii_lowercase();
    assert!(
        text.contains("x-step0: ran") && text.contains("x-probe: lua"),
        "{text}"
    );
    assert!(
        !text.contains("graft-edge"),
        "the key reached the origin: {text}"
    );
    assert_eq!(r.header("X-Edge-Step0"), Some("ran"));
    assert_eq!(
        fl1.counter("two.test", 0, "rust"),
        0,
        "step 0 ran in FL1 too"
    );
    assert_eq!(fl1.counter("two.test", 1, "fallback"), 1);
    let fl1_metrics = fl1.get("localhost", "/graft/metrics").text();
    assert_eq!(
        graft_tests::metric(
            &fl1_metrics,
            r#"graft_edge_handoffs_total{result="accepted"}"#
        ),
        Some(3),
        "{fl1_metrics}"
    );

    let m = edge.metrics();
    for (series, n) in [
        (
            r#"graft_edge_passed_total{zone="two.test",module="probe",reason="decline"}"#,
            1,
        ),
        (
            r#"graft_requests_total{zone="two.test",module="headers",path="rust"}"#,
            1,
        ),
        (
            r#"graft_edge_passed_total{zone="rust.test",module="probe",reason="decline"}"#,
            1,
        ),
        (
            r#"graft_edge_passed_total{zone="rust.test",module="probe",reason="panic"}"#,
            1,
        ),
        (
            r#"graft_requests_total{zone="rust.test",module="probe",path="fallback"}"#,
            2,
        ),
        (
            r#"graft_requests_total{zone="rust.test",module="probe",path="rust"}"#,
            1,
        ),
        (
            r#"graft_rust_outcomes_total{zone="rust.test",module="probe",outcome="panic"}"#,
            1,
        ),
        (
            r#"graft_rust_outcomes_total{zone="rust.test",module="probe",outcome="decline"}"#,
            1,
        ),
    ] {
        assert_eq!(graft_tests::metric(&m, series), Some(n), "{series}\n{m}");
    }
    let log = edge.log();
    assert!(
        log.contains(r#"zone "rust.test" module "probe" panicked: probe panics on /panic/a"#),
        "{log}"
    );
    assert!(log.contains("passed to FL1 from step 0"), "{log}");
    // FL1 ran the panicking step again (from step 0): its own panic, caught.
    fl1.assert_clean_log(&["panicked"]);
}

/// A GET from `client` (a loopback address) through graft-edge.
fn get_from(edge: &Edge, client: [u8; 4], host: &str) -> graft_tests::Response {
    get_target_from(edge, client, host, "/who")
}

fn get_target_from(
    edge: &Edge,
    client: [u8; 4],
    host: &str,
    target: &str,
) -> graft_tests::Response {
    let req = graft_engine::corpus::CorpusRequest {
        method: b"GET".to_vec(),
        host: host.as_bytes().to_vec(),
        target: target.as_bytes().to_vec(),
        headers: Vec::new(),
        client: Some(client.into()),
        body: None,
    };
    let r = graft_tests::replay::send(edge.port, &req).unwrap();
    graft_tests::Response {
        status: r.status,
        headers: r.headers,
        body: r.body,
    }
}

#[test]
fn fl1_s_modules_see_the_client_s_address_not_graft_edge_s() {
    let fl1 = fl1(&graft());
    let origin = Recorder::start("origin");
    let edge = Edge::start(
        &graft(),
        origins(&origin),
        &format!("127.0.0.1:{}", fl1.port),
    );
    // ip_access in lua: FL1's Lua side judges the client graft-edge names.
    assert_eq!(get_from(&edge, [127, 0, 0, 2], "ip.test").status, 403);
    let r = get_from(&edge, [127, 0, 0, 3], "ip.test");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(fl1.counter("ip.test", 0, "lua"), 2);
    // In rust, graft-edge judges it itself.
    assert_eq!(get_from(&edge, [127, 0, 0, 2], "ipr.test").status, 403);
    assert_eq!(
        get_from(&edge, [127, 0, 0, 3], "ipr.test").text(),
        "origin /who 0\n"
    );
    assert_eq!(fl1.counter("ipr.test", 0, "rust"), 0);
    fl1.assert_clean_log(&[]);
}

#[test]
fn the_response_header_phase_runs_once_where_the_response_is_made() {
    let fl1 = fl1(&graft());
    let origin = Recorder::start("origin");
    let edge = Edge::start(
        &graft(),
        origins(&origin),
        &format!("127.0.0.1:{}", fl1.port),
    );
    // graft-edge's own answer (step 2 denies 127.0.0.1): the phase runs here.
    let r = edge.get("resp.test", "/x");
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.header("X-Denied"), Some("yes"));
    assert_eq!(r.header("X-Once"), Some("1"));
    // From a client graft-edge lets through, to the origin: here too.
    let r = get_from(&edge, [127, 0, 0, 2], "resp.test");
    assert_eq!(r.text(), "origin /who 0\n");
    assert_eq!(
        r.header("X-Served-By"),
        None,
        "the origin's header was removed"
    );
    let once: Vec<_> = r
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("X-Once"))
        .collect();
    assert_eq!(once.len(), 1, "{:?}", r.headers);
    // A response FL1 makes: FL1 runs the phase, once, and graft-edge leaves it.
    for (host, target) in [("respl.test", "/l"), ("resp.test", "/decline")] {
        let r = get_target_from(&edge, [127, 0, 0, 2], host, target);
        assert_eq!(r.status, 200, "{host}: {}", r.text());
        let once: Vec<_> = r
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("X-Once"))
            .collect();
        assert_eq!(once.len(), 1, "{host}: {:?}", r.headers);
    }
    assert_eq!(
        edge.metric(r#"graft_requests_total{zone="resp.test",module="headers",path="failed"}"#),
        0
    );
    fl1.assert_clean_log(&[]);
}

#[test]
fn fl1_gets_the_step_to_start_from_and_never_a_clients_header() {
    let fl1 = Recorder::start("fl1");
    let origin = Recorder::start("origin");
    let edge = Edge::start(&graft(), origins(&origin), &fl1.addr());
    let forged = "Graft-Edge: from=9; zone=two.test; key=forged\r\n";

    // Both steps in Rust: the origin, with step 0's change, and no header.
    let r = edge.get_with("two.test", "/ok", forged);
    assert_eq!(r.text(), "origin /ok 0\n");
    assert_eq!(
        r.header("X-Edge-Step0"),
        Some("ran"),
        "step 0's response change"
    );
    let seen = origin.last();
    assert_eq!(seen.headers("X-Step0"), ["ran"]);
    assert_eq!(seen.headers("X-Probe"), ["rust"]);
    assert!(seen.headers("Graft-Edge").is_empty(), "{}", seen.head);
    assert_eq!(seen.headers("X-Forwarded-For"), ["127.0.0.1"]);

    // Step 1 declines: FL1 takes it from step 1, with step 0's change.
    let r = edge.get_with("two.test", "/decline", forged);
    assert_eq!(r.text(), "fl1 /decline 0\n");
    assert_eq!(r.header("X-Edge-Step0"), Some("ran"));
    let seen = fl1.last();
    assert_eq!(
        seen.handoff(),
        ("two.test".into(), 1, true),
        "{}",
        seen.head
    );
    assert_eq!(seen.headers("X-Step0"), ["ran"]);

    // A zone FL1 serves from its first step: the request as sent.
    let r = edge.get_with("lua.test", "/l", forged);
    assert_eq!(r.text(), "fl1 /l 0\n");
    let seen = fl1.last();
    assert_eq!(seen.handoff(), ("lua.test".into(), 0, false));
    assert!(seen.headers("X-Step0").is_empty());

    // No zone for the Host: FL1 takes it as sent, with no hand-off to judge.
    let r = edge.get_with("nowhere.test", "/n", forged);
    assert_eq!(r.text(), "fl1 /n 0\n");
    assert!(
        fl1.last().headers("Graft-Edge").is_empty(),
        "{}",
        fl1.last().head
    );
    assert_eq!(edge.metric(r#"graft_edge_requests_total{zone=""}"#), 1);
    // ... and counted as passed, so that the passed series over the
    // requests series is the share FL1 still serves.
    assert_eq!(
        edge.metric(r#"graft_edge_passed_total{zone="",module="",reason="zone"}"#),
        1
    );
    assert_eq!(
        edge.metric(r#"graft_edge_passed_total{zone="two.test",module="probe",reason="decline"}"#),
        1
    );
    assert_eq!(origin.count(), 1);
}

#[test]
fn with_fl1_down_each_step_s_failure_policy_serves() {
    // Nothing listens on FL1's port.
    let closed = graft_tests::free_port();
    let origin = Recorder::start("origin");
    let edge = Edge::start(&graft(), origins(&origin), &format!("127.0.0.1:{closed}"));

    let r = edge.get("closed.test", "/c");
    assert_eq!(r.status, 503, "{}\n{}", r.text(), edge.log());
    assert!(
        r.text().contains("503 Service Temporarily Unavailable"),
        "{}",
        r.text()
    );

    // A policy that lets the request on: the later steps run here.
    let r = edge.get("open.test", "/o");
    assert_eq!(r.text(), "origin /o 0\n", "{}", edge.log());
    assert_eq!(r.header("X-Edge-Step0"), Some("ran"));
    assert_eq!(origin.last().headers("X-Step0"), ["ran"]);

    let m = edge.metrics();
    for (series, n) in [
        (r#"graft_edge_fl1_unreachable_total{zone="closed.test"}"#, 1),
        (r#"graft_edge_fl1_unreachable_total{zone="open.test"}"#, 1),
        (
            r#"graft_requests_total{zone="closed.test",module="probe",path="failed"}"#,
            1,
        ),
        (
            r#"graft_requests_total{zone="open.test",module="probe",path="failed"}"#,
            1,
        ),
        (
            r#"graft_requests_total{zone="open.test",module="headers",path="rust"}"#,
            1,
        ),
    ] {
        assert_eq!(graft_tests::metric(&m, series), Some(n), "{series}\n{m}");
    }
    let log = edge.log();
    assert!(log.contains("cannot be reached"), "{log}");
    assert!(
        log.contains(r#"zone "closed.test" module "probe" could not decide"#),
        "{log}"
    );
}

#[test]
fn the_admin_listener_serves_metrics_and_guards_the_admin_api() {
    let origin = Recorder::start("origin");
    let edge = Edge::start(&graft(), origins(&origin), &origin.addr());
    assert!(edge.metrics().contains("# TYPE graft_edge_passed counter"));
    let page = edge.admin("/graft/status", "");
    assert_eq!(page.header("Content-Type"), Some("text/html"));
    assert!(page.text().contains("/graft/counters"));
    let counters = edge.admin("/graft/counters", "");
    assert!(counters.text().starts_with('{'), "{}", counters.text());
    let bearer = format!("Authorization: Bearer {TOKEN}\r\n");
    for (path, extra, status) in [
        ("/graft/admin/totals", "", 401),
        (
            "/graft/admin/totals",
            "Authorization: Bearer wrong-token-0123456789abcdef0123\r\n",
            401,
        ),
        (
            "/graft/admin/totals",
            &*format!("{bearer}Origin: http://evil.test\r\n"),
            403,
        ),
        ("/graft/admin/totals", &*bearer, 200),
        ("/graft/admin/status", &*bearer, 200),
        ("/graft/admin/kill?module=probe", &*bearer, 405),
        ("/graft/admin/apply", &*bearer, 405),
        ("/graft/admin/nothing", &*bearer, 404),
    ] {
        let r = edge.admin(path, extra);
        assert_eq!(r.status, status, "{path} {extra:?}: {}", r.text());
    }
    let totals = edge.admin("/graft/admin/totals", &bearer).text();
    assert!(
        totals.contains(r#"graft_requests_total{path="rust"}"#),
        "{totals}"
    );
    let status: serde_json::Value =
        serde_json::from_str(&edge.admin("/graft/admin/status", &bearer).text()).unwrap();
    assert!(status["zones"]["rust.test"].is_array(), "{status}");
    assert_eq!(
        edge.metric(r#"graft_admin_refused_total{reason="token"}"#),
        2
    );
    assert_eq!(
        edge.metric(r#"graft_admin_refused_total{reason="browser"}"#),
        1
    );
}

#[test]
fn a_kill_switch_sends_a_module_s_requests_to_fl1_and_back() {
    let fl1 = Recorder::start("fl1");
    let origin = Recorder::start("origin");
    let edge = Edge::start(&graft(), origins(&origin), &fl1.addr());
    let bearer = format!("Authorization: Bearer {TOKEN}\r\n");
    let kill = edge.admin_call("POST", "/graft/admin/kill?module=probe&zone=rust.test", "");
    assert_eq!(kill.status, 401, "no token, no switch");
    assert_eq!(edge.get("rust.test", "/k").text(), "rust /k\n");
    let kill = edge.admin_call(
        "POST",
        "/graft/admin/kill?module=probe&zone=rust.test",
        &bearer,
    );
    assert_eq!((kill.status, kill.text().as_str()), (200, "killed\n"));
    assert_eq!(edge.get("rust.test", "/k").text(), "fl1 /k 0\n");
    assert_eq!(fl1.last().handoff(), ("rust.test".into(), 0, false));
    // Every zone's probe, then none.
    assert_eq!(
        edge.admin_call(
            "POST",
            "/graft/admin/revive?module=probe&zone=rust.test",
            &bearer
        )
        .status,
        200
    );
    assert_eq!(
        edge.admin_call("POST", "/graft/admin/kill?module=probe", &bearer)
            .status,
        200
    );
    assert_eq!(edge.get("two.test", "/k").text(), "fl1 /k 0\n");
    assert_eq!(fl1.last().handoff(), ("two.test".into(), 1, false));
    assert_eq!(
        edge.admin_call("POST", "/graft/admin/revive?module=probe", &bearer)
            .status,
        200
    );
    assert_eq!(edge.get("rust.test", "/k").text(), "rust /k\n");
    let bad = edge.admin_call("POST", "/graft/admin/kill?module=nothing", &bearer);
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert!(
        bad.text().contains("no module \"nothing\""),
        "{}",
        bad.text()
    );
    assert_eq!(
        edge.metric(r#"graft_edge_passed_total{zone="rust.test",module="probe",reason="mode"}"#),
        1
    );
    assert!(edge
        .log()
        .contains(r#"kill switch of module "probe" in zone "rust.test" thrown"#));
}

#[test]
fn a_bad_settings_or_graft_file_is_refused_naming_its_field() {
    let run = |dir: &std::path::Path, args: &[&str]| {
        let out = std::process::Command::new(support::binary())
            .args(args)
            .arg(dir.join("edge.json"))
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let dir = support::scratch("bad");
    std::fs::write(dir.join("graft.json"), graft()).unwrap();
    let good = support::settings(
        &dir,
        1,
        2,
        json!({ "default": "127.0.0.1:9" }),
        "127.0.0.1:8",
    );
    std::fs::write(dir.join("edge.json"), good.to_string()).unwrap();
    let out = std::process::Command::new(support::binary())
        .args(["--check"])
        .arg(dir.join("edge.json"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut bad = good.clone();
    bad["admin_listen"] = json!("0.0.0.0:9");
    std::fs::write(dir.join("edge.json"), bad.to_string()).unwrap();
    let (code, err) = run(&dir, &[]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("edge.json: field \"admin_listen\": 0.0.0.0:9 is not a loopback address"),
        "{err}"
    );

    let mut bad = good.clone();
    bad["timeouts"]["connect_ms"] = json!("soon");
    std::fs::write(dir.join("edge.json"), bad.to_string()).unwrap();
    let (code, err) = run(&dir, &["--check"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("field \"timeouts.connect_ms\": invalid type"),
        "{err}"
    );

    let mut bad = good.clone();
    bad["origins"] = json!({ "rust.test": "127.0.0.1:9" });
    std::fs::write(dir.join("edge.json"), bad.to_string()).unwrap();
    let (code, err) = run(&dir, &[]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains(
            "field \"origins\": zone \"closed.test\" has no origin, and there is no \"default\""
        ),
        "{err}"
    );

    // The graft file, refused as nginx refuses it.
    std::fs::write(dir.join("edge.json"), good.to_string()).unwrap();
    std::fs::write(
        dir.join("graft.json"),
        r#"{ "zones": { "a.test": { "modules": [ { "module": "redirects", "mode": "rust", "config": { "rules": [ { "from": "/a", "to": "/b", "status": 303 } ] } } ] } } }"#,
    )
    .unwrap();
    let (code, err) = run(&dir, &[]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("graft.json: zone \"a.test\": module #0 \"redirects\": field \"config.rules[0].status\""),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Reads one response off a kept-alive connection: its head, and as many
/// body bytes as its Content-Length says (none for a HEAD).
fn read_one(s: &mut std::io::BufReader<std::net::TcpStream>, head_only: bool) -> (String, String) {
    use std::io::{BufRead, Read};
    let mut head = String::new();
    loop {
        let mut line = String::new();
        assert!(s.read_line(&mut line).unwrap() > 0, "closed after {head:?}");
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let length = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0; if head_only { 0 } else { length }];
    s.read_exact(&mut body).unwrap();
    (head, String::from_utf8(body).unwrap())
}

#[test]
fn one_connection_carries_answers_and_passes_alike() {
    use std::io::Write;
    let fl1 = Recorder::start("fl1");
    let origin = Recorder::start("origin");
    let edge = Edge::start(&graft(), origins(&origin), &fl1.addr());
    let s = std::net::TcpStream::connect(("127.0.0.1", edge.port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = std::io::BufReader::new(s);
    for (method, host, path, body) in [
        ("GET", "rust.test", "/a", "rust /a\n"),
        ("HEAD", "rust.test", "/b", ""),
        ("GET", "lua.test", "/c", "fl1 /c 0\n"),
        ("GET", "two.test", "/d", "origin /d 0\n"),
        ("GET", "rust.test", "/e", "rust /e\n"),
    ] {
        w.write_all(format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
            .unwrap();
        let (head, got) = read_one(&mut r, method == "HEAD");
        assert!(
            head.starts_with("HTTP/1.1 200 "),
            "{method} {host}{path}: {head}"
        );
        assert_eq!(got, body, "{method} {host}{path}");
        if method == "HEAD" {
            assert!(
                head.to_ascii_lowercase().contains("content-length: 8"),
                "{head}"
            );
        }
    }
}

#[test]
fn http2_from_clients_is_served_and_passed_alike() {
    let fl1 = Recorder::start("fl1");
    let origin = Recorder::start("origin");
    let edge = Edge::start(&graft(), origins(&origin), &fl1.addr());
    for (host, body) in [
        ("rust.test", "rust /h2\n"),
        ("lua.test", "fl1 /h2 0\n"),
        ("two.test", "origin /h2 0\n"),
    ] {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "--http2-prior-knowledge",
                "--max-time",
                "10",
                "-w",
                "%{http_version}",
                "-H",
            ])
            .arg(format!("Host: {host}"))
            .arg(format!("http://127.0.0.1:{}/h2", edge.port))
            .output()
            .expect("curl is installed");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{body}2"),
            "{host}\n{}",
            edge.log()
        );
    }
}

/// Requests sent one after another on new connections until `stop`:
/// how many were served, and what each one that was not got.
fn keep_asking(
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(usize, Vec<String>)> {
    use std::sync::atomic::Ordering;
    std::thread::spawn(move || {
        let (mut served, mut failed) = (0, Vec::new());
        while !stop.load(Ordering::Relaxed) {
            let got = support::send(
                port,
                b"GET /u HTTP/1.1\r\nHost: rust.test\r\nConnection: close\r\n\r\n",
            );
            match got {
                Some(r) if r.status == 200 && r.text() == "rust /u\n" => served += 1,
                other => failed.push(format!("{other:?}")),
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        (served, failed)
    })
}

/// Waits for the old graft-edge of an upgrade to exit, then (a moment
/// later, the new one serving) stops `keep_asking`'s client: what it got.
fn once_old_exits(
    old: &mut Edge,
    stop: &std::sync::atomic::AtomicBool,
    client: std::thread::JoinHandle<(usize, Vec<String>)>,
) -> (usize, Vec<String>) {
    assert!(
        old.exited_within(std::time::Duration::from_secs(30)),
        "the old graft-edge did not exit:\n{}",
        old.log()
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    client.join().unwrap()
}

/// Whether process `pid` is gone (or a zombie) within `limit`.
fn gone_within(pid: u32, limit: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return true,
            Ok(stat)
                if stat
                    .rsplit(')')
                    .next()
                    .is_some_and(|s| s.trim_start().starts_with('Z')) =>
            {
                return true
            }
            Ok(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
    false
}

#[test]
fn sigusr2_upgrades_in_place_refusing_no_connection_and_tells_systemd() {
    use std::os::unix::net::UnixDatagram;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    let fl1 = Recorder::start("fl1");
    let origin = Recorder::start("origin");
    // systemd's notify socket, as the unit's NotifyAccess=all hears it.
    let notify_dir = support::scratch("notify");
    let notify_path = notify_dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut old = Edge::start_in_env(
        &graft(),
        origins(&origin),
        &fl1.addr(),
        |_, _| {},
        &[("NOTIFY_SOCKET", notify_path.as_os_str())],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let client = keep_asking(old.port, stop.clone());
    std::thread::sleep(std::time::Duration::from_millis(300));
    old.signal("-USR2");
    let mut message = [0u8; 256];
    let n = notify
        .recv(&mut message)
        .unwrap_or_else(|e| panic!("no word to systemd: {e}\n{}", old.log()));
    let message = String::from_utf8_lossy(&message[..n]).to_string();
    let new: u32 = message
        .strip_prefix("MAINPID=")
        .and_then(|m| m.strip_suffix("\nREADY=1\n"))
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("{message:?}"));
    assert_ne!(new, old.pid());
    // A second SIGUSR2 while the old one finishes its requests is ignored,
    // and says so; the old one is not ended at once.
    old.signal("-USR2");
    let asked_twice = std::time::Instant::now();
    let (served, failed) = once_old_exits(&mut old, &stop, client);
    // (Pingora keeps the old process 5 s after it hands the listeners
    // over, then gives its requests shutdown_ms.)
    assert!(
        asked_twice.elapsed() >= std::time::Duration::from_secs(2),
        "the old graft-edge ended at once on a second SIGUSR2:\n{}",
        old.log()
    );
    let after = support::send(
        old.port,
        b"GET /after HTTP/1.1\r\nHost: rust.test\r\nConnection: close\r\n\r\n",
    );
    // The new process is not this test's child: stopped by its pid.
    let stopped = std::process::Command::new("kill")
        .args(["-INT", &new.to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    assert!(gone_within(new, std::time::Duration::from_secs(10)));
    let log = old.log();
    assert!(
        failed.is_empty(),
        "{} refused or failed: {:?}\n{log}",
        failed.len(),
        failed.first()
    );
    assert!(served > 50, "{served}");
    assert_eq!(
        after.map(|r| r.text()),
        Some("rust /after\n".to_string()),
        "{log}"
    );
    assert!(log.contains("upgrading to a new graft-edge"), "{log}");
    assert!(
        log.contains("SIGUSR2 ignored: this process has handed its listeners to pid"),
        "{log}"
    );
}

#[test]
fn sigusr2_with_a_refused_file_leaves_the_running_graft_edge_serving() {
    let fl1 = Recorder::start("fl1");
    let origin = Recorder::start("origin");
    let edge = Edge::start(&graft(), origins(&origin), &fl1.addr());
    std::fs::write(edge.dir.join("graft.json"), "{ not json").unwrap();
    edge.signal("-USR2");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !edge.log().contains("upgrade refused") {
        assert!(std::time::Instant::now() < deadline, "{}", edge.log());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let log = edge.log();
    assert!(
        log.contains("graft.json"),
        "the child's refusal, naming the file:\n{log}"
    );
    assert_eq!(edge.get("rust.test", "/still").text(), "rust /still\n");
}

#[test]
fn a_graceful_upgrade_refuses_no_connection() {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    let fl1 = Recorder::start("fl1");
    let origin = Recorder::start("origin");
    let mut old = Edge::start(&graft(), origins(&origin), &fl1.addr());
    let stop = Arc::new(AtomicBool::new(false));
    let client = keep_asking(old.port, stop.clone());
    std::thread::sleep(std::time::Duration::from_millis(300));
    let new = old.upgrade();
    let (served, failed) = once_old_exits(&mut old, &stop, client);
    assert!(
        failed.is_empty(),
        "{} refused or failed: {:?}\n{}",
        failed.len(),
        failed.first(),
        new.log()
    );
    assert!(served > 50, "{served}");
    assert_eq!(new.get("rust.test", "/after").text(), "rust /after\n");
    assert!(new.metrics().contains("graft_edge_requests_total"));
}
