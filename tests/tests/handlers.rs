//! A team's own handlers: one migrated module called where the handler
//! used to call its own function (`graft.decide`, `graft.apply`), the
//! team's function declared as the module's legacy side where it lives
//! (`graft.legacy.declare`), and locations scoped to a zone
//! (`graft_scope`).
use graft_tests::Nginx;
use serde_json::json;

/// The team's own bot filter, as it lived in their Lua: it now answers in
/// graft's decision shape.
const INIT: &str = r#"
        require("graft.legacy").declare("probe", function(req, config, zone)
            if req.path:find("bot", 1, true) then
                return { kind = "respond", status = 451, headers = {}, body = "" }
            end
            if req.path:find("boom", 1, true) then
                error("the team's function throws")
            end
            return { kind = "continue",
                     request_headers = { { action = "set", name = "X-Probe", value = "team" } } }
        end)
"#;

/// The team's existing access handler, calling one module.
const EXTRA: &str = r#"
        location /own/ {
            access_by_lua_block {
                local graft = require "graft"
                local d, err = graft.decide("probe")
                if not d then
                    ngx.log(ngx.ERR, err)
                    return ngx.exit(500)
                end
                graft.apply(d)
            }
            content_by_lua_block { require("graft.echo")() }
        }
        location /scoped/ {
            graft_scope api.scope;
            access_by_lua_block { require("graft").access() }
            content_by_lua_block { require("graft.echo")() }
        }
        location /own-missing/ {
            access_by_lua_block {
                local graft = require "graft"
                graft.apply(graft.decide("waf", "nope.zone"))
            }
            content_by_lua_block { require("graft.echo")() }
        }
        location /sub-main/ {
            auth_request /sub-auth;
            access_by_lua_block { require("graft").access() }
            content_by_lua_block { require("graft.echo")() }
        }
        location = /sub-auth {
            graft_scope api.scope;
            content_by_lua_block {
                local d = require("graft").decide("waf")
                ngx.exit(200)
            }
        }
        location /tf-scope/ {
            access_by_lua_block { require("graft").access() }
            try_files /nonexistent @strict;
        }
        location @strict {
            graft_scope api.scope;
            access_by_lua_block { require("graft").access() }
            content_by_lua_block { require("graft.echo")() }
        }
        location /scoped-native/ {
            graft_scope api.scope;
            graft_native on;
            alias @PREFIX@/html/native/;
        }
"#;

fn config() -> String {
    let probe = |mode: &str| {
        let mut step = json!({ "module": "probe", "mode": mode,
            "config": { "continue": true, "error_on": "/own/rust-fails" } });
        if mode == "canary" {
            step["percent"] = json!(100);
        }
        json!({ "modules": [ step ] })
    };
    json!({ "zones": {
        "lua.test": probe("lua"),
        "rust.test": probe("rust"),
        "shadow.test": probe("shadow"),
        "canary.test": probe("canary"),
        "api.scope": { "modules": [
            { "module": "waf", "mode": "rust", "config": { "rules": [
                { "id": "deny", "when": { "field": "path", "op": "contains", "value": "admin" }, "action": "block", "status": 403 } ] } } ] },
    } })
    .to_string()
}

fn start() -> Nginx {
    let nginx = Nginx::prepare_custom(&config(), false, 1, EXTRA, INIT);
    let out = nginx.run(&[]);
    assert!(out.status.success(), "{}", nginx.error_log());
    std::thread::sleep(std::time::Duration::from_millis(200));
    nginx
}

