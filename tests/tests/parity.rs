//! Parity, the one harness that runs Lua twins outside nginx:
//! generated configurations and requests through the Lua twin
//! (LuaJIT, through mlua) and the Rust module, for redirects, url_normalize,
//! ip_access and headers (with the condition language); the whole
//! decisions must be equal, and a difference prints the shrunk case. (waf
//! and rate_limit need ngx.re and shared dicts: their parity runs through
//! nginx, with `graft_tests::parity::shadow_parity`, in shadow_parity.rs and
//! replay.rs.)
use std::net::IpAddr;

use graft_contract::{
    args::for_each_arg, Context, Decision, HeaderAction, LocalWindows, ModuleFactory, OwnedRequest,
};
use graft_tests::root;
use mlua::{Function, Lua, LuaSerdeExt, Table, Value};
use proptest::prelude::*;
use serde_json::json;

/// A decision as both sides can state it.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    kind: String,
    status: u16,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: Vec<u8>,
    log: Vec<String>,
    uri: Option<Vec<u8>>,
    request_headers: Vec<(String, String, Vec<u8>)>,
    response_headers: Vec<(String, String, Vec<u8>)>,
}

fn action(a: HeaderAction) -> String {
    match a {
        HeaderAction::Set => "set",
        HeaderAction::Add => "add",
        HeaderAction::Remove => "remove",
    }
    .into()
}

