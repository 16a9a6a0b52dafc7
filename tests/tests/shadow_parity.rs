//! Parity through nginx, for the modules whose Lua side needs nginx (waf
//! uses ngx.re, rate_limit a lua_shared_dict): generated configurations
//! and generated requests through a zone whose modules run in `shadow`;
//! the shadow_diff counters must not move. A failing case shrinks to the
//! requests that differ, and the error log names both decisions.
use graft_tests::corpus::CorpusRequest;
use graft_tests::{replay, Nginx};
use proptest::prelude::*;
use serde_json::json;

fn rule() -> impl Strategy<Value = serde_json::Value> {
    let cond = prop_oneof![
        prop::sample::select(vec![
            "(?i)^/ADMIN",
            "\\d{3,}",
            "^/a/b$",
            "[<>]",
            "(?i)select.+from"
        ])
        .prop_map(|v| json!({ "field": "path", "op": "regex", "value": v })),
        prop::sample::select(vec!["(?i)bot", "^curl/", "\\s"])
            .prop_map(|v| json!({ "field": "header:user-agent", "op": "regex", "value": v })),
        prop::sample::select(vec!["1", "<", "admin"])
            .prop_map(|v| json!({ "field": "args", "op": "contains", "value": v })),
        prop::sample::select(vec!["x", "1"])
            .prop_map(|v| json!({ "field": "arg:q", "op": "equals", "value": v })),
        Just(json!({ "field": "client", "op": "in_prefix", "values": ["127.0.0.0/30", "::1"] })),
        Just(json!({ "field": "method", "op": "in", "values": ["POST", "DELETE"] })),
    ];
    (
        cond.clone(),
        prop::option::of(cond),
        prop::sample::select(vec!["block", "log", "allow"]),
        0..1000u32,
    )
        .prop_map(|(a, b, action, id)| {
            let when = match b {
                Some(b) => json!({ "any": [a, { "not": b }] }),
                None => a,
            };
            json!({ "id": format!("r{id}"), "when": when, "action": action, "status": 403 })
        })
}

fn config(rules: Vec<serde_json::Value>, lists: Vec<&str>, log_only: bool, limit: u64) -> String {
    json!({ "zones": { "p.test": { "modules": [
        { "module": "waf", "mode": "shadow", "config": {
            "rules": rules, "signatures": lists,
            "signature_action": if log_only { "log" } else { "block" } } },
        { "module": "rate_limit", "mode": "shadow", "config": { "limits": [
            { "name": "ua", "key": "header:User-Agent", "limit": limit, "window": 86400 } ] } },
    ] } } })
    .to_string()
}

fn request() -> impl Strategy<Value = CorpusRequest> {
    let part = prop::sample::select(vec![
        "a",
        "b",
        "ADMIN",
        "admin",
        "1234",
        "select%20x%20from",
        "%3Cb%3E",
        "..",
        "%2e%2e",
        "x%20y",
        "etc/passwd",
        "javascript:x",
        "q=1",
        "%00",
        "%ff",
    ]);
    (
        prop::collection::vec(part.clone(), 1..4),
        prop::collection::vec(
            (
                prop::sample::select(vec![
                    "q",
                    "id",
                    "%3Cs%3E",
                    "x",
                    "%3Cscript%3E",
                    "1%20union%20select%202",
                ]),
                part,
            ),
            0..4,
        ),
        prop::sample::select(vec!["GET", "POST", "DELETE"]),
        prop::sample::select(vec!["curl/8", "Mozilla bot", "agent"]),
    )
        .prop_map(|(segs, args, method, ua)| {
            let mut target = format!("/{}", segs.join("/"));
            for (i, (k, v)) in args.iter().enumerate() {
                target.push(if i == 0 { '?' } else { '&' });
                target.push_str(&format!("{k}={v}"));
            }
            let mut r = CorpusRequest::get("p.test", &target).header(&format!("User-Agent: {ua}"));
            r.method = method.as_bytes().to_vec();
            r
        })
}

fn shadow_diffs(nginx: &Nginx) -> u64 {
    let c = nginx.counters();
    (0..2)
        .map(|i| c["zones"]["p.test"][i]["shadow_diff"].as_u64().unwrap())
        .sum()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn waf_and_rate_limit_decide_alike_in_nginx(
        rules in prop::collection::vec(rule(), 0..6),
        lists in prop::sample::subsequence(vec!["sql_injection", "path_traversal", "script_injection"], 0..=3),
        log_only in any::<bool>(),
        limit in 1u64..6,
        requests in prop::collection::vec(request(), 40),
    ) {
        let nginx = Nginx::start(&config(rules, lists, log_only, limit));
        for r in &requests {
            let before = shadow_diffs(&nginx);
            replay::send(nginx.port, r).unwrap();
            prop_assert_eq!(shadow_diffs(&nginx), before, "{}\n{}", r.describe(), nginx.error_log());
        }
        let errors: Vec<_> = nginx.error_log().lines().filter(|l| l.contains("[error]") || l.contains("[alert]") || l.contains("[crit]")).map(String::from).collect();
        prop_assert!(errors.is_empty(), "{:?}", errors);
    }
}
