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
fn start(native: bool, with_key: bool) -> Nginx {
    let config = json!({ "zones": { "*": { "modules": [
        { "module": "headers", "mode": "rust", "config": { "rules": [
            { "request": [ { "set": "X-Step0", "value": "ran" } ] } ] } },
        { "module": "probe", "mode": "rust", "config": { "continue": true } },
    ] } } });
    let nginx = Nginx::prepare_custom(&config.to_string(), native, 1, "", "");
    let conf_path = nginx.prefix.join("nginx.conf");
    if with_key {
        let key = nginx.prefix.join("edge.key");
        std::fs::write(&key, KEY).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let conf = std::fs::read_to_string(&conf_path).unwrap().replacen(
            "    graft_config ",
            &format!("    graft_edge_key {};\n    graft_config ", key.display()),
            1,
        );
        std::fs::write(&conf_path, conf).unwrap();
    }
    nginx.launch();
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
