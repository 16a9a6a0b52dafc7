//! The WAF over any request (`graft_fuzz::request`) with every signature
//! list and `inspect_body`, and rules on the body fields: form arguments,
//! JSON strings, raw bytes (multipart, text, no Content-Type). Whatever
//! the request, the WAF decides (no panic), fails exactly when the body is
//! one graft cannot read as a backend may (`body::undecidable`: its step's
//! failure policy answers), and a block carries the rule's or the
//! signatures' status.
#![no_main]

use graft_contract::{Configured, Context, Decision, LocalWindows, Module};
use graft_waf::Waf;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn waf() -> &'static Waf {
    static WAF: OnceLock<Waf> = OnceLock::new();
    WAF.get_or_init(|| {
        let config = serde_json::json!({
            "rules": [
                { "id": "role", "when": { "field": "body_arg:role", "op": "equals", "value": "admin" }, "action": "block", "status": 401 },
                { "id": "debug", "when": { "field": "json", "op": "regex", "value": "^debug$" }, "action": "block", "status": 400 },
                { "id": "magic", "when": { "field": "body", "op": "prefix", "value": "MAGIC" }, "action": "block", "status": 418 },
                { "id": "office", "when": { "all": [
                    { "field": "client", "op": "in_prefix", "values": ["10.0.0.0/8", "2001:db8::/32"] },
                    { "field": "body_args", "op": "contains", "value": "ok" } ] }, "action": "allow" },
                { "id": "seen", "when": { "field": "headers", "op": "in", "values": ["x", "y"] }, "action": "log" }
            ],
            "signatures": ["sql_injection", "path_traversal", "script_injection"],
            "inspect_body": true
        });
        Waf::configure(&config).expect("the fuzz WAF configuration loads")
    })
}

fuzz_target!(|data: &[u8]| {
    let req = graft_fuzz::request(data);
    let windows = LocalWindows::default();
    let undecidable = req
        .body
        .as_ref()
        .and(graft_contract::body::undecidable(&req));
    let decision = match waf().on_request(&req, &Context::local(0, &windows)) {
        Ok(d) => d,
        Err(e) => {
            assert!(
                undecidable.is_some(),
                "the WAF failed on a decidable body: {e:?}"
            );
            return;
        }
    };
    assert!(
        undecidable.is_none(),
        "the WAF decided an undecidable body: {undecidable:?}"
    );
    if let Decision::Respond(r) = decision {
        assert!(
            matches!(r.status, 400 | 401 | 403 | 418),
            "status {}",
            r.status
        );
    }
});
