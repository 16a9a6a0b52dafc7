use super::*;
use graft_contract::{LocalWindows, OwnedRequest};
use proptest::prelude::*;
use serde_json::json;

fn ctx() -> Context<'static> {
    static COUNTERS: std::sync::OnceLock<LocalWindows> = std::sync::OnceLock::new();
    Context::local(0, COUNTERS.get_or_init(LocalWindows::default))
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

/// The request path as nginx hands it over (decoded), with an optional query.
fn location_of_path(r: &Redirects, path: &[u8], query: Option<&[u8]>) -> Option<(u16, String)> {
    let mut req = OwnedRequest::get("example.com", "/");
    req.path = path.to_vec();
    req.query = query.map(<[u8]>::to_vec);
    match r.on_request(&req, &ctx()).unwrap() {
        Decision::Respond(resp) => Some((
            resp.status,
            String::from_utf8(resp.headers[0].1.as_bytes().to_vec()).unwrap(),
        )),
        Decision::Continue(_) => None,
        Decision::Decline => panic!("redirects never declines"),
    }
}

#[test]
fn prefix_without_slash_matches_whole_segments_only() {
    let r = build(json!([{ "from": "/go", "to": "https://example.com", "match": "prefix" }]));
    assert_eq!(
        location(&r, "/go"),
        Some((301, "https://example.com".into()))
    );
    assert_eq!(
        location(&r, "/go/"),
        Some((301, "https://example.com/".into()))
    );
    assert_eq!(
        location(&r, "/go/x/y?q=1"),
        Some((301, "https://example.com/x/y?q=1".into()))
    );
    // The reported bug: /go.evil.com/x went to https://example.com.evil.com/x.
    assert_eq!(location(&r, "/go.evil.com/x"), None);
    assert_eq!(location(&r, "/gopher"), None);
    assert_eq!(location(&r, "/go@evil.com"), None);
    assert_eq!(location(&r, "/go:80@evil.com"), None);
    assert_eq!(location_of_path(&r, b"/go\\evil.com", None), None);
    assert_eq!(location(&r, "/go%5Cevil.com"), None);
    assert_eq!(
        location(&r, "/go?x=1.evil.com"),
        Some((301, "https://example.com?x=1.evil.com".into()))
    );
}

#[test]
fn a_shorter_prefix_applies_when_a_longer_one_stops_mid_segment() {
    let r = build(json!([
        { "from": "/go", "to": "https://go.example.com", "match": "prefix" },
        { "from": "/", "to": "https://www.example.com/", "match": "prefix", "status": 302 },
    ]));
    assert_eq!(
        location(&r, "/go/a"),
        Some((301, "https://go.example.com/a".into()))
    );
    assert_eq!(
        location(&r, "/go.evil.com/x"),
        Some((302, "https://www.example.com/go.evil.com/x".into()))
    );
}

