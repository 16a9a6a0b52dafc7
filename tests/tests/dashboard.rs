//! The migration dashboard at /graft/status, drawn by a real headless
//! Chromium (Debian's); the screenshot is kept in target/graft-tests/.
use std::process::Command;

use graft_tests::{root, Nginx};
use serde_json::json;

/// Headless Chromium on the dashboard of `nginx`.
fn chromium(nginx: &Nginx, extra: &[&str]) -> std::process::Output {
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=4000",
            "--window-size=1280,900",
        ])
        .arg(format!(
            "--user-data-dir={}",
            nginx.prefix.join("chromium").display()
        ))
        .args(extra)
        .arg(format!("http://127.0.0.1:{}/graft/status", nginx.port))
        .output()
        .expect("chromium (make deps installs it)")
}

/// The dashboard's page once its script drew it.
fn dump_dom(nginx: &Nginx) -> String {
    let out = chromium(nginx, &["--dump-dom"]);
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(dom.contains(r#"data-ready="yes""#), "{dom}");
    dom
}

#[test]
fn the_dashboard_shows_this_servers_place_in_its_fleet() {
    let nginx = Nginx::start(
        &json!({ "zones": { "*": { "modules": [ { "module": "probe", "mode": "rust" } ] } } })
            .to_string(),
    );
    let dom = dump_dom(&nginx);
    assert!(
        dom.contains(r#"<section id="fleet" hidden="">"#),
        "no agent, no fleet: {dom}"
    );
    // An agent cut off from etcd, after a rollout reverted that this
    // server could not go back from.
    let r = nginx.admin(
        "POST",
        "/graft/admin/fleet?etcd_up=0&etcd_contact=1700000000&config_revision=42&rollout_stage=1&rollout_state=3&rollout_serving=1&healthy=0",
    );
    assert_eq!(r.status, 200);
    let dom = dump_dom(&nginx);
    assert!(dom.contains(r#"<section id="fleet">"#), "{dom}");
    for cell in [
        r#"<td data-fleet="etcd" class="bad">unreachable (last answer "#,
        r#"<td data-fleet="config" class="bad">the rollout's, etcd revision 42</td>"#,
        r#"<td data-fleet="rollout" class="bad">reverted, stage 1</td>"#,
        r#"<td data-fleet="healthy" class="bad">failing</td>"#,
        r#"<td data-fleet="reported">"#,
    ] {
        assert!(dom.contains(cell), "{cell}: {dom}");
    }
    // Back in step: nothing is marked.
    let r = nginx.admin(
        "POST",
        "/graft/admin/fleet?etcd_up=1&config_revision=43&rollout_stage=2&rollout_state=2&rollout_serving=0&healthy=1",
    );
    assert_eq!(r.status, 200);
    let dom = dump_dom(&nginx);
    for cell in [
        r#"<td data-fleet="etcd">reachable</td>"#,
        r#"<td data-fleet="config">the fleet's, etcd revision 43</td>"#,
        r#"<td data-fleet="rollout">done, stage 2</td>"#,
        r#"<td data-fleet="healthy">passing</td>"#,
    ] {
        assert!(dom.contains(cell), "{cell}: {dom}");
    }
    nginx.assert_clean_log(&[]);
}

#[test]
fn the_dashboard_shows_modes_shares_and_rates() {
    let config = json!({ "zones": {
        "shop.test": { "modules": [
            { "module": "redirects", "mode": "rust", "config": { "rules": [ { "from": "/old", "to": "/new" } ] } },
            { "module": "probe", "mode": "shadow" } ] },
        "blog.test": { "modules": [ { "module": "probe", "mode": "canary", "percent": 50 } ] },
        // A step whose Lua side throws: every request is a failure.
        "fail.test": { "modules": [ { "module": "probe", "mode": "lua", "config": { "continue": true, "lua_error_on": "/" } } ] },
        // A step whose Rust side takes 3 ms against a budget of 1 ms.
        "slow.test": { "modules": [ { "module": "probe", "mode": "rust",
            "config": { "slow_on": "/", "slow_us": 3000 }, "budget": { "us": 1000 } } ] },
    }})
    .to_string();
    let nginx = Nginx::start(&config);
    for i in 0..40 {
        nginx.get("shop.test", if i % 2 == 0 { "/old" } else { "/page" });
        nginx.get("blog.test", "/post");
        nginx.get("fail.test", "/page");
    }
    for _ in 0..10 {
        nginx.get("slow.test", "/page");
    }
    let out_dir = root().join("target/graft-tests");
    std::fs::create_dir_all(&out_dir).unwrap();
    let shot = out_dir.join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let chromium = |extra: &[&str]| chromium(&nginx, extra);
    let dom = dump_dom(&nginx);
    assert!(
        dom.contains(r#"data-ready="yes""#),
        "the page did not render the counters:\n{dom}"
    );
    assert!(
        dom.contains(r#"<div class="chart" data-module="probe">"#),
        "{dom}"
    );
    assert!(
        dom.contains("blog.test: canary, fail.test: lua, shop.test: shadow"),
        "{dom}"
    );
    assert!(dom.contains(r#"<td>shop.test</td><td>redirects</td><td><span class="mode rust">rust</span></td><td class="num">40</td><td class="num">100.0 %</td>"#), "{dom}");
    // The shadowed probe always differs (it answers "rust" against "lua").
    assert!(dom.contains(r#"<td class="num bad">100.0 %</td>"#), "{dom}");
    // Each step's Rust time against its budget, and the calls over it.
    assert!(
        dom.contains(r#" / 1000</td><td class="num bad">10</td></tr>"#),
        "{dom}"
    );
    assert!(dom.contains(r#"budget µs"#), "{dom}");
    // Failures are shown, in red.
    assert!(dom.contains(r#"<td class="num bad">40</td>"#), "{dom}");
    // Where each zone stands: as far as its least migrated step.
    for (zone, rung) in [
        ("shop.test", "shadow"),
        ("blog.test", "canary"),
        ("fail.test", "lua"),
    ] {
        assert!(
            dom.contains(&format!(r#"data-zone="{zone}" data-rung="{rung}""#)),
            "{zone} not at {rung}: {dom}"
        );
    }
    // The last differences, both decisions side by side.
    assert!(
        dom.contains("X-Graft-Impl: lua") && dom.contains("X-Graft-Impl: rust"),
        "{dom}"
    );
    assert!(dom.contains("GET /page HTTP/1.1"), "{dom}");
    // Rates over the last minutes, per module.
    assert!(dom.contains(r#"<polyline class="series""#), "{dom}");

    let shot_arg = format!("--screenshot={}", shot.display());
    let out = chromium(&[&shot_arg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    nginx.assert_clean_log(&["could not decide"]);
}
