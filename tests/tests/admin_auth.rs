//! The admin API can switch every control off, so it serves only a call
//! with its token (`graft_admin_token`), from no browser, to a loopback
//! name; every refusal is counted by reason and logged, and changes
//! nothing. Without a token file the admin API is closed.
use graft_tests::{metric, Nginx};
use serde_json::json;

fn config() -> String {
    json!({ "zones": { "localhost": { "modules": [
        { "module": "redirects", "mode": "rust", "config": { "rules": [ { "from": "/old", "to": "/new" } ] } } ] } } })
    .to_string()
}

fn call(nginx: &Nginx, head: &str, body: &str) -> u16 {
    let request = format!(
        "POST /graft/admin/apply HTTP/1.1\r\n{head}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    nginx.admin_raw(request.as_bytes()).status
}

#[test]
fn only_a_loopback_call_with_the_token_and_no_browser_mark_reaches_the_admin_api() {
    let nginx = Nginx::start(&config());
    let token = nginx.admin_token();
    let bearer = format!("Authorization: Bearer {token}\r\n");
    let empty = r#"{"zones":{}}"#;
    // Each one would switch every control off.
    let refused = [
        ("Host: localhost\r\n".to_string(), 401, "token"),
        (
            format!("Host: localhost\r\nAuthorization: Bearer {token}x\r\n"),
            401,
            "token",
        ),
        (
            format!("Host: localhost\r\nAuthorization: Basic {token}\r\n"),
            401,
            "token",
        ),
        // A page's no-cors POST, with the token guessed or leaked.
        (
            format!("Host: localhost\r\n{bearer}Origin: http://evil.example\r\n"),
            403,
            "browser",
        ),
        (
            format!("Host: localhost\r\n{bearer}Sec-Fetch-Site: cross-site\r\n"),
            403,
            "browser",
        ),
        (
            format!("Host: localhost\r\n{bearer}Content-Type: text/plain\r\n"),
            403,
            "browser",
        ),
        (
            format!(
                "Host: localhost\r\n{bearer}Content-Type: application/x-www-form-urlencoded\r\n"
            ),
            403,
            "browser",
        ),
        // DNS rebinding: a page's own name, resolved to 127.0.0.1.
        (format!("Host: evil.example\r\n{bearer}"), 403, "host"),
        (
            format!("Host: localhost.evil.example:8081\r\n{bearer}"),
            403,
            "host",
        ),
    ];
    for (head, status, _) in &refused {
        assert_eq!(call(&nginx, head, empty), *status, "{head}");
    }
    let r = nginx.get("localhost", "/old");
    assert_eq!(r.status, 301, "nothing refused was applied");
    let metrics = nginx.admin("GET", "/graft/admin/metrics").text();
    for reason in ["token", "browser", "host"] {
        let n = refused.iter().filter(|(_, _, r)| *r == reason).count() as u64;
        let series = format!("graft_admin_refused_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(&metrics, &series), Some(n), "{series}\n{metrics}");
    }
    assert!(nginx
        .error_log()
        .contains("graft: admin API: no admin token, or a wrong one"));
    // The call with everything right.
    assert_eq!(
        call(
            &nginx,
            &format!("Host: 127.0.0.1:8081\r\n{bearer}Content-Type: application/json\r\n"),
            empty
        ),
        200
    );
    let r = nginx.get("localhost", "/old");
    assert_eq!(
        (r.status, r.text().lines().next()),
        (200, Some("origin: /old"))
    );
    nginx.assert_clean_log(&["graft: admin API: "]);
}

#[test]
fn without_a_token_file_the_admin_api_is_closed_and_a_readable_one_is_refused() {
    let nginx = Nginx::prepare(&config());
    let conf = nginx.prefix.join("nginx.conf");
    let text = std::fs::read_to_string(&conf).unwrap();
    let line = format!("graft_admin_token {}/admin.token;", nginx.prefix.display());
    assert!(text.contains(&line));
    std::fs::write(&conf, text.replace(&line, "")).unwrap();
    assert!(nginx.run(&[]).status.success(), "{}", nginx.error_log());
    std::thread::sleep(std::time::Duration::from_millis(200));
    let r = nginx.admin("GET", "/graft/admin/status");
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(nginx.error_log().contains("the admin API is closed"));
    let _ = nginx.run(&["-s", "stop"]);

    // A token every local user could read is no credential.
    std::fs::write(&conf, text).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let token = nginx.prefix.join("admin.token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, out) = nginx.test_config();
    assert!(
        !ok && out.contains("lets every local user read or write it"),
        "{out}"
    );
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&token, "short\n").unwrap();
    let (ok, out) = nginx.test_config();
    assert!(!ok && out.contains("under 32"), "{out}");
}
