//! The WAF's cost per request on its own: a clean request and an attack,
//! with 50 rules and every signature list.
use criterion::{criterion_group, criterion_main, Criterion};
use graft_contract::{Context, LocalWindows, Module, OwnedRequest};
use serde_json::json;
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let mut rules: Vec<_> = (0..48)
        .map(|i| json!({ "id": format!("t{i}"), "when": { "field": "args", "op": "equals", "value": format!("token-{i}") }, "action": "block" }))
        .collect();
    rules.push(json!({ "id": "admin", "when": { "field": "path", "op": "prefix", "value": "/admin" }, "action": "block" }));
    rules.push(json!({ "id": "ua", "when": { "field": "header:user-agent", "op": "regex", "value": "(?i)(sqlmap|nikto)" }, "action": "block" }));
    let waf = graft_waf::Waf::from_config(&json!({ "rules": rules, "signatures": ["sql_injection", "path_traversal", "script_injection"] })).unwrap();
    let counters = LocalWindows::default();
    let ctx = Context::local(0, &counters);
    let mut clean = OwnedRequest::get(
        "shop.example",
        "/index.html?page=3&ref=mail&utm_source=news&id=93",
    );
    clean.headers.push((
        b"User-Agent".to_vec(),
        b"Mozilla/5.0 (X11; Linux x86_64)".to_vec(),
    ));
    let attack = OwnedRequest::get(
        "shop.example",
        "/search?q=1' UNION SELECT password FROM users",
    );
    c.bench_function("waf clean request", |b| {
        b.iter(|| waf.on_request(black_box(&clean), &ctx))
    });
    c.bench_function("waf attack", |b| {
        b.iter(|| waf.on_request(black_box(&attack), &ctx))
    });
    // graft-bench's body inspection job: the three lists over a 16 KB
    // form (401 arguments), as the module sees it.
    let inspect = graft_waf::Waf::from_config(&json!({
        "signatures": ["sql_injection", "path_traversal", "script_injection"],
        "inspect_body": true
    }))
    .unwrap();
    let mut form = OwnedRequest::get("shop.example", "/index.html");
    form.method = b"POST".to_vec();
    form.headers.push((
        b"Content-Type".to_vec(),
        b"application/x-www-form-urlencoded".to_vec(),
    ));
    form.body = Some(form_body().into_bytes());
    c.bench_function("waf 16 KB form body", |b| {
        b.iter(|| inspect.on_request(black_box(&form), &ctx))
    });
    // A body made to trip the literal pass: 16 KB of one signature's
    // literal (`;`, of `; drop table`), in no form, matching nothing.
    let mut dense = OwnedRequest::get("shop.example", "/index.html");
    dense.method = b"POST".to_vec();
    dense
        .headers
        .push((b"Content-Type".to_vec(), b"text/plain".to_vec()));
    dense.body = Some(b";".repeat(16_200));
    c.bench_function("waf 16 KB of one literal", |b| {
        b.iter(|| inspect.on_request(black_box(&dense), &ctx))
    });
}

/// graft-bench's form: the same bytes.
fn form_body() -> String {
    format!(
        "q=hello+world&page=2&{}",
        (0..400)
            .map(|i| format!("field{i}=value+number+{i}+with+some+text"))
            .collect::<Vec<_>>()
            .join("&")
    )
}

criterion_group! { name = benches; config = Criterion::default().warm_up_time(std::time::Duration::from_millis(300)).measurement_time(std::time::Duration::from_secs(1)); targets = bench }
criterion_main!(benches);
