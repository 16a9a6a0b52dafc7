//! Normalizing a clean path and a tricky one.
use criterion::{criterion_group, criterion_main, Criterion};
use graft_contract::{Context, LocalWindows, ModuleFactory, OwnedRequest};
use serde_json::json;
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let m = graft_url_normalize::FACTORY.build(&json!({})).unwrap();
    let counters = LocalWindows::default();
    let ctx = Context::local(0, &counters);
    let clean = OwnedRequest::get("a", "/products/42/reviews?page=2");
    let tricky = OwnedRequest::get("a", "/a/./b/../%63//d/%2e%2e/e?x");
    c.bench_function("url_normalize clean", |b| {
        b.iter(|| m.on_request(black_box(&clean), &ctx))
    });
    c.bench_function("url_normalize dot segments", |b| {
        b.iter(|| m.on_request(black_box(&tricky), &ctx))
    });
}

criterion_group! { name = benches; config = Criterion::default().warm_up_time(std::time::Duration::from_millis(300)).measurement_time(std::time::Duration::from_secs(1)); targets = bench }
criterion_main!(benches);
