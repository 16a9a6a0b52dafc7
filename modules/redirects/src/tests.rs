use super::*;
use graft_contract::{LocalCounters, OwnedRequest};
use proptest::prelude::*;
use serde_json::json;

fn ctx() -> Context<'static> {
    static COUNTERS: std::sync::OnceLock<LocalCounters> = std::sync::OnceLock::new();
    Context::local(0, COUNTERS.get_or_init(LocalCounters::default))
}

fn build(rules: serde_json::Value) -> Redirects {
    Redirects::from_config(&json!({ "rules": rules })).expect("valid config")
}

fn location(r: &Redirects, target: &str) -> Option<(u16, String)> {
    match r
        .on_request(&OwnedRequest::get("example.com", target), &ctx())
        .unwrap()
    {
        Decision::Respond(resp) => {
            assert_eq!(resp.headers.len(), 1);
            assert_eq!(resp.headers[0].0.as_str(), "Location");
            let loc = String::from_utf8(resp.headers[0].1.as_bytes().to_vec()).unwrap();
            Some((resp.status, loc))
        }
        Decision::Continue(c) => {
            assert!(c.is_empty());
            None
        }
        Decision::Decline => panic!("redirects never declines"),
    }
}

#[test]
fn exact_rule_keeps_query_by_default() {
    let r = build(json!([{ "from": "/old", "to": "/new" }]));
    assert_eq!(location(&r, "/old"), Some((301, "/new".into())));
    assert_eq!(
        location(&r, "/old?a=1&b=2"),
        Some((301, "/new?a=1&b=2".into()))
    );
    assert_eq!(location(&r, "/old/"), None);
    assert_eq!(location(&r, "/older"), None);
}

#[test]
fn query_drop_and_target_with_query() {
    let r = build(json!([
        { "from": "/a", "to": "/x", "query": "drop", "status": 302 },
        { "from": "/b", "to": "/y?src=b", "status": 307 },
    ]));
    assert_eq!(location(&r, "/a?q=1"), Some((302, "/x".into())));
    assert_eq!(location(&r, "/b?q=1"), Some((307, "/y?src=b&q=1".into())));
    assert_eq!(location(&r, "/b"), Some((307, "/y?src=b".into())));
}

#[test]
fn longest_prefix_wins_and_exact_beats_prefix() {
    let r = build(json!([
        { "from": "/docs/", "to": "https://docs.example.com/", "match": "prefix" },
        { "from": "/docs/v1/", "to": "https://old.example.com/", "match": "prefix", "status": 308 },
        { "from": "/docs/v1/index", "to": "/home", "status": 302 },
    ]));
    assert_eq!(
        location(&r, "/docs/guide"),
        Some((301, "https://docs.example.com/guide".into()))
    );
    assert_eq!(
        location(&r, "/docs/v1/a/b?x=1"),
        Some((308, "https://old.example.com/a/b?x=1".into()))
    );
    assert_eq!(location(&r, "/docs/v1/index"), Some((302, "/home".into())));
    assert_eq!(location(&r, "/doc"), None);
}

#[test]
fn carried_path_is_escaped_so_no_header_injection() {
    let r = build(json!([{ "from": "/p/", "to": "/q/", "match": "prefix" }]));
    let mut req = OwnedRequest::get("example.com", "/p/x");
    req.path = b"/p/a\r\nSet-Cookie: x=1 \xff?#".to_vec();
    req.query = Some(b"k=%0d%0a v\"".to_vec());
    let Decision::Respond(resp) = r.on_request(&req, &ctx()).unwrap() else {
        panic!("expected a redirect")
    };
    assert_eq!(
        resp.headers[0].1.as_bytes(),
        b"/q/a%0D%0ASet-Cookie:%20x=1%20%FF%3F%23?k=%0d%0a%20v%22"
    );
}

#[test]
fn refuses_bad_rules_naming_the_field() {
    let cases = [
        (
            json!([{ "from": "/a", "to": "/b", "status": 303 }]),
            "rules[0].status",
        ),
        (json!([{ "from": "a", "to": "/b" }]), "rules[0].from"),
        (
            json!([{ "from": "/a", "to": "/b" }, { "from": "/c", "to": "/d\r\nX: y" }]),
            "rules[1].to",
        ),
        (json!([{ "from": "/a", "to": "" }]), "rules[0].to"),
        (
            json!([{ "from": "/a", "to": "/b", "colour": 1 }]),
            "rules[0].colour",
        ),
        (
            json!([{ "from": "/a", "to": "/b", "match": "regex" }]),
            "rules[0].match",
        ),
        (
            json!([{ "from": "/a", "to": "/b" }, { "from": "/a", "to": "/c" }]),
            "rules[1].from",
        ),
    ];
    for (rules, field) in cases {
        let err = Redirects::from_config(&json!({ "rules": rules })).unwrap_err();
        assert_eq!(err.field, field, "{err}");
    }
    let err = Redirects::from_config(&json!({ "rule": [] })).unwrap_err();
    assert!(err.message.contains("unknown field"), "{err}");
}

