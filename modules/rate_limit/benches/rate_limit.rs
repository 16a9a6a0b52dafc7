//! One limit by client address, counted in process-local counters (the
//! shared-memory table is measured inside nginx by graft-bench).
use criterion::{criterion_group, criterion_main, Criterion};
use graft_contract::{Context, LocalWindows, Module, OwnedRequest};
use serde_json::json;
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let m = graft_rate_limit::RateLimit::from_config(&json!({ "limits": [
        { "name": "clients", "key": "client", "limit": 1000000, "window": 60 } ] }))
    .unwrap();
    let counters = LocalWindows::default();
    let ctx = Context::local(0, &counters);
    let mut req = OwnedRequest::get("a", "/");
    req.client = Some("192.0.2.7".parse().unwrap());
    c.bench_function("rate_limit one limit", |b| {
        b.iter(|| m.on_request(black_box(&req), &ctx))
    });
}

criterion_group! { name = benches; config = Criterion::default().warm_up_time(std::time::Duration::from_millis(300)).measurement_time(std::time::Duration::from_secs(1)); targets = bench }
criterion_main!(benches);
