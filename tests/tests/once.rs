//! A step runs once a request, whoever reaches it first: the native
//! pipeline, the Lua bridge (`graft.access`) or a team's handler
//! (`graft.decide`). A later reach returns `continue` with no change and
//! counts nothing: the first run's decision was applied.
use graft_tests::Nginx;
use serde_json::json;

const EXTRA: &str = r#"
        location /native-then-decide/ {
            graft_native on;
            content_by_lua_block {
                local graft = require "graft"
                graft.apply(graft.decide("headers"))
                require("graft.echo")()
            }
        }
        location /decide-then-access/ {
            access_by_lua_block {
                local graft = require "graft"
                graft.apply(graft.decide("headers"))
                graft.apply(graft.decide("headers"))
                graft.access()
            }
            content_by_lua_block { require("graft.echo")() }
        }
        location /decide-one-then-all/ {
            access_by_lua_block {
                local graft = require "graft"
                graft.apply(graft.decide("headers"))
                graft.access()
            }
            content_by_lua_block { require("graft.echo")() }
        }
        location = /auth {
            internal;
            content_by_lua_block {
                local graft = require "graft"
                graft.apply(graft.decide("waf"))
                ngx.exit(200)
            }
        }
        location /auth-then-all/ {
            auth_request /auth;
            access_by_lua_block { require("graft").access() }
            content_by_lua_block { require("graft.echo")() }
        }
        location /native-decide-finish/ {
            graft_native on;
            access_by_lua_block {
                local graft = require "graft"
                graft.apply(graft.decide("headers"))
            }
            content_by_lua_block { require("graft.echo")() }
        }
"#;

fn config() -> String {
    let headers = json!({ "module": "headers", "mode": "rust", "config": { "rules": [ {
        "request": [ { "add": "X-Once", "value": "1" } ],
        "response": [ { "add": "X-Once-Out", "value": "1" } ] } ] } });
    json!({ "zones": {
        "once.test": { "modules": [ headers ] },
        // The native pipeline hands this zone on at its first step (mode
        // lua, and no Lua bridge in the location): the native finish runs
        // it, after the handler's graft.decide ran the second.
        // A WAF before the step a handler runs first: the bridge still
        // runs the WAF (a claim passes the claimed step only).
        "two.test": { "modules": [
            { "module": "waf", "mode": "rust", "config": { "rules": [
                { "id": "deny", "when": { "field": "path", "op": "contains", "value": "admin" },
                  "action": "block", "status": 403 } ] } },
            headers.clone() ] },
        "finish.test": { "modules": [
            { "module": "probe", "mode": "lua", "on_failure": "continue", "config": { "continue": true } },
            headers ] },
    } })
    .to_string()
}

fn once(nginx: &Nginx, host: &str, path: &str) {
    let r = nginx.get(host, path);
    assert_eq!(r.status, 200, "{host} {path}: {}", r.text());
    let text = r.text();
    assert!(
        text.lines().any(|l| l == "x-once: 1"),
        "{host} {path}: the request header added once\n{text}"
    );
    let out: Vec<_> = r
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("x-once-out"))
        .collect();
    assert_eq!(out.len(), 1, "{host} {path}: {:?}", r.headers);
}

#[test]
fn a_step_reached_twice_runs_once() {
    let nginx = Nginx::start_extra(&config(), false, EXTRA);
    once(&nginx, "once.test", "/native-then-decide/a");
    once(&nginx, "once.test", "/decide-then-access/a");
    assert_eq!(
        nginx.counter("once.test", 0, "rust"),
        2,
        "one run a request"
    );
    assert_eq!(nginx.counter("once.test", 0, "native"), 1);

    once(&nginx, "finish.test", "/native-decide-finish/a");
    assert_eq!(nginx.counter("finish.test", 1, "rust"), 1);
    assert_eq!(
        nginx.counter("finish.test", 1, "native"),
        0,
        "the handler ran it"
    );
    // The native finish still ran the step the native pipeline handed on.
    assert_eq!(nginx.counter("finish.test", 0, "failed"), 1);

    // A handler ran the second step: the bridge runs the first, and passes
    // only the one the handler ran.
    assert_eq!(
        nginx.get("two.test", "/decide-one-then-all/admin").status,
        403
    );
    once(&nginx, "two.test", "/decide-one-then-all/a");
    assert_eq!(
        nginx.counter("two.test", 0, "rust"),
        2,
        "the WAF ran each time"
    );
    // A subrequest's graft.decide runs the step for itself: the main
    // request's pipeline still runs it on its own URI.
    assert_eq!(nginx.get("two.test", "/auth-then-all/admin").status, 403);
    nginx.assert_clean_log(&["this location runs no Lua bridge"]);
}
