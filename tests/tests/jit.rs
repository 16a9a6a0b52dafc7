//! The Lua side's hot path stays JIT-compiled, as lua-resty-core's tests
//! check theirs: with LuaJIT's trace log on (`jit.v`), requests through a
//! pipeline of Lua, Rust and shadow steps compile traces in
//! graft/pipeline.lua, and none stops in graft's files on a construct LuaJIT cannot compile ("NYI": it would
//! send every request through the interpreter). A trace that ends at a
//! loop, or grows too long, is LuaJIT choosing where traces start, not a
//! construct it cannot compile.
use graft_tests::Nginx;
use serde_json::json;

#[test]
fn the_pipeline_compiles_with_no_trace_aborted_in_graft() {
    let config = json!({ "zones": { "j.test": { "modules": [
        { "module": "headers", "mode": "rust", "config": { "rules": [ { "request": [ { "set": "X-A", "value": "1" } ] } ] } },
        { "module": "probe", "mode": "lua", "config": { "continue": true } },
        { "module": "waf", "mode": "shadow", "config": { "rules": [], "signatures": ["sql_injection"] } },
        { "module": "redirects", "mode": "rust", "config": { "rules": [ { "from": "/old", "to": "/new" } ] } },
    ] } } });
    // The log is opened in the master (init_by_lua) and written by the worker.
    let nginx = Nginx::prepare_custom(
        &config.to_string(),
        false,
        1,
        "",
        r#"require("jit.v").on(ngx.config.prefix() .. "jit.log")"#,
    );
    let out = nginx.run(&[]);
    assert!(out.status.success(), "{}", nginx.error_log());
    std::thread::sleep(std::time::Duration::from_millis(200));
    for i in 0..3000 {
        let target = if i % 10 == 0 {
            "/old".to_string()
        } else {
            format!("/p/{i}?q=x")
        };
        nginx.get("j.test", &target);
    }
    let traces = std::fs::read_to_string(nginx.prefix.join("jit.log")).unwrap_or_default();
    assert!(
        traces
            .lines()
            .any(|l| l.starts_with("[TRACE") && l.contains(" pipeline.lua:")),
        "no trace compiled in graft/pipeline.lua:\n{traces}"
    );
    let aborted: Vec<_> = traces
        .lines()
        .filter(|l| l.starts_with("[TRACE ---") && l.contains("NYI"))
        .filter(|l| l.contains("graft.lua:") || l.contains("graft/"))
        .collect();
    assert!(
        aborted.is_empty(),
        "graft's code is not compiled: {aborted:#?}\n{traces}"
    );
    nginx.assert_clean_log(&[]);
}
