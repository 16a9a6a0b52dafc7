//! Redirect lookup with 1,000 bulk entries and prefix rules.
use criterion::{criterion_group, criterion_main, Criterion};
use graft_contract::{Context, LocalWindows, Module, OwnedRequest};
use serde_json::json;
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let map: serde_json::Map<String, serde_json::Value> = (0..1000)
        .map(|i| (format!("/legacy/{i}"), json!(format!("/p/{i}"))))
        .collect();
    let r = graft_redirects::Redirects::from_config(&json!({
        "rules": [ { "from": "/blog/", "to": "https://blog.example/", "match": "prefix" }, { "from": "/old", "to": "/new" } ],
        "bulk": { "map": map } })).unwrap();
    let counters = LocalWindows::default();
    let ctx = Context::local(0, &counters);
    let hit = OwnedRequest::get("a", "/legacy/512?x=1");
    let miss = OwnedRequest::get("a", "/index.html?page=3");
    c.bench_function("redirects hit (bulk)", |b| {
        b.iter(|| r.on_request(black_box(&hit), &ctx))
    });
    c.bench_function("redirects miss", |b| {
        b.iter(|| r.on_request(black_box(&miss), &ctx))
    });
}

criterion_group! { name = benches; config = Criterion::default().warm_up_time(std::time::Duration::from_millis(300)).measurement_time(std::time::Duration::from_secs(1)); targets = bench }
criterion_main!(benches);
