//! Bad configuration is refused whole, with file, zone, module and field
//! named; hostile requests get a normal answer and never a crash.
use graft_tests::{metric, one_zone, Nginx};
use serde_json::json;

fn redirects(mode: &str) -> serde_json::Value {
    json!([{ "module": "redirects", "mode": mode, "config": { "rules": [
        { "from": "/old", "to": "/new" },
        { "from": "/p/", "to": "/q/", "match": "prefix" } ] } }])
}

#[test]
fn nginx_t_refuses_bad_files_naming_what_is_wrong() {
    let cases = [
        (
            one_zone("a.test", json!([{ "module": "rewritez", "mode": "rust" }])),
            r#"zone "a.test": module #0 "rewritez": field "module": unknown module; known: redirects, "#,
        ),
        (
            one_zone(
                "a.test",
                json!([{ "module": "redirects", "mode": "fastest", "config": { "rules": [] } }]),
            ),
            r#"zone "a.test": module #0 "redirects": field "mode": unknown variant `fastest`"#,
        ),
        (
            r#"{ "zones": { "a.test": { "modules": [ }"#.to_string(),
            "graft.json: invalid JSON: ",
        ),
        (
            one_zone(
                "a.test",
                json!([{ "module": "redirects", "mode": "rust", "config": { "rules": [
                { "from": "/a", "to": "/b\r\nSet-Cookie: s=1" } ] } }]),
            ),
            r#"zone "a.test": module #0 "redirects": field "config.rules[0].to": header value has a CR, LF, NUL or other control character"#,
        ),
        (
            one_zone(
                "a.test",
                json!([{ "module": "redirects", "mode": "rust", "config": { "rules": [
                { "from": "/a", "to": "/b", "status": 200 } ] } }]),
            ),
            r#"field "config.rules[0].status": 200 is not one of 301, 302, 307, 308"#,
        ),
        (
            one_zone(
                "a.test",
                json!([{ "module": "waf", "mode": "shadow", "config": { "rules": [
                { "id": "ok", "when": { "field": "path", "op": "prefix", "value": "/" }, "action": "log" },
                { "id": "bad", "when": { "field": "path", "op": "regex", "value": "(unclosed" }, "action": "block" } ] } }]),
            ),
            r#"zone "a.test": module #0 "waf": field "config.rules[1].when.value": bad regex"#,
        ),
        (
            one_zone(
                "a.test",
                json!([{ "module": "ip_access", "mode": "rust", "config": { "deny": ["10.0.0.0/8", "10.0.0.300/32"] } }]),
            ),
            r#"zone "a.test": module #0 "ip_access": field "config.deny[1]": "10.0.0.300/32" is not an IP prefix"#,
        ),
        (
            one_zone(
                "a.test",
                json!([{ "module": "headers", "mode": "rust", "config": { "rules": [
                { "response": [ { "set": "X-A", "value": "1", "colour": "red" } ] } ] } }]),
            ),
            r#"zone "a.test": module #0 "headers": field "config.rules[0].response[0].colour": unknown field `colour`"#,
        ),
        (
            one_zone(
                "a.test",
                json!([{ "module": "rate_limit", "mode": "rust", "config": { "limits": [
                { "name": "a", "key": "client", "limit": 10, "window": 100000 } ] } }]),
            ),
            r#"zone "a.test": module #0 "rate_limit": field "config.limits[0].window": seconds, from 1 to 86400"#,
        ),
    ];
    for (config, want) in cases {
        let nginx = Nginx::prepare(&config);
        let (ok, text) = nginx.test_config();
        assert!(!ok, "nginx -t accepted {config}");
        assert!(text.contains("[emerg]"), "{text}");
        assert!(
            text.contains(nginx.config_path().to_str().unwrap()),
            "file not named: {text}"
        );
        assert!(text.contains(want), "want {want:?} in:\n{text}");
    }
}

