//! The ABI is written three times: shim/include/graft.h, the ffi.cdef in
//! lua/graft/abi.lua, and the Rust exports. These tests fail when they disagree.
//! (Structure layouts are checked again at run time: graft/abi.lua passes its
//! sizes to graft_ffi_abi_version when nginx loads it.)
use std::collections::BTreeMap;
use std::process::Command;

use graft_tests::{module_path, root};

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap()
}

fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let from = text.find(start).unwrap_or_else(|| panic!("no {start:?}")) + start.len();
    let to = from
        + text[from..]
            .find(end)
            .unwrap_or_else(|| panic!("no {end:?}"));
    &text[from..to]
}

/// Every `.rs` file below `dir`, read and joined.
fn rust_sources(dir: &std::path::Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            text += &rust_sources(&path);
        } else if path.extension().is_some_and(|e| e == "rs") {
            text += &std::fs::read_to_string(&path).unwrap();
        }
    }
    text
}

fn header_functions(header: &str) -> Vec<String> {
    between(header, "/* graft:abi:begin */", "/* graft:abi:end */")
        .lines()
        .filter(|l| l.starts_with("int "))
        .map(|l| l[4..l.find('(').unwrap()].to_string())
        .collect()
}

#[test]
fn lua_cdef_is_the_header_block() {
    let header = read("shim/include/graft.h");
    let lua = read("lua/graft/abi.lua");
    assert_eq!(
        squash(between(
            &header,
            "/* graft:abi:begin */",
            "/* graft:abi:end */"
        )),
        squash(between(&lua, "ffi.cdef[[", "]]")),
    );
}

#[test]
fn constants_agree_in_header_lua_and_rust() {
    let header = read("shim/include/graft.h");
    let defines: BTreeMap<String, i64> = header
        .lines()
        .filter_map(|l| l.strip_prefix("#define GRAFT_"))
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            Some((
                format!("GRAFT_{}", parts.next()?),
                parts.next()?.parse().ok()?,
            ))
        })
        .collect();
    assert!(defines.len() > 15, "{defines:?}");
    let lua = read("lua/graft/abi.lua");
    // Every constant the module defines, wherever in shim/nginx it lives
    // (its folders too: `bridge/marshal.rs` holds the ABI's codes).
    let rust = rust_sources(&graft_tests::root().join("shim/nginx/src"));
    assert!(
        rust.contains("GRAFT_ABI_VERSION: c_int = "),
        "no GRAFT_ABI_VERSION in shim/nginx/src"
    );
    let engine = read("shim/engine/src/counters.rs");
    for (name, value) in &defines {
        assert!(
            lua.contains(&format!("    {name} = {value},\n")),
            "lua/graft/abi.lua lacks `{name} = {value},`"
        );
        if let Some(i) = rust.find(&format!("{name}: c_int = ")) {
            let rest = &rust[i + name.len() + 10..];
            let got: i64 = rest[..rest.find(';').unwrap()].parse().unwrap();
            assert_eq!(got, *value, "{name} in shim/nginx/src");
        }
    }
    // Codes that are Rust enums' discriminants: Count and Impl in the
    // engine, LogFamily in its log budget.
    let steps = read("shim/engine/src/log_budget.rs");
    for (prefix, rust, in_file) in [
        ("GRAFT_COUNT_", "Count", &engine),
        ("GRAFT_IMPL_", "Impl", &engine),
        ("GRAFT_LOG_", "LogFamily", &steps),
    ] {
        let mut checked = 0;
        for (name, value) in defines.iter().filter(|(n, _)| n.starts_with(prefix)) {
            let variant: String = name[prefix.len()..]
                .split('_')
                .map(|w| w[..1].to_string() + &w[1..].to_lowercase())
                .collect();
            assert!(
                in_file.contains(&format!("    {variant} = {value},")),
                "{rust}::{variant} is not {value}"
            );
            checked += 1;
        }
        assert!(checked >= 2, "no {prefix} codes in graft.h");
    }
}

#[test]
fn the_module_exports_every_declared_function_and_no_other() {
    let header = read("shim/include/graft.h");
    let declared = header_functions(&header);
    assert_eq!(declared.len(), 29, "{declared:?}");
    let out = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(module_path())
        .output()
        .expect("nm (binutils)");
    assert!(
        out.status.success(),
        "nm failed on {}",
        module_path().display()
    );
    let symbols = String::from_utf8(out.stdout).unwrap();
    let exported: Vec<&str> = symbols
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter(|s| s.starts_with("graft_ffi_"))
        .collect();
    let mut want: Vec<&str> = declared.iter().map(String::as_str).collect();
    let mut got = exported.clone();
    want.sort();
    got.sort();
    assert_eq!(got, want);
    assert!(symbols.contains(" ngx_http_graft_module\n"));
    assert!(symbols.contains(" ngx_modules\n"));
}

/// The Lua side refuses, at start-up, a module that speaks another ABI
/// version or lays the structures out differently, and says so.
#[test]
fn the_bridge_refuses_a_module_of_another_abi_at_start() {
    let lua = read("lua/graft/abi.lua");
    let cases = [
        (
            lua.replace("    GRAFT_ABI_VERSION = ", "    GRAFT_ABI_VERSION = 900 + "),
            "graft's Lua side (graft/abi.lua) speaks ABI version 9",
        ),
        (
            lua.replacen("    int status;\n", "    int status;\n    int extra;\n", 1),
            "lay out the ABI structures differently",
        ),
    ];
    for (changed, want) in cases {
        assert_ne!(changed, lua, "the test did not change graft/abi.lua");
        let nginx = graft_tests::Nginx::prepare(r#"{ "zones": {} }"#);
        // The prefix holds the copy of the Lua side that nginx loads.
        std::fs::write(nginx.prefix.join("graft/lua/graft/abi.lua"), &changed).unwrap();
        // init_by_lua runs at start (not under `nginx -t`): start it.
        let out = nginx.run(&[]);
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            nginx.error_log()
        );
        assert!(
            !out.status.success(),
            "nginx started with a bridge of another ABI:\n{log}"
        );
        assert!(log.contains(want), "want {want:?} in:\n{log}");
    }
}
