//! Longest-prefix lookup over 10,000 prefixes.
use criterion::{criterion_group, criterion_main, Criterion};
use graft_contract::{Context, LocalWindows, Module, OwnedRequest};
use serde_json::json;
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let deny: Vec<String> = (0..10_000)
        .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
        .collect();
    let m =
        graft_ip_access::IpAccess::from_config(&json!({ "allow": ["10.0.0.0/8"], "deny": deny }))
            .unwrap();
    let counters = LocalWindows::default();
    let ctx = Context::local(0, &counters);
    let mut req = OwnedRequest::get("a", "/");
    req.client = Some("10.20.30.40".parse().unwrap());
    c.bench_function("ip_access 10k prefixes", |b| {
        b.iter(|| m.on_request(black_box(&req), &ctx))
    });
}

criterion_group! { name = benches; config = Criterion::default().warm_up_time(std::time::Duration::from_millis(300)).measurement_time(std::time::Duration::from_secs(1)); targets = bench }
criterion_main!(benches);
