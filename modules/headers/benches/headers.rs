//! Header rules with conditions.
use criterion::{criterion_group, criterion_main, Criterion};
use graft_contract::{Context, LocalWindows, Module, OwnedRequest};
use serde_json::json;
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let m = graft_headers::Headers::from_config(&json!({ "rules": [
        { "request": [ { "set": "X-Zone", "value": "shop" } ], "response": [ { "set": "X-Frame-Options", "value": "DENY" } ] },
        { "when": { "field": "path", "op": "prefix", "value": "/api" }, "request": [ { "remove": "Cookie" } ] } ] })).unwrap();
    let counters = LocalWindows::default();
    let ctx = Context::local(0, &counters);
    let req = OwnedRequest::get("a", "/api/items?x=1");
    c.bench_function("headers two rules", |b| {
        b.iter(|| m.on_request(black_box(&req), &ctx))
    });
}

criterion_group! { name = benches; config = Criterion::default().warm_up_time(std::time::Duration::from_millis(300)).measurement_time(std::time::Duration::from_secs(1)); targets = bench }
criterion_main!(benches);