fn rust_seen(d: Decision) -> Seen {
    let mut s = Seen {
        kind: String::new(),
        status: 0,
        headers: vec![],
        body: vec![],
        log: vec![],
        uri: None,
        request_headers: vec![],
        response_headers: vec![],
    };
    match d {
        Decision::Respond(r) => {
            s.kind = "respond".into();
            s.status = r.status;
            s.headers = r
                .headers
                .iter()
                .map(|(n, v)| (n.as_str().as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect();
            s.body = r.body;
            s.log = r.log;
        }
        Decision::Continue(c) => {
            s.kind = "continue".into();
            s.uri = c.uri;
            s.log = c.log;
            let ops = |l: &[graft_contract::HeaderOp]| {
                l.iter()
                    .map(|o| {
                        (
                            action(o.action),
                            o.name.as_str().to_string(),
                            o.value.as_bytes().to_vec(),
                        )
                    })
                    .collect()
            };
            s.request_headers = ops(&c.request_headers);
            s.response_headers = ops(&c.response_headers);
        }
        Decision::Decline => s.kind = "decline".into(),
    }
    s
}

fn bytes(v: Value) -> Vec<u8> {
    match v {
        Value::String(s) => s.as_bytes().to_vec(),
        Value::Nil => vec![],
        other => panic!("not a string: {other:?}"),
    }
}

fn list(t: &Table, key: &str) -> Vec<Table> {
    match t.get::<Value>(key).unwrap() {
        Value::Table(l) => l.sequence_values::<Table>().map(Result::unwrap).collect(),
        _ => vec![],
    }
}

fn lua_seen(d: Table) -> Seen {
    let kind: String = d.get("kind").unwrap();
    let ops = |key: &str| {
        list(&d, key)
            .iter()
            .map(|o| {
                (
                    o.get::<String>("action").unwrap(),
                    o.get::<String>("name").unwrap(),
                    bytes(o.get("value").unwrap()),
                )
            })
            .collect()
    };
    let log = match d.get::<Value>("log").unwrap() {
        Value::Table(l) => l.sequence_values::<String>().map(Result::unwrap).collect(),
        _ => vec![],
    };
    Seen {
        status: d.get::<Option<u16>>("status").unwrap().unwrap_or(0),
        headers: list(&d, "headers")
            .iter()
            .map(|h| (bytes(h.get(1).unwrap()), bytes(h.get(2).unwrap())))
            .collect(),
        body: bytes(d.get("body").unwrap()),
        uri: match d.get::<Value>("uri").unwrap() {
            Value::Nil => None,
            v => Some(bytes(v)),
        },
        request_headers: ops("request_headers"),
        response_headers: ops("response_headers"),
        log,
        kind,
    }
}

struct Harness {
    lua: Lua,
}

impl Harness {
    fn new() -> Harness {
        let lua = Lua::new();
        let path = root().join("lua/?.lua");
        lua.load(format!(
            r#"package.path = {:?} .. ';' .. package.path
               REQUEST_MT = {{ __index = {{ header = function(self, name)
                   local v = self.headers[string.lower(name)]
                   if type(v) == "table" then return v[1] end
                   return v
               end }} }}"#,
            path.to_str().unwrap()
        ))
        .exec()
        .unwrap();
        Harness { lua }
    }

    fn module(&self, name: &str, config: &serde_json::Value) -> Table {
        let require: Function = self.lua.globals().get("require").unwrap();
        let module: Table = require.call(format!("graft.legacy.{name}")).unwrap();
        let new: Function = module.get("new").unwrap();
        let (inst, err): (Value, Value) = new
            .call((self.lua.to_value(config).unwrap(), "test"))
            .unwrap();
        match inst {
            Value::Table(t) => t,
            _ => panic!("Lua {name}.new refused {config}: {err:?}"),
        }
    }

    /// The request as the bridge gives it to Lua twins: args as
    /// ngx.req.get_uri_args(0) and headers as ngx.req.get_headers(0).
    fn request(&self, req: &OwnedRequest) -> Table {
        let lua = &self.lua;
        let s = |b: &[u8]| lua.create_string(b).unwrap();
        let t = lua.create_table().unwrap();
        t.set("method", s(&req.method)).unwrap();
        t.set("path", s(&req.path)).unwrap();
        t.set("raw_uri", s(&req.raw_uri)).unwrap();
        if let Some(q) = &req.query {
            t.set("query", s(q)).unwrap();
        }
        t.set("host", s(&req.host)).unwrap();
        if let Some(c) = req.client {
            t.set("client", c.to_string()).unwrap();
        }
        let multi = |table: &Table, key: mlua::LuaString, value: Value| match table
            .raw_get::<Value>(&key)
            .unwrap()
        {
            Value::Nil => table.raw_set(key, value).unwrap(),
            Value::Table(l) => l.raw_push(value).unwrap(),
            first => {
                let l = lua.create_table().unwrap();
                l.raw_push(first).unwrap();
                l.raw_push(value).unwrap();
                table.raw_set(key, l).unwrap();
            }
        };
        let args = lua.create_table().unwrap();
        if let Some(q) = &req.query {
            for_each_arg(q, |n, v| {
                multi(
                    &args,
                    s(n),
                    v.map_or(Value::Boolean(true), |v| Value::String(s(v))),
                )
            });
        }
        t.set("args", args).unwrap();
        let headers = lua.create_table().unwrap();
        for (n, v) in &req.headers {
            multi(&headers, s(&n.to_ascii_lowercase()), Value::String(s(v)));
        }
        t.set("headers", headers).unwrap();
        let mt: Table = lua.globals().get("REQUEST_MT").unwrap();
        t.set_metatable(Some(mt)).unwrap();
        t
    }

    /// One request through both sides: (Lua's decision, Rust's).
    fn decide_both(
        &self,
        name: &str,
        factory: &dyn ModuleFactory,
        config: &serde_json::Value,
        req: &OwnedRequest,
    ) -> (Seen, Seen) {
        let rust = factory.build(config).expect("a valid configuration");
        let legacy = self.module(name, &factory.lua_config(config));
        let on_request: Function = legacy.get("on_request").unwrap();
        let l: Table = on_request
            .call((legacy.clone(), self.request(req)))
            .unwrap();
        let windows = LocalWindows::default();
        let r = rust.on_request(req, &Context::local(0, &windows)).unwrap();
        (lua_seen(l), rust_seen(r))
    }

    fn compare(
        &self,
        name: &str,
        factory: &dyn ModuleFactory,
        config: &serde_json::Value,
        reqs: &[OwnedRequest],
    ) -> Result<(), TestCaseError> {
        let rust = factory
            .build(config)
            .map_err(|e| TestCaseError::reject(e.to_string()))?;
        let legacy = self.module(name, &factory.lua_config(config));
        let on_request: Function = legacy.get("on_request").unwrap();
        let counters = LocalWindows::default();
        for req in reqs {
            let l: Table = on_request
                .call((legacy.clone(), self.request(req)))
                .unwrap();
            let r = rust.on_request(req, &Context::local(0, &counters)).unwrap();
            prop_assert_eq!(
                lua_seen(l),
                rust_seen(r),
                "config {} request {:?}",
                config,
                req
            );
        }
        Ok(())
    }
}

fn raw_path() -> impl Strategy<Value = String> {
    let seg = prop::sample::select(vec![
        "a", "b", "", ".", "..", "%2e", "%2E%2e", "%2f", "%00", "%0a", "%zz", "%4", "b%20c", "%25",
        "%252e", "%41", "x.", "..y", "%c3%a9",
    ]);
    (
        prop::collection::vec(seg, 0..7),
        prop::option::of("[a-z=&/.]{0,6}"),
    )
        .prop_map(|(s, q)| {
            format!(
                "/{}{}",
                s.join("/"),
                q.map(|q| format!("?{q}")).unwrap_or_default()
            )
        })
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        (
            prop::sample::select(vec![10u8, 127, 192]),
            0u8..3,
            0u8..3,
            any::<u8>()
        )
            .prop_map(|(a, b, c, d)| IpAddr::from([a, b, c, d])),
        (
            prop::sample::select(vec![0x2001u16, 0xfe80, 0]),
            0u16..3,
            any::<u16>()
        )
            .prop_map(|(a, b, c)| IpAddr::from([a, 0xdb8, b, 0, 0, 0, 0, c])),
    ]
}

fn prefix() -> impl Strategy<Value = String> {
    (ip(), 0u8..=128).prop_map(|(ip, len)| {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        format!("{ip}/{}", len % (max + 1))
    })
}

fn condition() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        prop::sample::select(vec!["/a", "/b", "/"])
            .prop_map(|v| json!({ "field": "path", "op": "prefix", "value": v })),
        prop::sample::select(vec!["GET", "POST"])
            .prop_map(|v| json!({ "field": "method", "op": "in", "values": [v, "PUT"] })),
        prop::sample::select(vec!["1", "x", ""])
            .prop_map(|v| json!({ "field": "arg:k", "op": "equals", "value": v })),
        prop::sample::select(vec!["x", "y"])
            .prop_map(|v| json!({ "field": "args", "op": "contains", "value": v })),
        prop::sample::select(vec!["v1", "v2"])
            .prop_map(|v| json!({ "field": "header:x-a", "op": "equals", "value": v })),
        prop::sample::select(vec!["v", "2"])
            .prop_map(|v| json!({ "field": "headers", "op": "contains", "value": v })),
        prop::collection::vec(prefix(), 1..3)
            .prop_map(|v| json!({ "field": "client", "op": "in_prefix", "values": v })),
    ];
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(|c| json!({ "all": c })),
            prop::collection::vec(inner.clone(), 0..3).prop_map(|c| json!({ "any": c })),
            inner.prop_map(|c| json!({ "not": c })),
        ]
    })
}

