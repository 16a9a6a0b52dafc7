//! request_log's log phase in graft-edge: a request graft-edge serves (its
//! steps' answer or the origin's response) gets the record FL1 writes for
//! it, in a file under the settings' `log_dirs`; a graft file whose record
//! file is elsewhere is refused; a file that cannot be written is a
//! counted, logged failure of the step; a zone whose log step is in `lua`
//! goes to FL1 whole, and FL1 writes its record.
mod support;

use std::process::Command;

use serde_json::json;
use support::{fl1, scratch, Edge, Recorder};

const FIELDS: [&str; 8] = [
    "zone",
    "host",
    "method",
    "path",
    "query",
    "status",
    "client",
    "header:user-agent",
];

fn graft(path: &str) -> String {
    let zone = |mode: &str| {
        json!({ "modules": [
            { "module": "waf", "mode": "rust", "config": { "rules": [
                { "id": "admin", "action": "block", "when": { "field": "path", "op": "prefix", "value": "/admin" } } ] } },
            { "module": "request_log", "mode": mode, "config": { "path": path, "fields": FIELDS } } ] })
    };
    json!({ "zones": { "log.test": zone("rust"), "lua.test": zone("lua") } }).to_string()
}

const REQUESTS: [(&str, &str, &str); 4] = [
    (
        "GET",
        "/a/../b?x=1&y=%22",
        "User-Agent: curl/8 \"quoted\"\r\n",
    ),
    ("GET", "/admin/x", ""),
    ("HEAD", "/caf%C3%A9", "User-Agent: bell\r\n"),
    ("GET", "/", ""),
];

fn send_all(port: u16) {
    for (method, target, extra) in REQUESTS {
        let req = format!(
            "{method} {target} HTTP/1.1\r\nHost: log.test\r\n{extra}Connection: close\r\n\r\n"
        );
        support::send(port, req.as_bytes()).expect("a response");
    }
}

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn a_request_graft_edge_serves_gets_the_record_fl1_writes() {
    let records = scratch("records");
    // nginx's workers run as another user: a directory they can write.
    let fl1_dir = scratch("fl1-records");
    std::fs::set_permissions(
        &fl1_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let fl1_file = fl1_dir.join("fl1.jsonl");
    let reference = fl1(&graft(fl1_file.to_str().unwrap()));
    let edge_file = records.join("edge.jsonl");
    let behind = Recorder::start("fl1");
    let origin = Recorder::start("origin");
    let dir = records.clone();
    let edge = Edge::start_with(
        &graft(edge_file.to_str().unwrap()),
        json!({ "default": origin.addr() }),
        &behind.addr(),
        move |s, _| s["log_dirs"] = json!([dir]),
    );
    send_all(reference.port);
    send_all(edge.port);
    let (want, got) = (lines(&fl1_file), lines(&edge_file));
    assert_eq!(
        want.len(),
        REQUESTS.len(),
        "FL1's records: {want:?}\n{}",
        reference.error_log()
    );
    assert_eq!(got, want, "{}", edge.log());
    assert!(got[1].contains(r#""status":403"#), "{}", got[1]);
    assert_eq!(behind.count(), 0, "nothing went to FL1");
    let m = edge.metrics();
    assert!(
        // The WAF answered one before the step's request phase: its
        // record is written all the same, as FL1 writes it.
        m.contains(r#"graft_requests_total{zone="log.test",module="request_log",path="rust"} 3"#),
        "{m}"
    );
    let _ = std::fs::remove_dir_all(&fl1_dir);
    let _ = std::fs::remove_dir_all(&records);
}

#[test]
fn record_files_are_only_where_the_settings_allow_and_a_failure_is_counted() {
    let records = scratch("records");
    let behind = Recorder::start("fl1");
    let origin = Recorder::start("origin");

    // No log_dirs: a graft file that writes a record file is refused.
    let dir = scratch("refused");
    let path = records.join("r.jsonl");
    std::fs::write(dir.join("graft.json"), graft(path.to_str().unwrap())).unwrap();
    let (p, a) = (graft_tests::free_port(), graft_tests::free_port());
    let settings = support::settings(
        &dir,
        p,
        a,
        json!({ "default": origin.addr() }),
        &behind.addr(),
    );
    std::fs::write(dir.join("edge.json"), settings.to_string()).unwrap();
    let out = Command::new(support::binary())
        .arg("--check")
        .arg(dir.join("edge.json"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(r#"module #1 "request_log": field "config.path""#) && err.contains("log_dirs"),
        "{err}"
    );

    // A file under log_dirs that cannot be opened: the request is served,
    // the step's failure counted and logged.
    let missing = records.join("no/such/dir/r.jsonl");
    let allowed = records.clone();
    let edge = Edge::start_with(
        &graft(missing.to_str().unwrap()),
        json!({ "default": origin.addr() }),
        &behind.addr(),
        move |s, _| s["log_dirs"] = json!([allowed]),
    );
    let r = edge.get("log.test", "/x");
    assert_eq!(r.status, 200);
    assert_eq!(
        edge.metric(r#"graft_requests_total{zone="log.test",module="request_log",path="failed"}"#),
        1
    );
    assert!(edge.log().contains("cannot write to"), "{}", edge.log());

    // Its log step in lua: FL1 takes the zone's requests whole, the WAF's
    // answers included, and writes their records.
    let r = edge.get("lua.test", "/admin");
    assert_eq!(r.text(), "fl1 /admin 0\n");
    assert_eq!(behind.last().handoff(), ("lua.test".into(), 0, false));
    assert_eq!(
        edge.metric(
            r#"graft_edge_passed_total{zone="lua.test",module="request_log",reason="mode"}"#
        ),
        1
    );
    let _ = std::fs::remove_dir_all(&records);
    let _ = std::fs::remove_dir_all(&dir);
}