#[test]
fn bulk_lists_are_exact_rules() {
    let map: serde_json::Map<String, serde_json::Value> = (0..5000)
        .map(|i| (format!("/old/{i}"), json!(format!("/new/{i}"))))
        .collect();
    let r = Redirects::from_config(&json!({
        "rules": [ { "from": "/old/", "to": "/archive/", "match": "prefix", "status": 302 } ],
        "bulk": { "status": 308, "query": "drop", "map": map },
    }))
    .unwrap();
    assert_eq!(
        location(&r, "/old/4321?x=1"),
        Some((308, "/new/4321".into()))
    );
    assert_eq!(location(&r, "/old/x"), Some((302, "/archive/x".into())));
    let err = Redirects::from_config(&json!({
        "rules": [ { "from": "/a", "to": "/b" } ],
        "bulk": { "map": { "/a": "/c" } },
    }))
    .unwrap_err();
    assert_eq!(err.field, "bulk.map[\"/a\"]");
    let err = Redirects::from_config(&json!({ "bulk": { "map": { "/a": "/c\n" } } })).unwrap_err();
    assert_eq!(err.field, "bulk.map[\"/a\"]");
}

#[test]
fn same_path_may_have_an_exact_and_a_prefix_rule() {
    let r = build(json!([
        { "from": "/a/", "to": "/exact" },
        { "from": "/a/", "to": "/prefix/", "match": "prefix" },
    ]));
    assert_eq!(location(&r, "/a/"), Some((301, "/exact".into())));
    assert_eq!(location(&r, "/a/b"), Some((301, "/prefix/b".into())));
}

fn segment() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "docs", "v1", "x y", "%", "é"]).prop_map(String::from)
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(segment(), 0..4).prop_map(|s| format!("/{}", s.join("/")))
}

proptest! {
    /// Whatever the rules, the rule chosen is the exact one if any, else the
    /// longest matching prefix: checked against a linear scan.
    #[test]
    fn picks_the_rule_a_linear_scan_picks(
        rules in prop::collection::vec((path(), any::<bool>(), 0usize..4), 1..12),
        target in path(),
        query in prop::option::of("[a-z=&]{1,8}"),
    ) {
        let statuses = [301u16, 302, 307, 308];
        let mut seen = std::collections::HashSet::new();
        let rules: Vec<_> = rules.into_iter()
            .filter(|(from, prefix, _)| seen.insert((from.clone(), *prefix)))
            .enumerate()
            .map(|(i, (from, prefix, s))| (from, prefix, statuses[s], format!("/t{i}")))
            .collect();
        let json_rules: Vec<_> = rules.iter().map(|(from, prefix, status, to)| json!({
            "from": from, "to": to, "status": status,
            "match": if *prefix { "prefix" } else { "exact" },
        })).collect();
        let r = build(json!(json_rules));

        let expected = rules.iter().find(|(from, prefix, _, _)| !prefix && *from == target)
            .or_else(|| rules.iter()
                .filter(|(from, prefix, _, _)| *prefix && target.starts_with(from.as_str()))
                .max_by_key(|(from, ..)| from.len()));

        let full = match &query { Some(q) => format!("{target}?{q}"), None => target.clone() };
        let got = location(&r, &full);
        match expected {
            None => prop_assert_eq!(got, None),
            Some((_, prefix, status, to)) => {
                let (got_status, got_loc) = got.expect("a redirect");
                prop_assert_eq!(got_status, *status);
                prop_assert!(got_loc.starts_with(to.as_str()));
                if !prefix { prop_assert!(!got_loc[to.len()..].starts_with('/')); }
                match &query {
                    Some(q) => { let tail = format!("?{q}"); prop_assert!(got_loc.ends_with(&tail)) }
                    None => prop_assert!(!got_loc.contains('?')),
                }
            }
        }
    }

    /// No request, however hostile its path or query, yields a Location with
    /// a control byte.
    #[test]
    fn location_never_holds_control_bytes(
        path_bytes in prop::collection::vec(any::<u8>(), 0..40),
        query in prop::option::of(prop::collection::vec(any::<u8>(), 1..40)),
    ) {
        let r = build(json!([{ "from": "/", "to": "/n/", "match": "prefix" }]));
        let mut req = OwnedRequest::get("example.com", "/");
        req.path = [b"/".as_slice(), &path_bytes].concat();
        req.query = query;
        let Decision::Respond(resp) = r.on_request(&req, &ctx()).unwrap() else { panic!("no redirect") };
        prop_assert!(resp.headers[0].1.as_bytes().iter().all(|&b| b > 0x20 && b < 0x7f));
    }
}