#[test]
fn a_handler_calls_one_module_in_every_mode() {
    let nginx = start();
    let probe_header = |host: &str, path: &str| {
        let r = nginx.get(host, path);
        assert_eq!(r.status, 200, "{host} {path}: {}", r.text());
        let text = r.text();
        text.lines()
            .find_map(|l| l.strip_prefix("x-probe: "))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("{host} {path}: no X-Probe in {text}"))
    };
    // lua and shadow: the team's function serves; rust and canary (100 %):
    // the Rust module.
    assert_eq!(probe_header("lua.test", "/own/page"), "team");
    assert_eq!(probe_header("shadow.test", "/own/page"), "team");
    assert_eq!(probe_header("rust.test", "/own/page"), "rust");
    assert_eq!(probe_header("canary.test", "/own/page"), "rust");
    // Rust fails: the team's function serves, counted as a fallback.
    assert_eq!(probe_header("rust.test", "/own/rust-fails"), "team");
    assert_eq!(nginx.counter("rust.test", 0, "fallback"), 1);
    // The team's function answers through graft.apply.
    assert_eq!(nginx.get("lua.test", "/own/bot").status, 451);
    assert_eq!(nginx.counter("lua.test", 0, "lua"), 2);
    // Shadow compared the team's function with Rust (they differ).
    assert_eq!(nginx.counter("shadow.test", 0, "shadow_diff"), 1);
    // The team's function throws: the step's failure policy (continue).
    let r = nginx.get("lua.test", "/own/boom");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(nginx.counter("lua.test", 0, "failed"), 1);
    nginx.assert_clean_log(&["could not decide", "returned an error:"]);
}

#[test]
fn a_scoped_location_uses_its_zone_whatever_the_host() {
    let nginx = start();
    for path in ["/scoped/admin", "/scoped-native/admin"] {
        let r = nginx.get("any.host", path);
        assert_eq!(r.status, 403, "{path}: {}", r.text());
    }
    assert_eq!(nginx.get("any.host", "/scoped/page").status, 200);
    assert_eq!(nginx.counter("api.scope", 0, "rust"), 3);
}

#[test]
fn a_scope_naming_no_zone_is_refused() {
    let nginx = Nginx::prepare_extra(
        &config(),
        false,
        1,
        "location /x/ { graft_scope nope.scope; return 200; }",
    );
    let (ok, out) = nginx.test_config();
    assert!(!ok, "{out}");
    assert!(
        out.contains("graft_scope \"nope.scope\": no such zone"),
        "{out}"
    );
}

#[test]
fn a_declare_after_graft_loads_is_refused() {
    let nginx = Nginx::prepare_custom(
        &config(),
        false,
        1,
        "",
        r#"require "graft"
        require("graft.legacy").declare("probe", function() end)"#,
    );
    let out = nginx.run(&[]);
    assert!(!out.status.success());
    assert!(
        nginx
            .error_log()
            .contains("declare before require \"graft\""),
        "{}",
        nginx.error_log()
    );
}

