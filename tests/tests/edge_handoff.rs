//! FL1's side of graft-edge: a request graft-edge passed here with a
//! `Graft-Edge` header skips the steps graft-edge ran (a step counts a
//! request once), only when signed with the key nginx holds
//! (`graft_edge_key`) for this very request, lately, and for the
//! configuration nginx serves. The header never reaches the origin,
//! accepted or not; a refused one is counted and logged, and every step
//! runs.
use graft_engine::edge::{header_value, Bound, HandOff, MAX_AGE};
use graft_tests::{metric, Nginx};
use serde_json::json;

const KEY: &str = "edge-key-0123456789abcdef0123456789abcdef";

/// Step 0 adds `X-Step0` (headers), step 1 `X-Probe: rust` (probe), both
/// in `rust`; the echo origin shows what reached it.
/// Where nginx's own pointers into the request headers show.
const VARS: &str = r#"
        location = /vars {
            access_by_lua_block { require("graft").access() }
            content_by_lua_block {
                ngx.say("http_host=", ngx.var.http_host, " cookie_x=", ngx.var.cookie_x,
                        " ua=", ngx.var.http_user_agent)
            }
        }
"#;

fn start(native: bool, with_key: bool) -> Nginx {
    start_with(native, with_key.then_some(KEY))
}

fn start_with(native: bool, key: Option<&str>) -> Nginx {
    let config = json!({ "zones": { "*": { "modules": [
        { "module": "headers", "mode": "rust", "config": { "rules": [
            { "request": [ { "set": "X-Step0", "value": "ran" } ] } ] } },
        { "module": "probe", "mode": "rust", "config": { "continue": true } },
    ] } } });
    let nginx = Nginx::prepare_custom(&config.to_string(), native, 1, VARS, "");
    let conf_path = nginx.prefix.join("nginx.conf");
    if let Some(text) = key {
        let key = nginx.prefix.join("edge.key");
        std::fs::write(&key, text).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let conf = std::fs::read_to_string(&conf_path).unwrap().replacen(
            "    graft_config ",
            &format!("    graft_edge_key {};\n    graft_config ", key.display()),
            1,
        );
        std::fs::write(&conf_path, conf).unwrap();
    }
    if key.is_none_or(|k| k.len() >= 32) {
        nginx.launch();
    }
    nginx
}

