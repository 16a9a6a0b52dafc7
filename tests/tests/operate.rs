//! Operating a migration: canary, metrics summed over workers, and faults
//! under load (reloads, a killed worker, panics) with nothing lost.
use std::process::Command;
use std::time::{Duration, Instant};

use graft_tests::corpus::CorpusRequest;
use graft_tests::{metric, replay, Nginx, Scenario};
use serde_json::json;

fn config() -> String {
    json!({ "zones": {
        "canary.test": { "modules": [ { "module": "probe", "mode": "canary", "percent": 40 } ] },
        "localhost": { "modules": [
            { "module": "redirects", "mode": "rust", "config": { "rules": [ { "from": "/old", "to": "/new" } ] } },
            { "module": "probe", "mode": "rust", "config": { "panic_on": "/panic" } } ] },
    }})
    .to_string()
}

fn metrics(nginx: &Nginx) -> String {
    let r = nginx.get("localhost", "/graft/metrics");
    assert_eq!(r.status, 200);
    assert!(r.header("Content-Type").unwrap().starts_with("text/plain"));
    r.text()
}

#[test]
fn a_canary_keeps_each_client_on_one_side() {
    let nginx = Nginx::start(&config());
    let mut on_rust = 0;
    for i in 1..=200u8 {
        let client = std::net::Ipv4Addr::new(127, 0, 1, i);
        let req = CorpusRequest::get("canary.test", "/x").from(client);
        let first = replay::send(nginx.port, &req).unwrap();
        let side = first
            .headers
            .iter()
            .find(|(n, _)| n == "X-Graft-Impl")
            .unwrap()
            .1
            .clone();
        for _ in 0..3 {
            let again = replay::send(nginx.port, &req).unwrap();
            assert_eq!(again.body, first.body, "client {client} changed sides");
        }
        on_rust += usize::from(side == "rust");
    }
    assert!(
        (50..110).contains(&on_rust),
        "{on_rust} of 200 clients on Rust for 40 %"
    );
    let text = metrics(&nginx);
    let rust = metric(
        &text,
        r#"graft_requests_total{zone="canary.test",module="probe",path="rust"}"#,
    )
    .unwrap();
    let lua = metric(
        &text,
        r#"graft_requests_total{zone="canary.test",module="probe",path="lua"}"#,
    )
    .unwrap();
    assert_eq!(
        (rust, lua),
        (4 * on_rust as u64, 4 * (200 - on_rust) as u64)
    );
    // Latency is sampled (one call in 32) on both sides: a histogram per
    // module, and each step's total and samples.
    for imp in ["lua", "rust"] {
        let series = format!(r#"graft_latency_seconds_count{{module="probe",impl="{imp}"}}"#);
        let n = metric(&text, &series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
        assert!(n >= 3, "{series} {n}");
        let inf =
            format!(r#"graft_latency_seconds_bucket{{le="+Inf",module="probe",impl="{imp}"}}"#);
        assert_eq!(metric(&text, &inf), Some(n), "{text}");
        let step = format!(
            r#"graft_step_latency_samples_total{{zone="canary.test",module="probe",impl="{imp}"}}"#
        );
        assert_eq!(
            metric(&text, &step),
            Some(n),
            "only canary.test runs probe: its samples are the module's\n{text}"
        );
    }
    nginx.assert_clean_log(&[]);
}

#[test]
fn metrics_are_summed_over_workers_and_outlive_a_killed_worker() {
    let nginx = Nginx::start_workers(&config(), 2);
    for _ in 0..300 {
        assert_eq!(nginx.get("localhost", "/old").status, 301);
    }
    let series = r#"graft_requests_total{zone="localhost",module="redirects",path="rust"}"#;
    // Each worker counts in its own memory and adds its counts to the
    // shared table every 250 ms (and whenever it answers for the metrics).
    let deadline = Instant::now() + Duration::from_secs(2);
    while metric(&metrics(&nginx), series) != Some(300) {
        assert!(
            Instant::now() < deadline,
            "the workers' counts never added up to 300: {:?}",
            metric(&metrics(&nginx), series)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for _ in 0..6 {
        // Whichever worker answers, it reports every worker's count.
        assert_eq!(metric(&metrics(&nginx), series), Some(300));
    }
    let before = nginx.worker_pids();
    let status = Command::new("kill")
        .args(["-KILL", &before[0].to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = nginx.worker_pids();
        if now.len() == 2 && !now.contains(&before[0]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the master did not respawn the worker"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        metric(&metrics(&nginx), series),
        Some(300),
        "counts were lost with the worker"
    );
    assert_eq!(nginx.get("localhost", "/old").status, 301);
    // Counted by whichever worker served it, in the table within 250 ms.
    let deadline = Instant::now() + Duration::from_secs(2);
    while metric(&metrics(&nginx), series) != Some(301) {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            metric(&metrics(&nginx), series)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = nginx.error_log();
    assert!(log.contains("exited on signal 9"), "{log}");
    // The worker's death is the one [alert] line there may be.
    for line in log
        .lines()
        .filter(|l| l.contains("[alert]") || l.contains("[crit]") || l.contains("[emerg]"))
    {
        assert!(line.contains("exited on signal 9"), "{line}");
    }
}

#[test]
fn what_a_worker_counted_outlives_its_exit_on_a_reload() {
    // A worker counts in its own memory and adds to the shared table every
    // 250 ms; one that leaves on a reload adds what it counted since then
    // as it exits (graft's exit hook, and its configuration's drop with the
    // cycle; with both taken out this count was 0 in every trial). The
    // reload comes a few milliseconds after the requests, before the next
    // tick most of the time.
    let nginx = Nginx::start(&config());
    for _ in 0..20 {
        assert_eq!(nginx.get("localhost", "/old").status, 301);
    }
    nginx.reload();
    let series = r#"graft_requests_total{zone="localhost",module="redirects",path="rust"}"#;
    assert_eq!(
        metric(&metrics(&nginx), series),
        Some(20),
        "{}",
        metrics(&nginx)
    );
    nginx.assert_clean_log(&[]);
}

#[test]
fn counts_on_a_configuration_replaced_live_reach_the_metrics_while_requests_still_hold_it() {
    // A slow download pins the configuration it started with; a live apply
    // right after it replaces that configuration in the worker. What the
    // worker counted on the old one goes to the shared table at the swap,
    // not when the download ends.
    let rules = |to: &str| {
        json!({ "zones": { "localhost": { "modules": [
            { "module": "redirects", "mode": "rust", "config": { "rules": [ { "from": "/a", "to": to } ] } } ] } } })
        .to_string()
    };
    let extra = r#"
        location /slow/ {
            graft_native on;
            limit_rate 8k;
            alias @PREFIX@/html/slow/;
        }
"#;
    let nginx = Nginx::start_extra(&rules("/first"), false, extra);
    let dir = nginx.prefix.join("html/slow");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("big.bin"), vec![b'x'; 1 << 20]).unwrap();
    let series = r#"graft_requests_total{zone="localhost",module="redirects",path="rust"}"#;
    assert_eq!(metric(&metrics(&nginx), series), Some(0));

    let mut download = std::net::TcpStream::connect(("127.0.0.1", nginx.port)).unwrap();
    std::io::Write::write_all(
        &mut download,
        b"GET /slow/big.bin HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut head = [0u8; 64];
    let n = std::io::Read::read(&mut download, &mut head).unwrap();
    assert!(head[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &head[..n]);

    nginx.write_config(&rules("/second"));
    let r = nginx.admin("POST", "/graft/admin/apply");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        metric(&metrics(&nginx), series),
        Some(1),
        "the download's count is still held by the configuration it pins"
    );
    drop(download);
    nginx.assert_clean_log(&[]);
}

/// Runs wrk against the server for `seconds`, returning its report. Each
/// request has its own connection: a keep-alive connection that an old
/// worker closes at a reload races the client's next request on it (HTTP's
/// race, not graft's), and would hide what this measures.
fn wrk(nginx: &Nginx, path: &str, seconds: u64) -> std::thread::JoinHandle<String> {
    let url = format!("http://127.0.0.1:{}{path}", nginx.port);
    std::thread::spawn(move || {
        let out = Command::new("wrk")
            .args([
                "-t1",
                "-c4",
                &format!("-d{seconds}s"),
                "-H",
                "Host: localhost",
                "-H",
                "Connection: close",
                &url,
            ])
            .output()
            .expect("wrk (make deps installs it)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
}

fn assert_no_failures(report: &str) {
    assert!(report.contains("requests in"), "{report}");
    assert!(!report.contains("Socket errors"), "{report}");
    assert!(!report.contains("Non-2xx"), "{report}");
}

#[test]
fn ten_reloads_under_load_lose_no_request() {
    let nginx = Nginx::start_workers(&config(), 2);
    let load = wrk(&nginx, "/fine", 6);
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..10 {
        nginx.reload();
        std::thread::sleep(Duration::from_millis(150));
    }
    let report = load.join().unwrap();
    assert_no_failures(&report);
    nginx.assert_clean_log(&[]);
}

#[test]
fn panics_under_load_are_served_by_lua_and_take_no_worker_down() {
    let nginx = Nginx::start(&config());
    let workers = nginx.worker_pids();
    let report = wrk(&nginx, "/panic/now", 3).join().unwrap();
    assert_no_failures(&report);
    assert_eq!(nginx.worker_pids(), workers);
    let text = metrics(&nginx);
    let panics = metric(
        &text,
        r#"graft_rust_outcomes_total{zone="localhost",module="probe",outcome="panic"}"#,
    )
    .unwrap();
    let fallbacks = metric(
        &text,
        r#"graft_requests_total{zone="localhost",module="probe",path="fallback"}"#,
    )
    .unwrap();
    assert!(panics > 100, "{panics}");
    assert_eq!(panics, fallbacks);
    nginx.assert_clean_log(&[r#"module "probe" panicked"#]);
}

#[test]
fn a_kill_switch_sends_a_module_back_to_lua_at_once() {
    let nginx = Nginx::start_workers(&config(), 2);
    let served_by = |path: &str| {
        nginx
            .get("localhost", path)
            .header("X-Graft-Impl")
            .unwrap()
            .to_string()
    };
    assert_eq!(served_by("/a"), "rust");

    let r = nginx.admin("POST", "/graft/admin/kill?module=probe&zone=localhost");
    assert_eq!((r.status, r.text().as_str()), (200, "killed\n"));
    for _ in 0..20 {
        assert_eq!(served_by("/a"), "lua", "a worker still serves Rust");
    }
    let text = metrics(&nginx);
    assert!(
        text.contains(r#"graft_module_killed{zone="localhost",module="probe"} 1"#),
        "{text}"
    );

    assert_eq!(
        nginx
            .admin("POST", "/graft/admin/revive?module=probe&zone=localhost")
            .status,
        200
    );
    assert_eq!(served_by("/a"), "rust");
    // Everywhere at once, without a zone.
    assert_eq!(
        nginx.admin("POST", "/graft/admin/kill?module=probe").status,
        200
    );
    assert_eq!(served_by("/a"), "lua");
    assert_eq!(
        nginx
            .admin("POST", "/graft/admin/revive?module=probe")
            .status,
        200
    );

    let r = nginx.admin("POST", "/graft/admin/kill?module=nothing");
    assert_eq!(
        (r.status, r.text().as_str()),
        (400, "no module \"nothing\"\n")
    );
    assert_eq!(
        nginx.admin("GET", "/graft/admin/kill?module=probe").status,
        405
    );
    let log = nginx.error_log();
    assert!(
        log.contains(r#"graft: kill switch of module "probe" in zone "localhost" thrown"#),
        "{log}"
    );
    nginx.assert_clean_log(&[]);
}

#[test]
fn too_many_fallbacks_roll_a_module_back_by_itself() {
    let config = json!({ "zones": { "localhost": { "modules": [
        { "module": "probe", "mode": "rust", "config": { "error_on": "/bad" },
          "rollback": { "max_rate": 0.2, "min_requests": 20, "window": 60 } } ] } } })
    .to_string();
    let nginx = Nginx::start(&config);
    for i in 0..40 {
        let path = if i % 3 == 0 { "/bad" } else { "/good" };
        nginx.get("localhost", path);
    }
    // A third went wrong, over the 20 % allowed: the module is back on Lua.
    assert_eq!(
        nginx.get("localhost", "/good").header("X-Graft-Impl"),
        Some("lua")
    );
    let text = metrics(&nginx);
    assert!(
        text.contains(r#"graft_module_killed{zone="localhost",module="probe"} 2"#),
        "{text}"
    );
    let log = nginx.error_log();
    assert!(
        log.contains(
            r#"module "probe" rolled back to lua: 7 of 20 requests went wrong in 60 s, over 20%"#
        ),
        "{log}"
    );
    nginx.assert_clean_log(&[r#"module "probe" returned an error"#]);
}

#[test]
fn a_rust_call_over_its_time_budget_is_counted_logged_and_past_the_threshold_rolled_back() {
    // The probe sleeps 20 ms on /slow; the budget is 5 ms a call, and more
    // than half the calls over it in a minute send the step back to Lua.
    let config = json!({ "zones": { "localhost": { "modules": [
        { "module": "probe", "mode": "rust", "config": { "slow_on": "/slow", "slow_us": 20000 },
          "budget": { "us": 5000, "max_rate": 0.5, "min_requests": 6, "window": 60 } } ] } } })
    .to_string();
    let nginx = Nginx::start(&config);
    for path in ["/fast", "/fast", "/fast", "/slow", "/slow", "/slow"] {
        let r = nginx.get("localhost", path);
        assert_eq!(r.header("X-Graft-Impl"), Some("rust"), "{path}");
    }
    // 3 of 6 over the budget: not over half yet. A slow call is still
    // served: the budget judges the step, not the request.
    assert_eq!(nginx.counter("localhost", 0, "over_budget"), 3);
    assert_eq!(nginx.counter("localhost", 0, "killed"), 0);
    assert_eq!(
        nginx.get("localhost", "/slow").header("X-Graft-Impl"),
        Some("rust")
    );
    // 4 of 7: the step rolled itself back.
    assert_eq!(nginx.counter("localhost", 0, "killed"), 2);
    assert_eq!(
        nginx.get("localhost", "/fast").header("X-Graft-Impl"),
        Some("lua")
    );
    let counters = nginx.counters();
    assert_eq!(counters["zones"]["localhost"][0]["budget_us"], 5000);
    let text = metrics(&nginx);
    for series in [
        r#"graft_rust_outcomes_total{zone="localhost",module="probe",outcome="over_budget"} 4"#,
        r#"graft_step_budget_seconds{zone="localhost",module="probe"} 0.005"#,
        r#"graft_module_killed{zone="localhost",module="probe"} 2"#,
    ] {
        assert!(text.contains(series), "{series} not in\n{text}");
    }
    let log = nginx.error_log();
    assert!(
        log.contains(r#"module "probe" rolled back to lua: 4 of 7 calls went over its time budget of 5000 µs in 60 s, over 50%"#),
        "{log}"
    );
    assert!(
        log.contains(r#"graft: zone "localhost" module "probe" took "#)
            && log.contains(" µs, over its time budget of 5000 µs"),
        "{log}"
    );
    nginx.assert_clean_log(&[]);
}

#[test]
fn a_time_budget_without_a_threshold_counts_and_logs_but_never_rolls_back() {
    let config = json!({ "zones": { "localhost": { "modules": [
        { "module": "probe", "mode": "rust", "config": { "slow_on": "/slow", "slow_us": 20000 },
          "budget": { "us": 5000 } } ] } } })
    .to_string();
    let nginx = Nginx::start_native(&config);
    for _ in 0..12 {
        let r = nginx.get("localhost", "/slow");
        assert_eq!(r.header("X-Graft-Impl"), Some("rust"));
    }
    assert_eq!(nginx.counter("localhost", 0, "over_budget"), 12);
    assert_eq!(nginx.counter("localhost", 0, "native"), 12);
    assert_eq!(nginx.counter("localhost", 0, "killed"), 0);
    let log = nginx.error_log();
    assert!(
        log.contains(" µs, over its time budget of 5000 µs"),
        "{log}"
    );
    nginx.assert_clean_log(&[]);
}

#[test]
fn a_configuration_applied_live_reaches_every_worker_and_a_bad_one_changes_nothing() {
    let rules = |to: &str| {
        json!({ "zones": { "localhost": { "modules": [
            { "module": "redirects", "mode": "rust", "config": { "rules": [ { "from": "/a", "to": to } ] } } ] } } })
        .to_string()
    };
    let nginx = Nginx::start_workers(&rules("/first"), 2);
    let location = || {
        nginx
            .get("localhost", "/a")
            .header("Location")
            .unwrap()
            .to_string()
    };
    assert_eq!(location(), "/first");

    nginx.write_config(&rules("/second"));
    let r = nginx.admin("POST", "/graft/admin/apply");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().starts_with("applied, generation "), "{}", r.text());
    std::thread::sleep(Duration::from_millis(600));
    for _ in 0..20 {
        assert_eq!(location(), "/second", "a worker still serves the old file");
    }

    nginx.write_config(&rules("/b\r\nSet-Cookie: x=1"));
    let r = nginx.admin("POST", "/graft/admin/apply");
    assert_eq!(r.status, 400);
    assert!(
        r.text()
            .contains(r#"zone "localhost": module #0 "redirects": field "config.rules[0].to""#),
        "{}",
        r.text()
    );
    std::thread::sleep(Duration::from_millis(600));
    for _ in 0..20 {
        assert_eq!(location(), "/second");
    }
    let log = nginx.error_log();
    assert!(
        log.contains("graft: applied the configuration live"),
        "{log}"
    );
    // A tracing event of the engine, at nginx's info level.
    assert!(
        log.lines()
            .any(|l| l.contains("[info]") && l.contains("graft: loaded 1 zones and 1 steps from ")),
        "{log}"
    );
    nginx.assert_clean_log(&["live configuration refused"]);
}

#[test]
fn a_request_in_flight_during_live_swaps_sees_one_configuration() {
    // Two steps that each stamp the version of the file they come from.
    let version = |v: &str| {
        let stamp = |name: &str| {
            json!({ "module": "headers", "mode": "rust", "config": { "rules": [
            { "response": [ { "set": name, "value": v } ] } ] } })
        };
        json!({ "zones": { "localhost": { "modules": [ stamp("X-First"), stamp("X-Second") ] } } })
            .to_string()
    };
    let nginx = Nginx::start_workers(&version("a"), 2);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let seen = std::thread::scope(|s| {
        let clients: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let mut seen = std::collections::BTreeSet::new();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let r = nginx.get("localhost", "/x");
                        let (first, second) = (
                            r.header("X-First").unwrap().to_string(),
                            r.header("X-Second").unwrap().to_string(),
                        );
                        assert_eq!(first, second, "a response mixed two configurations");
                        seen.insert(first);
                    }
                    seen
                })
            })
            .collect();
        for i in 0..20 {
            nginx.write_config(&version(if i % 2 == 0 { "b" } else { "a" }));
            assert_eq!(nginx.admin("POST", "/graft/admin/apply").status, 200);
            std::thread::sleep(Duration::from_millis(60));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect::<std::collections::BTreeSet<_>>()
    });
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["a", "b"],
        "both versions served"
    );
    nginx.assert_clean_log(&[]);
}

#[test]
fn a_configuration_sent_to_the_admin_api_is_validated_as_the_file_and_served_by_every_worker() {
    let rules = |to: &str| {
        json!({ "zones": { "localhost": { "modules": [
            { "module": "redirects", "mode": "rust", "config": { "rules": [ { "from": "/a", "to": to } ] } } ] } } })
        .to_string()
    };
    let nginx = Nginx::start_workers(&rules("/first"), 2);
    let location = || {
        nginx
            .get("localhost", "/a")
            .header("Location")
            .unwrap()
            .to_string()
    };
    // Larger than the admin location's body buffer: read from nginx's
    // temporary file.
    let mut big: serde_json::Value = serde_json::from_str(&rules("/sent")).unwrap();
    big["zones"]["localhost"]["modules"][0]["config"]["rules"]
        .as_array_mut()
        .unwrap()
        .extend((0..30_000).map(|i| json!({ "from": format!("/padding/{i}"), "to": "/x" })));
    let big = big.to_string();
    assert!(big.len() > 1 << 20);
    let r = nginx.admin_body("POST", "/graft/admin/apply", big.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    std::thread::sleep(Duration::from_millis(600));
    for _ in 0..20 {
        assert_eq!(
            location(),
            "/sent",
            "a worker still serves the old configuration"
        );
    }
    // The file on disk is not what serves now, and the metrics say so.
    assert_eq!(
        metric(&metrics(&nginx), "graft_configuration_file_unapplied{}"),
        Some(1)
    );

    let refused_before = metric(&metrics(&nginx), "graft_configuration_refused_total{}").unwrap();
    for bad in [
        rules("/b\r\nSet-Cookie: x=1"),
        "{\"zones\": ".to_string(),
        "\u{0}garbage".to_string(),
    ] {
        let r = nginx.admin_body("POST", "/graft/admin/apply", bad.as_bytes());
        assert_eq!(r.status, 400, "{bad:?}: {}", r.text());
        assert!(
            r.text().starts_with(
                "refused, the running configuration goes on: the configuration sent: "
            ),
            "{}",
            r.text()
        );
        assert!(
            !r.text().contains("graft.json"),
            "a text sent is not the file: {}",
            r.text()
        );
    }
    assert_eq!(
        metric(&metrics(&nginx), "graft_configuration_refused_total{}"),
        Some(refused_before + 3)
    );
    std::thread::sleep(Duration::from_millis(600));
    for _ in 0..20 {
        assert_eq!(location(), "/sent");
    }
    // With no body, the file is applied, as before.
    let r = nginx.admin("POST", "/graft/admin/apply");
    assert_eq!(r.status, 200, "{}", r.text());
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(location(), "/first");
}

#[test]
fn a_fleet_report_reaches_the_metrics_whole_or_not_at_all_and_worker_starts_are_counted() {
    let mut scenario = Scenario::start("no agent reported: no fleet series, two workers started");
    let nginx = Nginx::start_workers(&config(), 2);
    let text = metrics(&nginx);
    assert!(
        !text.contains("graft_fleet_"),
        "no agent reported, no fleet series: {text}"
    );
    assert_eq!(metric(&text, "graft_worker_starts_total{}"), Some(2));

    scenario.part("an agent's report reaches the metrics, every field");
    let r = nginx.admin(
        "POST",
        "/graft/admin/fleet?etcd_up=1&etcd_contact=1700000000&config_revision=42&rollout_stage=2&rollout_state=1&rollout_serving=1&healthy=1",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let text = metrics(&nginx);
    for (series, value) in [
        ("graft_fleet_etcd_up{}", 1),
        (
            "graft_fleet_etcd_contact_timestamp_seconds{}",
            1_700_000_000,
        ),
        ("graft_fleet_config_revision{}", 42),
        ("graft_fleet_rollout_stage{}", 2),
        (r#"graft_fleet_rollout_state{state="running"}"#, 1),
        (r#"graft_fleet_rollout_state{state="done"}"#, 0),
        ("graft_fleet_rollout_serving{}", 1),
        ("graft_fleet_healthy{}", 1),
    ] {
        assert_eq!(metric(&text, series), Some(value), "{series}: {text}");
    }
    assert!(metric(&text, "graft_fleet_report_timestamp_seconds{}").unwrap() > 1_700_000_000);

    scenario.part("a refused report stores nothing, a good one replaces what it names");
    for bad in [
        "/graft/admin/fleet?etcd_up=0&nope=1",
        "/graft/admin/fleet?etcd_up=0&config_revision=x",
        "/graft/admin/fleet",
    ] {
        let r = nginx.admin("POST", bad);
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
    }
    assert_eq!(
        metric(&metrics(&nginx), "graft_fleet_etcd_up{}"),
        Some(1),
        "a refused report stored nothing"
    );
    let r = nginx.admin("POST", "/graft/admin/fleet?etcd_up=0");
    assert_eq!(r.status, 200, "{}", r.text());
    let text = metrics(&nginx);
    assert_eq!(metric(&text, "graft_fleet_etcd_up{}"), Some(0));
    assert_eq!(metric(&text, "graft_fleet_config_revision{}"), Some(42));

    scenario.part("the admin listener serves the same metrics");
    let r = nginx.admin("GET", "/graft/admin/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(metric(&r.text(), "graft_fleet_etcd_up{}"), Some(0));

    scenario.part("the totals sum requests by path over every zone and module");
    // What an agent's gates read, as the full metrics count them.
    for (host, path) in [
        ("localhost", "/old"),
        ("localhost", "/panic"),
        ("canary.test", "/"),
        ("canary.test", "/a"),
        ("canary.test", "/b"),
    ] {
        nginx.get(host, path);
    }
    // Each worker moves its counts to the shared table now and then:
    // compare once two full readings around the totals agree.
    let sums = |full: &str| -> Vec<u64> {
        [
            "lua",
            "rust",
            "fallback",
            "shadow_match",
            "shadow_diff",
            "failed",
        ]
        .iter()
        .map(|path| {
            full.lines()
                .filter(|l| {
                    l.starts_with("graft_requests_total{")
                        && l.contains(&format!("path=\"{path}\""))
                })
                .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
                .sum()
        })
        .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let totals = loop {
        let before = sums(&nginx.admin("GET", "/graft/admin/metrics").text());
        let r = nginx.admin("GET", "/graft/admin/totals");
        assert_eq!(r.status, 200);
        let totals = r.text();
        let after = sums(&nginx.admin("GET", "/graft/admin/metrics").text());
        if before == after && before.iter().sum::<u64>() >= 5 {
            assert!(!totals.contains("zone="), "{totals}");
            for (path, summed) in [
                "lua",
                "rust",
                "fallback",
                "shadow_match",
                "shadow_diff",
                "failed",
            ]
            .iter()
            .zip(&before)
            {
                let total = metric(&totals, &format!("graft_requests_total{{path=\"{path}\"}}"));
                assert_eq!(total, Some(*summed), "{path}: {totals}");
            }
            break totals;
        }
        assert!(
            Instant::now() < deadline,
            "the counts did not settle: {after:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(metric(&totals, "graft_fleet_etcd_up{}"), Some(0));
    assert_eq!(metric(&totals, "graft_worker_starts_total{}"), Some(2));
    assert_eq!(metric(&totals, "graft_worker_restarts_total{}"), Some(0));

    scenario.part("a reload's new workers are started, not started again");
    nginx.reload();
    let totals = || nginx.admin("GET", "/graft/admin/totals").text();
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&totals(), "graft_worker_starts_total{}") != Some(4) {
        assert!(Instant::now() < deadline, "{}", totals());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(metric(&totals(), "graft_worker_restarts_total{}"), Some(0));

    scenario.part("a worker that died is started again, and counted so");
    let before = nginx.worker_pids();
    assert!(Command::new("kill")
        .args(["-KILL", &before[0].to_string()])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&metrics(&nginx), "graft_worker_starts_total{}") != Some(5) {
        assert!(Instant::now() < deadline, "{}", metrics(&nginx));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        metric(&totals(), "graft_worker_restarts_total{}"),
        Some(1),
        "a worker started again after one died"
    );
}

/// nginx with one probe step in `rust` (its policy 503, `extra` added to
/// its configuration) that a native-only location's slow calls roll back
/// to Lua by its time budget; `each` checks the four slow answers.
fn rolled_back_in_native_only(
    extra: serde_json::Value,
    each: impl Fn(&Nginx, &graft_tests::Response),
) -> Nginx {
    let mut probe = json!({ "slow_on": "/native/slow", "slow_us": 20000 });
    probe
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let config = json!({ "zones": { "localhost": { "modules": [
        { "module": "probe", "mode": "rust", "on_failure": { "respond": 503 }, "config": probe,
          "budget": { "us": 5000, "max_rate": 0.5, "min_requests": 4, "window": 60 } } ] } } })
    .to_string();
    let nginx = Nginx::start(&config);
    for _ in 0..4 {
        let r = nginx.get("localhost", "/native/slow");
        assert_eq!(r.status, 200, "{}", r.text());
        each(&nginx, &r);
    }
    assert_eq!(nginx.counter("localhost", 0, "killed"), 2, "rolled back");
    nginx
}

/// The same for a step's later phases: in a native-only location an
/// automatic rollback leaves its response-header phase to Rust, as its
/// request phase, rather than to a Lua header filter the location does
/// not run (which would count every response `failed` and drop the
/// step's headers).
#[test]
fn a_rollback_leaves_a_native_only_locations_response_phase_to_rust() {
    let nginx = rolled_back_in_native_only(json!({ "response_header": true }), |nginx, r| {
        assert_eq!(
            r.header("X-Probe-Response"),
            Some("rust"),
            "{}",
            nginx.error_log()
        );
    });
    let r = nginx.get("localhost", "/native/page");
    assert_eq!((r.status, r.text().as_str()), (200, "rust /native/page\n"));
    assert_eq!(
        r.header("X-Probe-Response"),
        Some("rust"),
        "the response phase served as the request phase: {}",
        nginx.error_log()
    );
    assert_eq!(
        nginx.counter("localhost", 0, "failed"),
        0,
        "{}",
        nginx.error_log()
    );
    // An operator's kill switch holds there: no Lua takes the phase, the
    // response keeps its headers as they are, counted and logged.
    let r = nginx.admin("POST", "/graft/admin/kill?module=probe");
    assert_eq!(r.status, 200, "{}", r.text());
    let r = nginx.get("localhost", "/native/page");
    assert_eq!(r.status, 503);
    assert_eq!(r.header("X-Probe-Response"), None);
    nginx.assert_clean_log(&[
        "this location runs no Lua bridge",
        "no Lua header filter took it",
        "could not decide",
    ]);
}

/// Where no Lua can serve a step (a native-only location), an automatic
/// rollback cannot send it back to Lua: that would answer every request
/// with the step's failure policy, and a client able to make calls slow
/// would turn the control into an outage. Rust serves on there, logged;
/// where the bridge runs, the rollback holds; an operator's kill switch
/// holds everywhere.
#[test]
fn a_rollback_never_turns_a_native_only_location_into_an_outage() {
    let nginx = rolled_back_in_native_only(json!({}), |_, _| {});
    // The native-only location: still Rust, never the 503 of the policy.
    let r = nginx.get("localhost", "/native/page");
    assert_eq!((r.status, r.text().as_str()), (200, "rust /native/page\n"));
    assert_eq!(nginx.counter("localhost", 0, "failed"), 0);
    // Where the Lua bridge runs, the rollback holds.
    let r = nginx.get("localhost", "/fast");
    assert_eq!(r.header("X-Graft-Impl"), Some("lua"));
    let log = nginx.error_log();
    assert!(
        log.contains(r#"module "probe" was rolled back to lua, but this location runs no Lua bridge: Rust serves on"#),
        "{log}"
    );
    // An operator's kill switch is a choice: it holds there too.
    let r = nginx.admin("POST", "/graft/admin/kill?module=probe");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(nginx.get("localhost", "/native/page").status, 503);
    nginx.assert_clean_log(&["this location runs no Lua bridge"]);
}