#[test]
fn a_capture_replays_with_no_difference() {
    use graft_tests::corpus::{parse, CorpusRequest};
    let config = json!({ "zones": {
        "cap.test": { "modules": [
            { "module": "waf", "mode": "shadow", "config": { "rules": [
                { "id": "deny", "when": { "field": "path", "op": "contains", "value": "admin" }, "action": "block", "status": 403 } ],
                "signatures": ["script_injection"] } },
            { "module": "redirects", "mode": "shadow", "config": { "rules": [ { "from": "/old", "to": "/new" } ] } },
        ] },
    } });
    let nginx = Nginx::prepare(&config.to_string());
    let conf = nginx.prefix.join("nginx.conf");
    let capture = nginx.prefix.join("capture.txt");
    let text = std::fs::read_to_string(&conf).unwrap();
    let text = text.replacen(
        "    graft_config ",
        &format!(
            "    graft_capture {} rate=0.5 max=8k drop=X-Secret;\n    graft_config ",
            capture.display()
        ),
        1,
    );
    std::fs::write(&conf, text).unwrap();
    let out = nginx.run(&[]);
    assert!(out.status.success(), "{}", nginx.error_log());
    std::thread::sleep(std::time::Duration::from_millis(200));
    let sent: Vec<CorpusRequest> = (0..40)
        .map(|i| {
            let target = match i % 4 {
                0 => format!("/old?i={i}"),
                1 => format!("/admin/{i}"),
                2 => format!("/page?q=%3Cscript%3E{i}"),
                _ => format!("/shop/{i}"),
            };
            CorpusRequest::get("cap.test", &target)
                .header("Authorization: Basic c2VjcmV0")
                .header("X-Secret: s3cret")
                .header("User-Agent: tester/1")
                .header(&format!("X-Seq: {i}"))
                .header("X-Api-Key: k3y")
        })
        .collect();
    for r in &sent {
        graft_tests::replay::send(nginx.port, r).unwrap();
    }
    let written = std::fs::read_to_string(&capture).unwrap();
    let captured = parse(&written).unwrap();
    assert_eq!(
        captured.len(),
        20,
        "rate=0.5 writes one request in two:\n{written}"
    );
    assert!(
        !written.contains("c2VjcmV0") && !written.contains("s3cret"),
        "{written}"
    );
    // An allow-list: a header graft does not know is written with its
    // value redacted; one that says how a client asks, as sent.
    assert!(!written.contains("k3y"), "{written}");
    assert!(written.contains("X-Api-Key: graft-redacted"), "{written}");
    assert!(written.contains("X-Seq: graft-redacted"), "{written}");
    assert!(written.contains("User-Agent: tester/1"), "{written}");
    let mode = |p: &std::path::Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode(&capture), 0o640, "not readable by every local user");
    assert!(captured
        .iter()
        .all(|r| r.client.is_some_and(|c| c.octets()[0] == 127)));
    // The capture, replayed: Lua and Rust answer alike.
    let report = graft_tests::replay::replay(&config, &captured, &Default::default(), &mut |_| {});
    assert!(report.clean(), "{}", report.render(&captured));
    // Bounded: past max, nothing more is written, and the log says so.
    for _ in 0..10 {
        for r in &sent {
            graft_tests::replay::send(nginx.port, r).unwrap();
        }
    }
    let size = std::fs::metadata(&capture).unwrap().len();
    assert!(size <= 8192, "{size} bytes");
    assert!(
        nginx.error_log().contains("capture file full"),
        "{}",
        nginx.error_log()
    );
    // Rotated as nginx's logs are: moved away, reopened, written anew.
    std::fs::rename(&capture, nginx.prefix.join("capture.txt.1")).unwrap();
    assert!(nginx.run(&["-s", "reopen"]).status.success());
    std::thread::sleep(std::time::Duration::from_millis(300));
    for r in &sent[..4] {
        graft_tests::replay::send(nginx.port, r).unwrap();
    }
    let fresh = std::fs::read_to_string(&capture).unwrap();
    assert_eq!(parse(&fresh).unwrap().len(), 2, "{fresh}");
    assert_eq!(mode(&capture), 0o640, "a reopened file is narrowed too");
}

#[test]
fn no_step_for_a_decide_is_served_by_the_modules_own_policy() {
    let nginx = start();
    // The WAF fails closed: a scope naming no zone answers 503, logged.
    let r = nginx.get("lua.test", "/own-missing/page");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        nginx
            .error_log()
            .contains("module \"waf\" could not decide: no zone named \"nope.zone\""),
        "{}",
        nginx.error_log()
    );
}

#[test]
fn scopes_and_subrequests_never_move_a_request_to_another_zones_steps() {
    let nginx = start();
    // A subrequest scoped to api.scope does not make the main request
    // run api.scope's steps instead of its host's.
    let r = nginx.get("lua.test", "/sub-main/admin");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("x-probe: team"), "{}", r.text());
    // An internal redirect into a location scoped to another zone runs
    // that zone's steps too.
    let r = nginx.get("lua.test", "/tf-scope/admin");
    assert_eq!(r.status, 403, "{}", r.text());
}

/// The parity helper (and graft-replay, `make run`, `make diff`) run the
/// team's own code: with a `Site` whose init Lua declares the module's
/// legacy function, that function is the Lua side compared, not the
/// generated twin.
#[test]
fn parity_compares_the_teams_declared_function_when_given_its_site() {
    use graft_tests::corpus::CorpusRequest;
    use graft_tests::parity::{shadow_parity, shadow_parity_in, ZONE};
    use graft_tests::Site;
    let config = json!({ "answer": { "status": 200, "body": "same\n" } });
    let requests = vec![CorpusRequest::get(ZONE, "/a")];
    // The shipped twin answers as the Rust side does.
    shadow_parity("probe", &config, &requests).unwrap();
    let site = Site {
        init: r#"require("graft.legacy").declare("probe", function(req, config, zone)
            return { kind = "respond", status = 200, headers = {}, body = "the team's\n" }
        end)"#
            .to_string(),
        ..Site::default()
    };
    let err = shadow_parity_in(&site, "probe", &config, &requests, |_| false).unwrap_err();
    assert!(err.contains("shadow diff"), "{err}");
}
