//! html_rewrite against lol_html alone, on graft-bench's HTML rewriting
//! job: the same 122 KB document (the sample pieces), fed in 16 KB
//! chunks as nginx's body filter gets them.
//!
//! - lol_html alone, no handler: the parser and serializer, the floor;
//! - lol_html alone, the three handlers the module runs (`head` append,
//!   `[href]`/`[src]`/`[action]` upgrades, every text node), each doing
//!   nothing: what matching them costs;
//! - the module with each rule alone, and with the three rules, as
//!   graft-bench configures it.
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use graft_html_rewrite::HtmlRewrite;
use serde_json::json;
use std::hint::black_box;

mod common;
use common::{document, through_lol_html, through_module};

fn bench(c: &mut Criterion) {
    let doc = document();
    let mut g = c.benchmark_group("html_rewrite");
    g.throughput(Throughput::Bytes(doc.len() as u64));
    g.bench_function("lol_html alone, no handler", |b| {
        b.iter(|| through_lol_html(black_box(&doc), false))
    });
    g.bench_function("lol_html alone, the module's handlers doing nothing", |b| {
        b.iter(|| through_lol_html(black_box(&doc), true))
    });
    let configs = [
        (
            "module: head_end",
            json!({ "head_end": "<script src=\"/rum.js\"></script>" }),
        ),
        (
            "module: https_hosts",
            json!({ "https_hosts": ["example.com", "cdn.example.com"] }),
        ),
        (
            "module: obfuscate_emails",
            json!({ "obfuscate_emails": true }),
        ),
        (
            "module: the three rules (graft-bench's job)",
            json!({ "head_end": "<script src=\"/rum.js\"></script>",
                    "https_hosts": ["example.com", "cdn.example.com"], "obfuscate_emails": true }),
        ),
    ];
    for (name, config) in configs {
        let rw = HtmlRewrite::from_config(&config).unwrap();
        g.bench_function(name, |b| b.iter(|| through_module(&rw, black_box(&doc))));
    }
    g.finish();
}

criterion_group! { name = benches; config = Criterion::default().warm_up_time(std::time::Duration::from_millis(500)).measurement_time(std::time::Duration::from_secs(2)).sample_size(20); targets = bench }
criterion_main!(benches);