fn request() -> impl Strategy<Value = OwnedRequest> {
    (
        raw_path(),
        prop::sample::select(vec!["GET", "POST", "HEAD"]),
        prop::collection::vec(
            (
                prop::sample::select(vec!["X-A", "x-a", "X-B"]),
                prop::sample::select(vec!["v1", "v2", "2"]),
            ),
            0..3,
        ),
        ip(),
    )
        .prop_map(|(target, method, headers, client)| {
            let mut r = OwnedRequest::get("a.test", &target);
            r.method = method.as_bytes().to_vec();
            r.headers.extend(
                headers
                    .into_iter()
                    .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec())),
            );
            r.client = Some(client);
            r
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn url_normalize(merge in any::<bool>(), reqs in prop::collection::vec(request(), 24)) {
        Harness::new().compare("url_normalize", &graft_url_normalize::FACTORY, &json!({ "merge_slashes": merge }), &reqs)?;
    }

    #[test]
    fn ip_access(
        allow in prop::collection::vec(prefix(), 0..5),
        deny in prop::collection::vec(prefix(), 0..5),
        default_deny in any::<bool>(),
        reqs in prop::collection::vec(request(), 24),
    ) {
        let config = json!({ "allow": allow, "deny": deny, "default": if default_deny { "deny" } else { "allow" } });
        Harness::new().compare("ip_access", &graft_ip_access::FACTORY, &config, &reqs)?;
    }

    #[test]
    fn headers_and_conditions(
        rules in prop::collection::vec((prop::option::of(condition()), 0usize..3), 1..5),
        reqs in prop::collection::vec(request(), 24),
    ) {
        let ops = [
            json!([{ "set": "X-Edge", "value": "1" }]),
            json!([{ "add": "X-Trace", "value": "a b" }, { "remove": "Cookie" }]),
            json!([]),
        ];
        let rules: Vec<_> = rules.into_iter().map(|(when, o)| {
            let mut r = json!({ "request": ops[o], "response": ops[(o + 1) % 3] });
            if let Some(w) = when { r["when"] = w; }
            r
        }).collect();
        Harness::new().compare("headers", &graft_headers::FACTORY, &json!({ "rules": rules }), &reqs)?;
    }
}

/// redirects: configurations of exact and prefix rules, paths with any byte.
mod redirects {
    use super::*;

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
            Harness::new().compare("redirects", &graft_redirects::FACTORY, &config, &requests)?;
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
        let h = Harness::new();
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
            let (l, r) = h.decide_both("redirects", &graft_redirects::FACTORY, &config, &req);
            redirected += usize::from(l.kind == "respond");
            assert_eq!(l, r, "{target}");
            req.path.extend_from_slice(b"\r\n\x00\xff");
            let (l, r) = h.decide_both("redirects", &graft_redirects::FACTORY, &config, &req);
            assert_eq!(l, r, "{target} + bytes");
        }
        assert!(
            redirected >= 10,
            "the corpus barely exercises the rules: {redirected}"
        );
    }
}
