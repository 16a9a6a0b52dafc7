//! Parity: the same generated configurations and requests through the Lua
//! legacy module (in LuaJIT, through mlua) and the Rust module; every
//! decision must be the same. A difference fails and prints the shrunk case.
use graft_contract::{Context, Decision, LocalWindows, Module, OwnedRequest};
use graft_tests::root;
use mlua::{Function, Lua, LuaSerdeExt, Table, Value};
use proptest::prelude::*;
use serde_json::json;

/// A decision reduced to what a client sees: (kind, status, headers, body).
type Seen = (String, u16, Vec<(Vec<u8>, Vec<u8>)>, Vec<u8>);

fn lua_env() -> Lua {
    let lua = Lua::new();
    let path = root().join("lua/?.lua");
    lua.load(format!(
        "package.path = {:?} .. ';' .. package.path",
        path.to_str().unwrap()
    ))
    .exec()
    .unwrap();
    lua
}

fn lua_module(lua: &Lua, name: &str, config: &serde_json::Value) -> Table {
    let require: Function = lua.globals().get("require").unwrap();
    let module: Table = require.call(format!("graft.legacy.{name}")).unwrap();
    let new: Function = module.get("new").unwrap();
    new.call(lua.to_value(config).unwrap()).unwrap()
}

fn lua_request(lua: &Lua, req: &OwnedRequest) -> Table {
    let t = lua.create_table().unwrap();
    t.set("method", lua.create_string(&req.method).unwrap())
        .unwrap();
    t.set("path", lua.create_string(&req.path).unwrap())
        .unwrap();
    t.set("raw_uri", lua.create_string(&req.raw_uri).unwrap())
        .unwrap();
    if let Some(q) = &req.query {
        t.set("query", lua.create_string(q).unwrap()).unwrap();
    }
    t.set("host", lua.create_string(&req.host).unwrap())
        .unwrap();
    t
}

fn bytes(v: Value) -> Vec<u8> {
    match v {
        Value::String(s) => s.as_bytes().to_vec(),
        Value::Nil => vec![],
        other => panic!("not a string: {other:?}"),
    }
}

fn lua_decide(lua: &Lua, inst: &Table, req: &OwnedRequest) -> Seen {
    let on_request: Function = inst.get("on_request").unwrap();
    let d: Table = on_request
        .call((inst.clone(), lua_request(lua, req)))
        .unwrap();
    let kind: String = d.get("kind").unwrap();
    if kind != "respond" {
        return (kind, 0, vec![], vec![]);
    }
    let headers: Table = d.get("headers").unwrap();
    let headers = headers
        .sequence_values::<Table>()
        .map(|h| {
            let h = h.unwrap();
            (bytes(h.get(1).unwrap()), bytes(h.get(2).unwrap()))
        })
        .collect();
    (
        kind,
        d.get("status").unwrap(),
        headers,
        bytes(d.get("body").unwrap()),
    )
}

fn rust_decide(module: &dyn Module, req: &OwnedRequest) -> Seen {
    match module
        .on_request(req, &Context::local(0, &LocalWindows::default()))
        .expect("redirects never fails")
    {
        Decision::Respond(r) => (
            "respond".into(),
            r.status,
            r.headers
                .iter()
                .map(|(n, v)| (n.as_str().as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect(),
            r.body,
        ),
        Decision::Continue(c) => {
            assert!(c.is_empty());
            ("continue".into(), 0, vec![], vec![])
        }
        Decision::Decline => ("decline".into(), 0, vec![], vec![]),
    }
}

fn segment() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::sample::select(vec!["a", "b", "docs", "v1", "blog", "old", "x.y", "-"])
            .prop_map(|s| s.as_bytes().to_vec()),
        // Decoded paths may hold any byte, CR, LF, NUL and non-UTF-8 among them.
        prop::collection::vec(any::<u8>(), 1..4),
    ]
}

