//! The response-header phase (`Module::on_response`): headers' rules on
//! the response read the status and headers the origin gave, in every
//! mode, with the same result on both sides; a failure leaves the
//! response's headers as they are, counted and logged.
use graft_tests::Nginx;
use serde_json::json;

/// An origin that answers `?status=` (200 by default) with
/// `X-Powered-By: php`, and `Vary: <?vary=>` when asked; behind the Lua
/// bridge (/resp/), or with the bridge but no Lua header filter (/bare/).
const EXTRA: &str = r#"
        location /resp/ {
            access_by_lua_block { require("graft").access() }
            header_filter_by_lua_block { require("graft").header_filter() }
            body_filter_by_lua_block { require("graft").body_filter() }
            log_by_lua_block { require("graft").log() }
            content_by_lua_block {
                ngx.status = tonumber(ngx.var.arg_status) or 200
                ngx.header["X-Powered-By"] = "php"
                if ngx.var.arg_vary then ngx.header["Vary"] = ngx.var.arg_vary end
                ngx.say("resp")
            }
        }
        location /denied/ {
            access_by_lua_block { require("graft").access() }
            header_filter_by_lua_block { require("graft").header_filter() }
            log_by_lua_block { require("graft").log() }
            content_by_lua_block { ngx.exit(403) }
        }
        location /bare/ {
            access_by_lua_block { require("graft").access() }
            content_by_lua_block {
                ngx.header["X-Powered-By"] = "php"
                ngx.say("bare")
            }
        }
"#;

fn config(mode: &str, extra_rule: Option<serde_json::Value>) -> String {
    let mut rules = vec![
        json!({ "on_response": { "lacks": "Vary" },
                "response": [ { "set": "Vary", "value": "Origin" } ] }),
        json!({ "when": { "field": "path", "op": "prefix", "value": "/resp/api" },
                "on_response": { "status": [401, 403] },
                "response": [ { "set": "Access-Control-Allow-Origin", "value": "*" } ] }),
        json!({ "on_response": { "has": "X-Powered-By" },
                "response": [ { "remove": "X-Powered-By" } ] }),
    ];
    rules.extend(extra_rule);
    json!({ "zones": { "*": { "modules": [
        { "module": "headers", "mode": mode, "config": { "rules": rules } },
    ] } } })
    .to_string()
}

/// The headers the rules act on, as the client saw them.
fn seen(nginx: &Nginx, target: &str) -> (u16, Vec<(String, Option<String>)>) {
    let r = nginx.get("a.test", target);
    let names = ["Vary", "Access-Control-Allow-Origin", "X-Powered-By"];
    (
        r.status,
        names
            .iter()
            .map(|n| (n.to_string(), r.header(n).map(str::to_string)))
            .collect(),
    )
}

#[test]
fn rules_on_the_response_act_alike_in_every_mode() {
    let cases = [
        ("/resp/api/x?status=401", 401, Some("Origin"), Some("*")),
        (
            "/resp/api/x?status=401&vary=Accept",
            401,
            Some("Accept"),
            Some("*"),
        ),
        ("/resp/api/x", 200, Some("Origin"), None),
        ("/resp/www?status=403", 403, Some("Origin"), None),
    ];
    for mode in ["rust", "lua", "shadow"] {
        let nginx = Nginx::start_extra(&config(mode, None), false, EXTRA);
        for (target, status, vary, cors) in cases {
            let (got_status, headers) = seen(&nginx, target);
            assert_eq!(got_status, status, "{mode} {target}");
            let want = vec![
                ("Vary".to_string(), vary.map(str::to_string)),
                (
                    "Access-Control-Allow-Origin".to_string(),
                    cors.map(str::to_string),
                ),
                ("X-Powered-By".to_string(), None),
            ];
            assert_eq!(headers, want, "{mode} {target}");
        }
        assert_eq!(nginx.counter("*", 0, "failed"), 0, "{mode}");
        assert_eq!(nginx.counter("*", 0, "shadow_diff"), 0, "{mode}");
        nginx.assert_clean_log(&[]);
    }
}

#[test]
fn a_change_graft_refuses_leaves_the_headers_and_is_counted_on_both_sides() {
    let framing = json!({ "on_response": {},
        "response": [ { "set": "Transfer-Encoding", "value": "chunked" } ] });
    for mode in ["rust", "lua"] {
        let nginx = Nginx::start_extra(&config(mode, Some(framing.clone())), false, EXTRA);
        let (status, headers) = seen(&nginx, "/resp/api/x?status=401");
        assert_eq!(status, 401, "{mode}");
        // Nothing of the step's changes is made: the origin's header stays.
        assert_eq!(
            headers[2],
            ("X-Powered-By".into(), Some("php".into())),
            "{mode}"
        );
        assert_eq!(headers[0], ("Vary".into(), None), "{mode}");
        assert_eq!(nginx.counter("*", 0, "failed"), 1, "{mode}");
        nginx.assert_clean_log(&["which only the server frames"]);
    }
}

#[test]
fn a_step_lua_serves_where_no_lua_filter_runs_is_counted_as_failed() {
    let nginx = Nginx::start_extra(&config("lua", None), false, EXTRA);
    let r = nginx.get("a.test", "/bare/x");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("X-Powered-By"), Some("php"));
    // The log phase runs after the answer: wait for its count.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while nginx.counter("*", 0, "failed") == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(nginx.counter("*", 0, "failed"), 1);
    nginx.assert_clean_log(&["no Lua header filter took it"]);

    // In rust, graft's own header filter runs it there.
    let rust = Nginx::start_extra(&config("rust", None), false, EXTRA);
    let r = rust.get("a.test", "/bare/x");
    assert_eq!(
        (r.header("X-Powered-By"), r.header("Vary")),
        (None, Some("Origin"))
    );
    rust.assert_clean_log(&[]);
}

#[test]
fn rules_read_the_status_of_nginx_s_own_error_answers() {
    // nginx's own error page keeps the status in err_status.
    let rule = json!({ "on_response": { "status": [403] },
        "response": [ { "set": "X-Denied", "value": "yes" } ] });
    for mode in ["rust", "lua", "shadow"] {
        let nginx = Nginx::start_extra(&config(mode, Some(rule.clone())), false, EXTRA);
        let r = nginx.get("a.test", "/denied/x");
        assert_eq!(r.status, 403, "{mode}");
        assert_eq!(r.header("X-Denied"), Some("yes"), "{mode}");
        assert_eq!(nginx.counter("*", 0, "shadow_diff"), 0, "{mode}");
        nginx.assert_clean_log(&[]);
    }
}