fn send(nginx: &Nginx, edge: Option<&str>) -> String {
    let header = edge.map_or(String::new(), |v| format!("Graft-Edge: {v}\r\n"));
    let r = nginx.raw(
        format!("GET /shop HTTP/1.1\r\nHost: a.test\r\n{header}Connection: close\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.text().to_ascii_lowercase()
}

fn handoffs(nginx: &Nginx, result: &str) -> u64 {
    let text = nginx.get("localhost", "/graft/metrics").text();
    metric(
        &text,
        &format!("graft_edge_handoffs_total{{result=\"{result}\"}}"),
    )
    .unwrap_or_else(|| panic!("no handoffs series for {result}:\n{text}"))
}

/// The configuration nginx serves, by hash.
fn config_hash(nginx: &Nginx) -> String {
    let text = nginx.get("localhost", "/graft/metrics").text();
    let needle = "graft_configuration_info{hash=\"";
    let at = text.find(needle).unwrap() + needle.len();
    text[at..at + text[at..].find('"').unwrap()].to_string()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A hand-off as graft-edge writes it, for `GET <target>`.
fn signed(nginx: &Nginx, zone: &str, from: usize, target: &str, key: &[u8]) -> String {
    let config = config_hash(nginx);
    let h = HandOff {
        zone,
        from,
        fallback: false,
        config: &config,
        time: now(),
    };
    let req = Bound {
        method: b"GET",
        target: target.as_bytes(),
    };
    header_value(&h, req, key).unwrap()
}

#[test]
fn a_handoff_with_the_key_skips_the_steps_graft_edge_ran() {
    for native in [false, true] {
        let nginx = start(native, true);
        let plain = send(&nginx, None);
        assert!(
            plain.contains("x-step0: ran") && plain.contains("x-probe: rust"),
            "{plain}"
        );

        let from1 = signed(&nginx, "*", 1, "/shop", KEY.as_bytes());
        let passed = send(&nginx, Some(&from1));
        assert!(
            !passed.contains("x-step0"),
            "step 0 ran again (native {native}): {passed}"
        );
        assert!(
            passed.contains("x-probe: rust"),
            "step 1 did not run: {passed}"
        );
        assert!(
            !passed.contains("graft-edge"),
            "the key reached the origin: {passed}"
        );
        assert_eq!(handoffs(&nginx, "accepted"), 1);
        assert_eq!(nginx.counter("*", 0, "rust"), 1, "step 0 counted twice");
        assert_eq!(nginx.counter("*", 1, "rust"), 2);

        // Past the last step: graft-edge ran them all.
        let all = send(
            &nginx,
            Some(&signed(&nginx, "*", 2, "/shop", KEY.as_bytes())),
        );
        assert!(
            !all.contains("x-step0") && !all.contains("x-probe"),
            "{all}"
        );
        nginx.assert_clean_log(&[]);
    }
}

#[test]
fn a_forged_or_broken_handoff_gains_nothing_and_is_counted() {
    let nginx = start(false, true);
    let wrong = signed(
        &nginx,
        "*",
        2,
        "/shop",
        b"another-key-0123456789abcdef0123456789ab",
    );
    for (value, result) in [
        (wrong.as_str(), "key"),
        ("from=2; zone=*", "malformed"),
        (
            &*signed(&nginx, "no.such.zone", 1, "/shop", KEY.as_bytes()),
            "malformed",
        ),
        (
            &*signed(&nginx, "*", 3, "/shop", KEY.as_bytes()),
            "malformed",
        ),
    ] {
        let body = send(&nginx, Some(value));
        assert!(
            body.contains("x-step0: ran") && body.contains("x-probe: rust"),
            "{value}: {body}"
        );
        assert!(
            !body.contains("graft-edge"),
            "{value}: the header reached the origin: {body}"
        );
        assert!(handoffs(&nginx, result) >= 1, "{value}");
    }
    assert_eq!(handoffs(&nginx, "accepted"), 0);
    assert!(nginx
        .error_log()
        .contains("a Graft-Edge header was refused (key)"));

    // No key at all: every hand-off is refused.
    let keyless = start(false, false);
    let body = send(
        &keyless,
        Some(&signed(&nginx, "*", 2, "/shop", KEY.as_bytes())),
    );
    assert!(
        body.contains("x-step0: ran") && !body.contains("graft-edge"),
        "{body}"
    );
    assert_eq!(handoffs(&keyless, "no_key"), 1);
}

#[test]
fn removing_the_header_leaves_nginx_reading_the_right_headers() {
    // The header first: every header after it moves in nginx's list, and
    // what nginx points at (Host, Cookie, User-Agent) must move with it.
    let nginx = start(false, true);
    for edge in [
        signed(&nginx, "*", 0, "/vars", KEY.as_bytes()),
        "junk".to_string(),
    ] {
        let r = nginx.raw(
            format!(
                "GET /vars HTTP/1.1\r\nGraft-Edge: {edge}\r\nHost: a.test\r\nX-Evil: admin.internal\r\nCookie: x=1\r\nUser-Agent: ua1\r\nX-Other: o\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            r.text().trim(),
            "http_host=a.test cookie_x=1 ua=ua1",
            "after {edge}"
        );
    }
}

#[test]
fn two_headers_are_refused_and_a_weak_key_is_refused_at_load() {
    let nginx = start(false, true);
    let good = signed(&nginx, "*", 2, "/shop", KEY.as_bytes());
    let r = nginx.raw(
        format!("GET /shop HTTP/1.1\r\nHost: a.test\r\nGraft-Edge: {good}\r\nGraft-Edge: {good}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    let body = r.text().to_ascii_lowercase();
    assert!(
        body.contains("x-step0: ran") && !body.contains("graft-edge"),
        "{body}"
    );
    assert_eq!(handoffs(&nginx, "malformed"), 1);
    assert_eq!(handoffs(&nginx, "accepted"), 0);

    let bad = start_with(false, Some("short-key"));
    let out = bad.run(&["-t"]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("graft_edge_key") && said.contains("under 32"),
        "{said}"
    );
}

#[test]
fn a_handoff_for_another_request_another_time_or_another_configuration_is_refused() {
    let nginx = start(false, true);
    let config = config_hash(&nginx);
    let at = |time: u64, config: &str, target: &str| {
        let h = HandOff {
            zone: "*",
            from: 2,
            fallback: false,
            config,
            time,
        };
        let req = Bound {
            method: b"GET",
            target: target.as_bytes(),
        };
        header_value(&h, req, KEY.as_bytes()).unwrap()
    };
    for (value, result) in [
        // Seen on another request: its MAC covers method and target.
        (at(now(), &config, "/other"), "key"),
        (at(now() - MAX_AGE - 30, &config, "/shop"), "stale"),
        (at(now(), "0000000000000000", "/shop"), "config"),
    ] {
        let body = send(&nginx, Some(&value));
        assert!(
            body.contains("x-step0: ran") && body.contains("x-probe: rust"),
            "{result}: {body}"
        );
        assert_eq!(handoffs(&nginx, result), 1, "{result}");
    }
    assert_eq!(handoffs(&nginx, "accepted"), 0);
}

#[test]
fn after_a_rust_side_that_did_not_decide_on_graft_edge_lua_serves_the_step() {
    for native in [false, true] {
        let nginx = start(native, true);
        let config = config_hash(&nginx);
        let h = HandOff {
            zone: "*",
            from: 1,
            fallback: true,
            config: &config,
            time: now(),
        };
        let req = Bound {
            method: b"GET",
            target: b"/shop",
        };
        let value = header_value(&h, req, KEY.as_bytes()).unwrap();
        let body = send(&nginx, Some(&value));
        // Step 1 (probe) from its Lua twin, not asked in Rust again.
        assert!(
            !body.contains("x-step0") && body.contains("x-probe: lua"),
            "native {native}: {body}"
        );
        assert_eq!(nginx.counter("*", 1, "fallback"), 1, "native {native}");
        assert_eq!(nginx.counter("*", 1, "rust"), 0, "native {native}");
    }
}
