//! request_log through the real nginx: one JSON line per request in the
//! log phase, written by Rust (graft's log handler) or by the Lua twin
//! (log_by_lua), the same line for the same request; in shadow Lua writes
//! and Rust compares, with no difference; sampled; over its rate dropped
//! and counted; an unwritable file and a Lua step with no Lua log handler
//! counted as failed.
use graft_tests::Nginx;
use serde_json::json;

fn config(mode: &str, path: &str, extra: serde_json::Value) -> String {
    let mut c = json!({ "path": path,
        "fields": ["time", "zone", "host", "method", "path", "query", "status", "bytes_sent",
                   "client", "header:user-agent", "header:x-none"] });
    if let Some(o) = extra.as_object() {
        for (k, v) in o {
            c[k] = v.clone();
        }
    }
    json!({ "zones": { "localhost": { "modules": [
        { "module": "request_log", "mode": mode, "config": c } ] } } })
    .to_string()
}

const EXTRA: &str = r#"
        location /nolog/ {
            access_by_lua_block { require("graft").access() }
            content_by_lua_block { ngx.say("ok") }
        }
"#;

fn requests(nginx: &Nginx) {
    for target in ["/a", "/caf%C3%A9?q=%22x%22", "/b?x=1&y=\\"] {
        let r = nginx.raw(
            format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: t\x01\"ua\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
        assert_eq!(r.status, 200);
    }
}

/// A directory nginx's workers (another user) can write records to.
fn records_dir(name: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = graft_tests::tests_dir().join(format!("records-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn lua_and_rust_write_the_same_record_for_the_same_request() {
    let mut written = Vec::new();
    for mode in ["lua", "rust"] {
        let dir = records_dir(mode);
        let file = dir.join("records.jsonl");
        let _ = std::fs::remove_file(&file);
        let nginx = Nginx::start(&config(mode, file.to_str().unwrap(), json!({})));
        requests(&nginx);
        // The log phase runs after the response is sent.
        std::thread::sleep(std::time::Duration::from_millis(200));
        let got = lines(&file);
        assert_eq!(got.len(), 3, "{mode}: {got:?}\n{}", nginx.error_log());
        for l in &got {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            assert_eq!(v["zone"], "localhost");
            assert_eq!(v["header:x-none"], serde_json::Value::Null);
            assert!(l.is_ascii(), "{l}");
        }
        assert!(got[2].contains(r#""query":"x=1&y=\\""#), "{}", got[2]);
        assert!(
            got[1].contains(r#""path":"/caf\u00c3\u00a9""#),
            "{}",
            got[1]
        );
        assert!(
            got[0].contains(r#""header:user-agent":"t\u0001\"ua""#),
            "{}",
            got[0]
        );
        nginx.assert_clean_log(&[]);
        // Time and bytes aside (another run, another second), the same.
        written.push(
            got.iter()
                .map(|l| {
                    let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                    v["time"] = json!(0);
                    v.to_string()
                })
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(written[0], written[1]);
}

#[test]
fn in_shadow_lua_writes_and_rust_finds_its_record_the_same() {
    let dir = records_dir("shadow");
    let file = dir.join("records.jsonl");
    let _ = std::fs::remove_file(&file);
    let nginx = Nginx::start(&config("shadow", file.to_str().unwrap(), json!({})));
    for _ in 0..5 {
        requests(&nginx);
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(lines(&file).len(), 15);
    assert_eq!(nginx.counter("localhost", 0, "shadow_diff"), 0);
    assert_eq!(nginx.counter("localhost", 0, "shadow_match"), 15);
    nginx.assert_clean_log(&[]);
}

#[test]
fn sampling_rate_and_failures_are_bounded_counted_and_logged() {
    let dir = records_dir("rate");
    let file = dir.join("records.jsonl");
    for mode in ["lua", "rust"] {
        let _ = std::fs::remove_file(&file);
        let nginx = Nginx::start(&config(
            mode,
            file.to_str().unwrap(),
            json!({ "max_per_second": 2, "fields": ["path"] }),
        ));
        for i in 0..6 {
            nginx.get("localhost", &format!("/p{i}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        let n = lines(&file).len() as u64;
        let dropped = nginx.counter("localhost", 0, "dropped");
        // Six requests may straddle a second: at most 2 a second written.
        assert!((2..=4).contains(&n), "{mode}: {n}");
        assert_eq!(n + dropped, 6, "{mode}: every record written or counted");
        let text = nginx.get("localhost", "/graft/metrics").text();
        assert!(
            text.contains(&format!(
                r#"graft_log_records_dropped_total{{zone="localhost",module="request_log"}} {dropped}"#
            )),
            "{text}"
        );
        nginx.assert_clean_log(&[]);
    }
    // A tenth of 300 distinct requests, both sides of one server choosing
    // the same ones (by the server's own key: another server chooses
    // others, and no client can choose to be recorded).
    let sampled_zone = |mode: &str, path: &std::path::Path| {
        json!({ "modules": [ { "module": "request_log", "mode": mode, "config": {
            "path": path, "sample": 0.1, "fields": ["path"] } } ] })
    };
    let (lua_file, rust_file) = (dir.join("lua.jsonl"), dir.join("rust.jsonl"));
    let two = json!({ "zones": {
        "lua.test": sampled_zone("lua", &lua_file),
        "rust.test": sampled_zone("rust", &rust_file) } });
    let mut chosen = Vec::new();
    for _server in 0..2 {
        let _ = std::fs::remove_file(&lua_file);
        let _ = std::fs::remove_file(&rust_file);
        let nginx = Nginx::start(&two.to_string());
        for i in 0..300 {
            nginx.get("lua.test", &format!("/s{i}"));
            nginx.get("rust.test", &format!("/s{i}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        let (lua, rust) = (lines(&lua_file), lines(&rust_file));
        assert!((10..60).contains(&lua.len()), "{}", lua.len());
        assert_eq!(lua, rust, "both sides choose alike");
        chosen.push(lua);
    }
    assert_ne!(chosen[0], chosen[1], "each server by its own key");
    // A file that cannot be written: failed, counted and logged.
    for mode in ["lua", "rust"] {
        let missing = graft_tests::tests_dir().join("graft-no-such/records.jsonl");
        let nginx = Nginx::start(&config(mode, missing.to_str().unwrap(), json!({})));
        nginx.get("localhost", "/x");
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert_eq!(nginx.counter("localhost", 0, "failed"), 1, "{mode}");
        let log = nginx.error_log();
        assert!(
            log.contains(&format!("cannot write to {}", missing.display())),
            "{log}"
        );
        nginx.assert_clean_log(&["cannot write to"]);
    }
}

#[test]
fn a_lua_step_where_no_lua_log_handler_runs_is_counted_as_failed() {
    let nginx = Nginx::start_extra(
        &config(
            "lua",
            graft_tests::tests_dir()
                .join("unused.jsonl")
                .to_str()
                .unwrap(),
            json!({}),
        ),
        false,
        EXTRA,
    );
    assert_eq!(nginx.get("localhost", "/nolog/x").status, 200);
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(nginx.counter("localhost", 0, "failed"), 1);
    let expected = "no Lua log handler took it";
    assert!(
        nginx.error_log().contains(expected),
        "{}",
        nginx.error_log()
    );
    nginx.assert_clean_log(&[expected]);
}

/// A module writes files only under the directories nginx's own
/// configuration names (`graft_log_dir`): a graft file, which a fleet's
/// store may hand a server, cannot make graft write anywhere else. Refused
/// at start and in a live apply, naming zone, module and field; the
/// running configuration goes on.
#[test]
fn a_record_file_outside_the_log_dirs_is_refused_at_load_and_in_a_live_apply() {
    let inside = graft_tests::tests_dir().join("kept.jsonl");
    let nginx = Nginx::start(&config("rust", inside.to_str().unwrap(), json!({})));
    for outside in ["/etc/cron.d/graft", "/var/tmp/x.jsonl"] {
        let r = nginx.admin_body(
            "POST",
            "/graft/admin/apply",
            config("rust", outside, json!({})).as_bytes(),
        );
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(
            r.text().contains(&format!(
                r#"zone "localhost": module #0 "request_log": field "config.path": "{outside}" is not under a directory graft_log_dir names"#
            )),
            "{}",
            r.text()
        );
    }
    // A path that climbs out of a directory is refused by the module.
    let climbing = format!("{}/../x.jsonl", graft_tests::tests_dir().display());
    let r = nginx.admin_body(
        "POST",
        "/graft/admin/apply",
        config("rust", &climbing, json!({})).as_bytes(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("no \".\" or \"..\" part"), "{}", r.text());
    assert_eq!(nginx.get("localhost", "/a").status, 200, "still serving");
    // At start: nginx -t and a start are refused.
    nginx.write_config(&config("lua", "/etc/cron.d/graft", json!({})));
    let (ok, out) = nginx.test_config();
    assert!(
        !ok && out.contains("is not under a directory graft_log_dir names"),
        "{out}"
    );
}
