//! The migration dashboard at /graft/status, drawn by a real headless
//! Chromium (Debian's); the screenshot is kept in target/graft-tests/.
use std::process::Command;

use graft_tests::{root, Nginx};
use serde_json::json;

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
    let profile = nginx.prefix.join("chromium");
    let url = format!("http://127.0.0.1:{}/graft/status", nginx.port);
    let chromium = |extra: &[&str]| {
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
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg(&url)
            .output()
            .expect("chromium (make deps installs it)")
    };
    let dom = chromium(&["--dump-dom"]);
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
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
