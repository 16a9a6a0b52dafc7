//! A decision is applied whole or not at all: graft checks a Lua
//! decision by the rules a Rust decision is checked by (header names and
//! values, framing headers) before it applies any of it, so a refused
//! part never leaves the rest applied. The step is then counted failed
//! and its failure policy decides.
use graft_tests::Nginx;
use serde_json::json;

/// The team's function: a continue that changes the request, adds
/// `Vary: Origin` to the response, and (on some paths) carries a header
/// graft refuses.
const INIT: &str = r#"
        require("graft.legacy").declare("probe", function(req, config, zone)
            local bad
            if req.path:find("/cr", 1, true) then
                bad = { action = "set", name = "X-Bad", value = "a\r\nSet-Cookie: x=1" }
            elseif req.path:find("/name", 1, true) then
                bad = { action = "set", name = "X Bad", value = "1" }
            elseif req.path:find("/length", 1, true) then
                bad = { action = "set", name = "Content-Length", value = "0" }
            elseif req.path:find("/action", 1, true) then
                bad = { action = "replace", name = "X-Bad", value = "1" }
            end
            local response = { { action = "add", name = "Vary", value = "Origin" } }
            local request = { { action = "set", name = "X-Team", value = "1" } }
            if bad and req.path:find("/req", 1, true) then
                request[2] = bad
            elseif bad then
                response[2] = bad
            end
            return { kind = "continue", uri = req.path:find("/uri", 1, true) and "/moved" or nil,
                     request_headers = request, response_headers = response }
        end)
"#;

#[test]
fn a_lua_decision_graft_refuses_in_part_is_applied_not_at_all() {
    let config = json!({ "zones": { "whole.test": { "modules": [
        { "module": "probe", "mode": "lua", "on_failure": "continue" } ] } } });
    let nginx = Nginx::prepare_custom(&config.to_string(), false, 1, "", INIT);
    let out = nginx.run(&[]);
    assert!(out.status.success(), "{}", nginx.error_log());
    std::thread::sleep(std::time::Duration::from_millis(200));

    let r = nginx.get("whole.test", "/ok");
    assert_eq!(r.header("Vary"), Some("Origin"));
    assert!(r.text().contains("x-team: 1"), "{}", r.text());

    let mut failed = 0;
    // Each kind of refusal first, so that its line is within the failure
    // lines' budget a second.
    for uri in ["", "/uri"] {
        for place in ["", "/req"] {
            for bad in ["/cr", "/name", "/length", "/action"] {
                let path = format!("{bad}{place}{uri}");
                let r = nginx.get("whole.test", &path);
                failed += 1;
                assert_eq!(r.status, 200, "{path}: {}", r.text());
                assert_eq!(r.header("Vary"), None, "{path}: applied in part");
                assert_eq!(r.header("X-Bad"), None, "{path}");
                assert_eq!(r.header("Set-Cookie"), None, "{path}");
                let text = r.text();
                assert!(!text.contains("x-team"), "{path}: applied in part: {text}");
                assert!(
                    text.starts_with(&format!("origin: {path}\n")),
                    "{path}: {text}"
                );
            }
        }
    }
    assert_eq!(nginx.counter("whole.test", 0, "failed"), failed);
    let log = nginx.error_log();
    assert!(log.contains("only the server frames"), "{log}");
    assert!(log.contains("no action graft knows: replace"), "{log}");
    nginx.assert_clean_log(&["its Lua side's decision"]);
}
