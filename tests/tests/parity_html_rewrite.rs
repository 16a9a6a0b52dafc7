//! html_rewrite's two sides write the same document: the Lua twin
//! (lua/graft/legacy/html_rewrite.lua, run in LuaJIT through mlua, fed the
//! body chunk by chunk as a body filter is) and the Rust module (on
//! lol_html, streaming), for documents cut at any bytes. Also the JSON
//! scanner's twins, graft.body and graft_contract::body.
use graft_contract::body::for_each_json_string;
use graft_contract::Module;
use graft_html_rewrite::{sample, HtmlRewrite};
use graft_tests::root;
use mlua::{Function, Lua, LuaSerdeExt, Table, Value};
use proptest::prelude::*;
use serde_json::json;

fn lua() -> Lua {
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

fn config() -> serde_json::Value {
    json!({ "head_end": "<script src=\"/rum.js\"></script>",
            "https_hosts": ["example.com", "cdn.example.com"],
            "obfuscate_emails": true })
}

fn rust_side(doc_chunks: &[Vec<u8>]) -> Vec<u8> {
    let m = HtmlRewrite::from_config(&config()).unwrap();
    let head = graft_contract::ResponseHead {
        status: 200,
        content_type: Some(b"text/html; charset=utf-8"),
        content_encoding: None,
    };
    let mut r = m.on_response_body(&head).expect("html");
    let mut out = Vec::new();
    for c in doc_chunks {
        r.write(c, &mut out).unwrap();
    }
    r.end(&mut out).unwrap();
    out
}

fn lua_side(lua: &Lua, doc_chunks: &[Vec<u8>]) -> Vec<u8> {
    let require: Function = lua.globals().get("require").unwrap();
    let module: Table = require.call("graft.legacy.html_rewrite").unwrap();
    let new: Function = module.get("new").unwrap();
    let inst: Table = new
        .call((lua.to_value(&config()).unwrap(), "test"))
        .unwrap();
    let head = lua.create_table().unwrap();
    head.set("status", 200).unwrap();
    head.set("content_type", "text/html; charset=utf-8")
        .unwrap();
    let on_body: Function = inst.get("on_response_body").unwrap();
    let rewriter: Table = on_body.call((inst, head)).unwrap();
    let write: Function = rewriter.get("write").unwrap();
    let finish: Function = rewriter.get("finish").unwrap();
    let mut out = Vec::new();
    for c in doc_chunks {
        let s: mlua::LuaString = write
            .call((rewriter.clone(), lua.create_string(c).unwrap()))
            .unwrap();
        out.extend_from_slice(&s.as_bytes());
    }
    let s: mlua::LuaString = finish.call(rewriter).unwrap();
    out.extend_from_slice(&s.as_bytes());
    out
}

/// Sample pieces, and in the body stray markup too (a stray `</` in the
/// head could swallow its end tag, where lol_html closes it implicitly
/// and the Lua twin, which builds no tree, does not: the one difference
/// left, which shadow mode would show).
fn document() -> impl Strategy<Value = String> {
    let sample = prop::sample::select(sample::PIECES).prop_map(str::to_string);
    let piece = prop_oneof![
        4 => sample.clone(),
        1 => "[a-z@. <>=\"'/!-]{0,16}",
    ];
    (
        prop::collection::vec(sample, 0..5),
        prop::collection::vec(piece, 0..10),
    )
        .prop_map(|(head, body)| sample::document(&head, &body))
}

#[test]
fn the_sample_pieces_are_rewritten_alike() {
    let lua = lua();
    let pieces: Vec<String> = sample::PIECES.iter().map(|p| p.to_string()).collect();
    let doc = sample::document(&pieces[..3], &pieces);
    let chunks = vec![doc.into_bytes()];
    let (r, l) = (rust_side(&chunks), lua_side(&lua, &chunks));
    assert_eq!(
        String::from_utf8_lossy(&l),
        String::from_utf8_lossy(&r),
        "Lua, then Rust"
    );
    assert!(String::from_utf8_lossy(&r).contains("ann&#64;example.org"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn lua_and_rust_rewrite_every_document_alike_however_it_is_cut(
        doc in document(),
        at in prop::collection::vec(0.0f64..1.0, 0..16),
    ) {
        let lua = lua();
        let chunks = sample::cut(doc.as_bytes(), &at);
        let (r, l) = (rust_side(&chunks), lua_side(&lua, &chunks));
        prop_assert_eq!(String::from_utf8_lossy(&l), String::from_utf8_lossy(&r), "document {:?}", doc);
    }

    #[test]
    fn the_json_scanners_find_the_same_strings(
        body in prop::collection::vec(prop_oneof![
            Just(b"\"".to_vec()), Just(b"\\".to_vec()), Just(b"\\u".to_vec()),
            Just(b"\\ud83d".to_vec()), Just(b"\\ude00".to_vec()), Just(b"\\n".to_vec()),
            Just(b"{\"a\":[".to_vec()), Just(b"]}".to_vec()), Just(b"\xff\xc3\xa9".to_vec()),
            "[0-9a-fA-F:, ]{0,6}".prop_map(String::into_bytes),
        ], 0..40).prop_map(|v| v.concat())
    ) {
        let lua = lua();
        let require: Function = lua.globals().get("require").unwrap();
        let m: Table = require.call("graft.body").unwrap();
        let scan: Function = m.get("json_strings").unwrap();
        let list: Table = scan.call(lua.create_string(&body).unwrap()).unwrap();
        let from_lua: Vec<Vec<u8>> = list
            .sequence_values::<Value>()
            .map(|v| match v.unwrap() {
                Value::String(s) => s.as_bytes().to_vec(),
                other => panic!("{other:?}"),
            })
            .collect();
        let mut from_rust = Vec::new();
        for_each_json_string(&body, |s| from_rust.push(s.to_vec()));
        prop_assert_eq!(from_lua, from_rust, "body {:?}", String::from_utf8_lossy(&body));
    }
}