#[test]
fn carried_path_never_starts_a_new_authority() {
    let r = build(json!([
        { "from": "/shop", "to": "/", "match": "prefix" },
        { "from": "/s/", "to": "/", "match": "prefix" },
        { "from": "/abs/", "to": "https://example.com", "match": "prefix" },
        { "from": "/abs2", "to": "https://example.com/", "match": "prefix" },
        { "from": "/pr/", "to": "//cdn.example.com", "match": "prefix" },
    ]));
    // The reported bug: /shop/evil.com/x went to //evil.com/x.
    assert_eq!(
        location(&r, "/shop/evil.com/x"),
        Some((301, "/evil.com/x".into()))
    );
    assert_eq!(
        location(&r, "/shop//evil.com/x"),
        Some((301, "/evil.com/x".into()))
    );
    assert_eq!(
        location(&r, "/shop///evil.com"),
        Some((301, "/evil.com".into()))
    );
    assert_eq!(location(&r, "/shop"), Some((301, "/".into())));
    assert_eq!(location(&r, "/shop/"), Some((301, "/".into())));
    assert_eq!(location(&r, "/shop//"), Some((301, "/".into())));
    assert_eq!(location(&r, "/shop.evil.com"), None);
    // nginx decodes %2F before the module sees the path: both forms arrive.
    assert_eq!(
        location_of_path(&r, b"/shop///evil.com/x", None),
        Some((301, "/evil.com/x".into()))
    );
    // A literal % is carried encoded, so %2F%2F can never become //.
    assert_eq!(
        location(&r, "/shop/%2F%2Fevil.com"),
        Some((301, "/%252F%252Fevil.com".into()))
    );
    // Backslashes (which browsers read as /) are encoded.
    assert_eq!(
        location_of_path(&r, b"/shop/\\\\evil.com", None),
        Some((301, "/%5C%5Cevil.com".into()))
    );
    assert_eq!(
        location_of_path(&r, b"/shop/\\evil.com", None),
        Some((301, "/%5Cevil.com".into()))
    );
    assert_eq!(
        location(&r, "/s//evil.com"),
        Some((301, "/evil.com".into()))
    );
    assert_eq!(location(&r, "/s/evil.com"), Some((301, "/evil.com".into())));
    // An absolute target keeps its authority.
    assert_eq!(
        location(&r, "/abs/.evil.com/x"),
        Some((301, "https://example.com/.evil.com/x".into()))
    );
    assert_eq!(
        location(&r, "/abs/@evil.com"),
        Some((301, "https://example.com/@evil.com".into()))
    );
    assert_eq!(
        location(&r, "/abs/:80@evil.com"),
        Some((301, "https://example.com/:80@evil.com".into()))
    );
    assert_eq!(
        location(&r, "/abs//evil.com"),
        Some((301, "https://example.com/evil.com".into()))
    );
    assert_eq!(
        location(&r, "/abs2//evil.com"),
        Some((301, "https://example.com/evil.com".into()))
    );
    assert_eq!(
        location(&r, "/abs2/x"),
        Some((301, "https://example.com/x".into()))
    );
    assert_eq!(
        location(&r, "/pr/x"),
        Some((301, "//cdn.example.com/x".into()))
    );
    assert_eq!(
        location(&r, "/pr//evil.com"),
        Some((301, "//cdn.example.com/evil.com".into()))
    );
}

#[test]
fn carried_path_goes_before_the_targets_query_and_fragment() {
    let r = build(json!([
        { "from": "/shop", "to": "https://example.com?src=shop", "match": "prefix" },
        { "from": "/t/", "to": "/store/?src=t", "match": "prefix" },
        { "from": "/f/", "to": "/doc#top", "match": "prefix", "query": "drop" },
    ]));
    assert_eq!(
        location(&r, "/shop/evil.com/x?q=1"),
        Some((301, "https://example.com/evil.com/x?src=shop&q=1".into()))
    );
    assert_eq!(
        location(&r, "/shop"),
        Some((301, "https://example.com?src=shop".into()))
    );
    assert_eq!(
        location(&r, "/t//evil.com"),
        Some((301, "/store/evil.com?src=t".into()))
    );
    assert_eq!(location(&r, "/f/a"), Some((301, "/doc/a#top".into())));
}

#[test]
fn refuses_prefix_targets_the_carried_path_could_extend_into_a_host() {
    for to in [
        "//",
        "https://",
        "https:",
        "http:/",
        "https:///x",
        "//?x",
        "/\\x",
        "news/",
        "?x",
        "https://\\evil.com",
    ] {
        let err = Redirects::from_config(&json!({ "rules": [
            { "from": "/a", "to": "/b" },
            { "from": "/p/", "to": to, "match": "prefix" },
        ] }))
        .expect_err(to);
        assert_eq!(err.field, "rules[1].to", "{to}: {err}");
    }
    // The same targets stay allowed on exact rules: nothing is joined to them.
    for to in ["//", "https:", "news/", "?x"] {
        Redirects::from_config(&json!({ "rules": [ { "from": "/p/", "to": to } ] })).expect(to);
    }
    for to in [
        "/",
        "/x",
        "/x?y",
        "//cdn.example.com",
        "https://example.com",
        "https://example.com:8443/a/",
        "https://u@example.com?x",
        "HTTP+x.y-z://h#f",
    ] {
        build(json!([{ "from": "/p/", "to": to, "match": "prefix" }]));
    }
}

