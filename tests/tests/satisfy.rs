//! `satisfy any` never skips graft. nginx ends the access phase at the
//! first access handler that allows (`allow`, `auth_basic`), and
//! lua-nginx-module runs access_by_lua last: a client that passed `allow`
//! would never meet the Lua bridge. graft's own access handler runs before
//! nginx's access checks, so in such a location it runs the zone's
//! pipeline natively; a step that needs Lua there is the native finish's
//! (its failure policy, counted and logged), never skipped in silence.
use graft_tests::Nginx;
use serde_json::json;

const EXTRA: &str = r#"
        location /any/ {
            satisfy any;
            allow 127.0.0.1;
            deny all;
            auth_basic "graft";
            auth_basic_user_file @PREFIX@/htpasswd;
            access_by_lua_block { require("graft").access() }
            content_by_lua_block { require("graft.echo")() }
        }
"#;

fn waf(mode: &str) -> serde_json::Value {
    json!({ "modules": [ { "module": "waf", "mode": mode, "config": { "rules": [
        { "id": "deny", "when": { "field": "path", "op": "contains", "value": "admin" },
          "action": "block", "status": 403 } ] } } ] })
}

#[test]
fn satisfy_any_never_lets_a_client_skip_the_zones_steps() {
    let config = json!({ "zones": { "rust.test": waf("rust"), "lua.test": waf("lua") } });
    let nginx = Nginx::prepare_extra(&config.to_string(), false, 1, EXTRA);
    let conf = nginx.prefix.join("nginx.conf");
    let text = std::fs::read_to_string(&conf)
        .unwrap()
        .replace("@PREFIX@", nginx.prefix.to_str().unwrap());
    std::fs::write(&conf, text).unwrap();
    std::fs::write(nginx.prefix.join("htpasswd"), "nobody:!\n").unwrap();
    let out = nginx.run(&[]);
    assert!(out.status.success(), "{}", nginx.error_log());
    std::thread::sleep(std::time::Duration::from_millis(200));

    // The client passes `allow`: the Rust step still runs, and blocks.
    assert_eq!(nginx.get("rust.test", "/any/admin").status, 403);
    let r = nginx.get("rust.test", "/any/page");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(nginx.counter("rust.test", 0, "rust"), 2);
    // A step in Lua: the bridge is skipped by `satisfy any`, so the WAF's
    // failure policy answers (closed), counted and logged; never a pass.
    assert_eq!(nginx.get("lua.test", "/any/page").status, 503);
    assert_eq!(nginx.counter("lua.test", 0, "failed"), 1);
    nginx.assert_clean_log(&["this location runs no Lua bridge"]);
}