fn path() -> impl Strategy<Value = Vec<u8>> {
    (prop::collection::vec(segment(), 0..4), any::<bool>()).prop_map(|(segs, slash)| {
        let mut p = vec![b'/'];
        p.extend(segs.join(&b'/'));
        if slash {
            p.push(b'/');
        }
        p
    })
}

fn ascii_path() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec!["a", "b", "docs", "v1", "blog", "old"]),
        0..3,
    )
    .prop_map(|s| format!("/{}", s.join("/")))
}

fn rule() -> impl Strategy<Value = serde_json::Value> {
    (
        ascii_path(),
        any::<bool>(),
        prop::sample::select(vec![301u16, 302, 307, 308]),
        prop::sample::select(vec!["/t", "https://example.com/new/", "/s?src=x", "/"]),
        prop::option::of(prop::sample::select(vec!["keep", "drop"])),
    )
        .prop_map(|(from, prefix, status, to, query)| {
            let mut r = json!({ "from": from, "to": to, "status": status });
            if prefix {
                r["match"] = json!("prefix");
            }
            if let Some(q) = query {
                r["query"] = json!(q);
            }
            r
        })
}

fn rules() -> impl Strategy<Value = serde_json::Value> {
    prop::collection::vec(rule(), 1..10).prop_map(|rules| {
        // One rule per (from, match kind): a duplicate is refused at load.
        let mut seen = std::collections::HashSet::new();
        let rules: Vec<_> = rules
            .into_iter()
            .filter(|r| seen.insert((r["from"].to_string(), r["match"].to_string())))
            .collect();
        json!({ "rules": rules })
    })
}

fn request() -> impl Strategy<Value = OwnedRequest> {
    (
        path(),
        prop::option::of(prop::collection::vec(any::<u8>(), 1..12)),
    )
        .prop_map(|(path, query)| OwnedRequest {
            method: b"GET".to_vec(),
            raw_uri: path.clone(),
            path,
            query,
            host: b"example.com".to_vec(),
            ..Default::default()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// 64 generated configurations × 32 generated requests each.
    #[test]
    fn redirects_decide_alike_in_lua_and_rust(
        config in rules(),
        requests in prop::collection::vec(request(), 32),
    ) {
        let lua = lua_env();
        let legacy = lua_module(&lua, "redirects", &config);
        let rust = graft_redirects::Redirects::from_config(&config).unwrap();
        for req in &requests {
            prop_assert_eq!(lua_decide(&lua, &legacy, req), rust_decide(&rust, req), "request {:?}", req);
        }
    }
}

#[test]
fn a_fixed_corpus_decides_alike() {
    let config = json!({ "rules": [
        { "from": "/old", "to": "/new" },
        { "from": "/blog/", "to": "https://blog.example.com/", "match": "prefix", "status": 308 },
        { "from": "/blog/2019/", "to": "/archive/", "match": "prefix", "query": "drop" },
        { "from": "/promo", "to": "/sale?src=promo", "status": 302 },
        { "from": "/", "to": "/home", "status": 307 },
    ]});
    let lua = lua_env();
    let legacy = lua_module(&lua, "redirects", &config);
    let rust = graft_redirects::Redirects::from_config(&config).unwrap();
    let mut redirected = 0;
    let targets = [
        "/",
        "/old",
        "/old/",
        "/old?x=1",
        "/blog/",
        "/blog/a b",
        "/blog/2019/x?y=2",
        "/blog/2019",
        "/promo?a=%0d%0a",
        "/promo?",
        "/nothing",
        "/blog/%",
        "/blog/?#[]",
    ];
    for target in targets {
        let mut req = OwnedRequest::get("example.com", target);
        let (l, r) = (lua_decide(&lua, &legacy, &req), rust_decide(&rust, &req));
        assert_eq!(l, r, "{target}");
        redirected += usize::from(l.0 == "respond");
        req.path.extend_from_slice(b"\r\n\x00\xff");
        assert_eq!(
            lua_decide(&lua, &legacy, &req),
            rust_decide(&rust, &req),
            "{target} + bytes"
        );
    }
    assert!(
        redirected >= 10,
        "the corpus barely exercises the rules: {redirected}"
    );
}