fn segment() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "ab", "b", "docs", "v1", "x y", "%", "é", ""])
        .prop_map(String::from)
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(segment(), 0..4).prop_map(|s| format!("/{}", s.join("/")))
}

/// The prefix rule's matching, stated plainly: the path is the prefix, or
/// goes on past it at a segment boundary.
fn prefix_matches(from: &str, path: &str) -> bool {
    path.strip_prefix(from)
        .is_some_and(|rest| rest.is_empty() || from.ends_with('/') || rest.starts_with('/'))
}

/// Prefix-rule targets: absolute (`scheme://host[:port]`, `//host`) or a
/// path, with or without a path, a query and a fragment.
fn target() -> impl Strategy<Value = String> {
    let authority = (
        prop::sample::select(vec!["https://", "http://", "HTTP+x.y-z://", "//"]),
        "[a-z]{1,6}(\\.[a-z]{2,3})?",
        prop::option::of(1u16..),
    )
        .prop_map(|(scheme, host, port)| match port {
            Some(port) => format!("{scheme}{host}:{port}"),
            None => format!("{scheme}{host}"),
        });
    (
        prop::option::of(authority),
        prop::sample::select(vec!["", "/", "/new", "/new/", "/a//", "/a\\b"]),
        prop::sample::select(vec!["", "?src=x", "?a/b", "#f", "?x#f/g", "#"]),
    )
        .prop_map(|(authority, path, tail)| match authority {
            Some(a) => format!("{a}{path}{tail}"),
            None if path.is_empty() => format!("/{tail}"),
            None => format!("{path}{tail}"),
        })
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
                .filter(|(from, prefix, _, _)| *prefix && prefix_matches(from, &target))
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

    /// Whatever the request path, a prefix rule with an absolute target
    /// (`scheme://host...` or `//host...`) keeps the target's scheme and
    /// authority, and one with a path target (one leading slash) never
    /// yields a Location starting with `//`.
    #[test]
    fn prefix_join_keeps_scheme_and_authority(
        from in prop::sample::select(vec!["/", "/go", "/go/", "/shop", "/a/b", "/a/b/"]),
        to in target(),
        rest in prop::collection::vec(prop_oneof![
            prop::sample::select(vec![
                "/", "//", "\\", ".", "@", ":", "evil.com", "%2F", "?", "#", ":80", " ", "\r\n",
            ]).prop_map(|s| s.as_bytes().to_vec()),
            prop::collection::vec(any::<u8>(), 1..4),
        ], 0..8),
        query in prop::option::of("[a-z=&/:@.\\\\]{1,8}"),
    ) {
        let r = build(json!([{ "from": from, "to": to, "match": "prefix" }]));
        let path = [from.as_bytes(), &rest.concat()].concat();
        let Some((_, loc)) = location_of_path(&r, &path, query.as_deref().map(str::as_bytes)) else {
            // Only a path that does not go on past `from` at a segment boundary.
            prop_assert!(!from.ends_with('/') && path.get(from.len()) != Some(&b'/'));
            return Ok(());
        };
        // Where a URL's authority ends, read as a browser would (`\` as `/`).
        let authority_end = |s: &str| -> usize {
            let start = if s.starts_with("//") { 2 } else { s.find("://").map_or(0, |i| i + 3) };
            start + s[start..].find(['/', '\\', '?', '#']).unwrap_or(s.len() - start)
        };
        let absolute =
            to.starts_with("//") || to.find("://").is_some_and(|i| !to[..i].contains('/'));
        if absolute {
            let want = &to[..authority_end(&to)];
            prop_assert!(want.len() > 2, "{:?}", to);
            prop_assert_eq!(&loc[..authority_end(&loc)], want, "{:?}", loc);
            // Nothing right after the authority reads as another authority.
            prop_assert!(!loc[want.len()..].starts_with("//"), "{:?}", loc);
        } else {
            prop_assert!(to.starts_with('/'));
            prop_assert!(!loc.starts_with("//"), "{:?}", loc);
        }
        // The carried path and query hold no `\` a browser would read as `/`.
        prop_assert_eq!(loc.matches('\\').count(), to.matches('\\').count());
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
