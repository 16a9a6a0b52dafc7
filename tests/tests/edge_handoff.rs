//! FL1's side of graft-edge: a request graft-edge passed here with a
//! `Graft-Edge` header skips the steps graft-edge ran (a step counts a
//! request once), and only with the key nginx holds (`graft_edge_key`).
//! The header never reaches the origin, accepted or not; a refused one is
//! counted and logged, and every step runs.
use graft_engine::edge::header_value;
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
    if key.is_none_or(|k| !k.contains(';')) {
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

#[test]
fn a_handoff_with_the_key_skips_the_steps_graft_edge_ran() {
    for native in [false, true] {
        let nginx = start(native, true);
        let plain = send(&nginx, None);
        assert!(
            plain.contains("x-step0: ran") && plain.contains("x-probe: rust"),
            "{plain}"
        );

        let from1 = header_value("*", 1, KEY.as_bytes()).unwrap();
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
        let all = send(&nginx, Some(&header_value("*", 2, KEY.as_bytes()).unwrap()));
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
    let wrong = header_value("*", 2, b"another-key-0123456789abcdef0123456789ab").unwrap();
    for (value, result) in [
        (wrong.as_str(), "key"),
        ("from=2; zone=*", "malformed"),
        (
            &*header_value("no.such.zone", 1, KEY.as_bytes()).unwrap(),
            "malformed",
        ),
        (&*header_value("*", 3, KEY.as_bytes()).unwrap(), "malformed"),
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
        Some(&header_value("*", 2, KEY.as_bytes()).unwrap()),
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
        header_value("*", 0, KEY.as_bytes()).unwrap(),
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
fn two_headers_are_refused_and_a_key_the_header_cannot_carry_is_refused_at_load() {
    let nginx = start(false, true);
    let good = header_value("*", 2, KEY.as_bytes()).unwrap();
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

    let bad = start_with(false, Some("edge;key-0123456789abcdef0123456789abcdef"));
    let out = bad.run(&["-t"]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("graft_edge_key") && said.contains("\";\""),
        "{said}"
    );
}
