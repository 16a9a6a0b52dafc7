//! graft-edge's live apply and fleet report (`/graft/admin/apply`,
//! `/graft/admin/fleet`), answered as nginx answers them: a new graft file
//! swapped in whole, the steps it keeps carrying their counts and kill
//! switches over, a request in flight finishing on the configuration it
//! started with, and a refused file leaving the running one serving.
mod support;

use std::time::Duration;

use serde_json::json;
use support::{Edge, Recorder};

/// `rust.test` answers from graft-edge; `gen.test` goes to its origin with
/// a response header naming the configuration (`X-Gen`).
fn graft(generation: &str, extra: serde_json::Value) -> String {
    let mut zones = json!({
        "rust.test": { "modules": [ { "module": "probe", "mode": "rust" } ] },
        "gen.test": { "modules": [ { "module": "headers", "mode": "rust", "config": { "rules": [
            { "response": [ { "set": "X-Gen", "value": generation } ] } ] } } ] }
    });
    for (k, v) in extra.as_object().unwrap() {
        zones[k] = v.clone();
    }
    json!({ "zones": zones }).to_string()
}

#[test]
fn a_new_file_is_swapped_in_whole_and_keeps_what_its_steps_counted() {
    let fl1 = Recorder::start("fl1");
    let origin = Recorder::start("origin");
    let edge = Edge::start(
        &graft("a", json!({})),
        json!({ "default": origin.addr() }),
        &fl1.addr(),
    );
    for _ in 0..3 {
        assert_eq!(edge.get("rust.test", "/x").text(), "rust /x\n");
    }
    assert_eq!(edge.get("gen.test", "/").header("X-Gen"), Some("a"));
    let kill = edge.admin_api("POST", "/graft/admin/kill?module=probe&zone=rust.test", b"");
    assert_eq!(kill.status, 200, "{}", kill.text());
    let generation = |edge: &Edge| edge.metric("graft_configuration_generation{}");
    let before = generation(&edge);

    // A new zone, a changed step, the unchanged one: the body applied.
    let b = graft(
        "b",
        json!({ "new.test": { "modules": [ { "module": "probe", "mode": "rust" } ] } }),
    );
    let r = edge.admin_api("POST", "/graft/admin/apply", b.as_bytes());
    assert_eq!(r.status, 200, "{}\n{}", r.text(), edge.log());
    assert!(r.text().starts_with("applied, generation "), "{}", r.text());
    assert!(generation(&edge) > before);
    assert_eq!(edge.get("new.test", "/n").text(), "rust /n\n");
    assert_eq!(edge.get("gen.test", "/").header("X-Gen"), Some("b"));
    // The kill switch held: rust.test's probe still goes to FL1.
    assert_eq!(edge.get("rust.test", "/x").text(), "fl1 /x 0\n");
    let m = edge.metrics();
    let hash = graft_engine::fleet_report::config_hash(b.as_bytes());
    assert_eq!(
        graft_tests::metric(&m, &format!("graft_configuration_info{{hash=\"{hash}\"}}")),
        Some(1),
        "{m}"
    );
    for (series, n) in [
        (
            r#"graft_requests_total{zone="rust.test",module="probe",path="rust"}"#,
            3,
        ),
        (r#"graft_edge_requests_total{zone="rust.test"}"#, 4),
        (
            r#"graft_edge_passed_total{zone="rust.test",module="probe",reason="mode"}"#,
            1,
        ),
        (r#"graft_edge_requests_total{zone="new.test"}"#, 1),
    ] {
        assert_eq!(graft_tests::metric(&m, series), Some(n), "{series}\n{m}");
    }
    assert!(edge.log().contains("applied the configuration live"));
}

#[test]
fn a_request_in_flight_finishes_on_the_configuration_it_started_with() {
    let fl1 = Recorder::start("fl1");
    let slow = support::slow_origin(Duration::from_millis(1500));
    let edge = Edge::start(
        &graft("a", json!({})),
        json!({ "default": format!("127.0.0.1:{slow}") }),
        &fl1.addr(),
    );
    let port = edge.port;
    let in_flight = std::thread::spawn(move || {
        support::send(
            port,
            b"GET /slow HTTP/1.1\r\nHost: gen.test\r\nConnection: close\r\n\r\n",
        )
        .unwrap()
    });
    std::thread::sleep(Duration::from_millis(400));
    let r = edge.admin_api(
        "POST",
        "/graft/admin/apply",
        graft("b", json!({})).as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let after = edge.get("gen.test", "/after");
    assert_eq!(after.header("X-Gen"), Some("b"));
    let before = in_flight.join().unwrap();
    assert_eq!((before.status, before.text().as_str()), (200, "slow\n"));
    assert_eq!(before.header("X-Gen"), Some("a"), "{:?}", before.headers);
    // Both requests counted on the step both configurations share.
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        edge.metric(r#"graft_requests_total{zone="gen.test",module="headers",path="rust"}"#),
        2
    );
}

#[test]
fn a_refused_file_leaves_the_running_one_serving_and_is_counted() {
    let fl1 = Recorder::start("fl1");
    let origin = Recorder::start("origin");
    let edge = Edge::start(
        &graft("a", json!({})),
        json!({ "rust.test": origin.addr(), "gen.test": origin.addr() }),
        &fl1.addr(),
    );
    let refused = |edge: &Edge| edge.metric("graft_configuration_refused_total{}");
    assert_eq!(refused(&edge), 0);
    let bad = r#"{ "zones": { "a.test": { "modules": [ { "module": "redirects", "mode": "rust", "config": { "rules": [ { "from": "/a", "to": "/b", "status": 303 } ] } } ] } } }"#;
    let r = edge.admin_api("POST", "/graft/admin/apply", bad.as_bytes());
    assert_eq!(r.status, 400);
    assert!(
        r.text().starts_with("refused, the running configuration goes on: the configuration sent: zone \"a.test\": module #0 \"redirects\": field \"config.rules[0].status\""),
        "{}",
        r.text()
    );
    // A zone with no origin: these settings have no default.
    let r = edge.admin_api(
        "POST",
        "/graft/admin/apply",
        graft("b", json!({ "new.test": { "modules": [] } })).as_bytes(),
    );
    assert_eq!(r.status, 400);
    assert!(
        r.text()
            .contains("field \"origins\": zone \"new.test\" has no origin"),
        "{}",
        r.text()
    );
    let r = edge.admin_api("POST", "/graft/admin/apply", b"{ not json");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("invalid JSON"), "{}", r.text());
    assert_eq!(refused(&edge), 3);
    assert_eq!(edge.get("rust.test", "/still").text(), "rust /still\n");
    assert_eq!(edge.get("gen.test", "/").header("X-Gen"), Some("a"));
    assert!(edge
        .log()
        .contains("live configuration refused, the running one goes on"));

    // No body: the graft file again, as nginx reads its own; the file
    // named in the answer when it is refused.
    std::fs::write(edge.dir.join("graft.json"), "[]").unwrap();
    let r = edge.admin_api("POST", "/graft/admin/apply", b"");
    assert_eq!(r.status, 400);
    assert!(r.text().contains("graft.json: "), "{}", r.text());
    std::fs::write(edge.dir.join("graft.json"), graft("c", json!({}))).unwrap();
    let r = edge.admin_api("POST", "/graft/admin/apply", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(edge.get("gen.test", "/").header("X-Gen"), Some("c"));
    assert_eq!(refused(&edge), 4);

    assert_eq!(edge.admin_api("GET", "/graft/admin/apply", b"").status, 405);
    // Without the token, nothing is applied.
    let r = edge.admin_call("POST", "/graft/admin/apply", "");
    assert_eq!(r.status, 401);
}

#[test]
fn the_fleet_agent_s_report_reaches_the_metrics() {
    let origin = Recorder::start("origin");
    let edge = Edge::start(
        &graft("a", json!({})),
        json!({ "default": origin.addr() }),
        &origin.addr(),
    );
    let r = edge.admin_api(
        "POST",
        "/graft/admin/fleet?etcd_up=1&etcd_contact=1700000000&config_revision=7&rollout_stage=0&rollout_state=0&rollout_serving=0&healthy=1",
        b"",
    );
    assert_eq!((r.status, r.text().as_str()), (200, "reported\n"));
    let m = edge.metrics();
    assert_eq!(
        graft_tests::metric(&m, "graft_fleet_etcd_up{}"),
        Some(1),
        "{m}"
    );
    assert_eq!(
        graft_tests::metric(&m, "graft_fleet_config_revision{}"),
        Some(7)
    );
    let totals = edge.admin_api("GET", "/graft/admin/totals", b"").text();
    assert!(
        totals.contains("graft_fleet_report_timestamp_seconds"),
        "{totals}"
    );
    let r = edge.admin_api("POST", "/graft/admin/fleet?nonsense=1", b"");
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(edge.admin_api("GET", "/graft/admin/fleet", b"").status, 405);
}