#[test]
fn a_refused_reload_leaves_the_running_configuration_serving() {
    let nginx = Nginx::start(&one_zone("localhost", redirects("rust")));
    let generation = nginx.counters()["generation"].clone();
    assert_eq!(nginx.get("localhost", "/old").status, 301);

    nginx.write_config(&one_zone(
        "localhost",
        json!([{ "module": "redirects", "mode": "sideways" }]),
    ));
    nginx.reload_refused();
    assert!(nginx
        .error_log()
        .contains(r#"field "mode": unknown variant `sideways`"#));
    let r = nginx.get("localhost", "/old");
    assert_eq!(r.status, 301, "the old configuration stopped serving");
    assert_eq!(nginx.counters()["generation"], generation);
    let refused = |nginx: &Nginx| {
        let text = nginx.get("localhost", "/graft/metrics").text();
        metric(&text, "graft_configuration_refused_total{}")
    };
    assert_eq!(refused(&nginx), Some(1), "the refused reload is counted");
    let unapplied = |nginx: &Nginx| {
        let text = nginx.get("localhost", "/graft/metrics").text();
        metric(&text, "graft_configuration_file_unapplied{}")
    };
    assert_eq!(
        unapplied(&nginx),
        Some(1),
        "the file on disk is not serving"
    );
    // `nginx -s reload` checks the file itself and signals nothing: not a
    // refusal the master saw, but the file stays unapplied.
    assert!(!nginx.run(&["-s", "reload"]).status.success());
    assert_eq!(refused(&nginx), Some(1));
    assert_eq!(unapplied(&nginx), Some(1));

    // A good file is then taken, whole.
    nginx.write_config(&one_zone(
        "localhost",
        json!([{ "module": "redirects", "mode": "lua", "config": {
        "rules": [ { "from": "/fresh", "to": "/new", "status": 302 } ] } }]),
    ));
    nginx.reload();
    assert_eq!(unapplied(&nginx), Some(0), "the file on disk serves");
    assert_eq!(nginx.get("localhost", "/fresh").status, 302);
    assert_eq!(nginx.get("localhost", "/old").status, 200);
    assert_ne!(nginx.counters()["generation"], generation);
    // The refused reload and `nginx -s reload`'s own check are the only
    // [emerg] lines.
    let log = nginx.error_log();
    assert_eq!(log.matches("[emerg]").count(), 2, "{log}");
    assert_eq!(refused(&nginx), Some(1));
    // `nginx -t` reads a file in a process of its own: not counted.
    nginx.write_config("{ not json");
    assert!(!nginx.test_config().0);
    assert_eq!(refused(&nginx), Some(1));
}

#[test]
fn hostile_requests_get_normal_answers() {
    let nginx = Nginx::start(
        &json!({ "zones": {
            "rust.test": { "modules": redirects("rust") },
            "shadow.test": { "modules": redirects("shadow") },
        }})
        .to_string(),
    );
    let workers = nginx.worker_pids();

    for zone in ["rust.test", "shadow.test"] {
        // A 10 KB URI: over nginx's header buffers, refused by nginx itself.
        let long = format!("/p/{}", "a".repeat(10 * 1024));
        assert_eq!(nginx.get(zone, &long).status, 414);

        // A 6 KB URI fits, and is redirected whole.
        let long = format!("/p/{}", "b".repeat(6 * 1024));
        let r = nginx.get(zone, &long);
        assert_eq!(r.status, 301);
        assert!(r.header("Location").unwrap().ends_with(&long[3..]));

        // 200 headers.
        let mut req = format!("GET /old HTTP/1.1\r\nHost: {zone}\r\nConnection: close\r\n");
        for i in 0..200 {
            req.push_str(&format!("X-Filler-{i}: {i}\r\n"));
        }
        req.push_str("\r\n");
        assert_eq!(nginx.raw(req.as_bytes()).status, 301);

        // CR LF encoded in the path never becomes a header.
        let r = nginx.get(zone, "/p/%0d%0aSet-Cookie:%20evil=1");
        assert_eq!(r.status, 301);
        assert_eq!(r.header("Set-Cookie"), None);
        assert!(r
            .header("Location")
            .unwrap()
            .ends_with("/q/%0D%0ASet-Cookie:%20evil=1"));

        // Bytes that are not UTF-8.
        let r = nginx.get(zone, "/p/%ff%fe?%c3%28");
        assert_eq!(r.status, 301);
        assert!(r.header("Location").unwrap().ends_with("/q/%FF%FE?%c3%28"));

        // Raw non-UTF-8 bytes in the request line, and garbage.
        let req = [
            b"GET /p/\xff\xfe HTTP/1.1\r\nHost: ".as_slice(),
            zone.as_bytes(),
            b"\r\nConnection: close\r\n\r\n",
        ]
        .concat();
        let r = nginx.raw(&req);
        assert!(r.status < 500, "{}", r.status);
        let r = nginx.raw(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n");
        assert_eq!(r.status, 400);
    }
    assert_eq!(
        nginx.counter("shadow.test", 0, "shadow_diff"),
        0,
        "{}",
        nginx.error_log()
    );
    assert_eq!(nginx.worker_pids(), workers);
    nginx.assert_clean_log(&[]);
}
