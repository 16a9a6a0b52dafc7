//! Rewrites graft-bench's 122,069-byte document ten times in 16 KB chunks,
//! for counting instructions under callgrind (the count does not move
//! with the machine's load, as the criterion bench's times do):
//!
//! ```sh
//! cargo build --release -p graft-html-rewrite --example instructions
//! valgrind --tool=callgrind target/release/examples/instructions [lol_html|lol_html_handlers|module]
//! ```
//!
//! Divide the total by 1,220,690 bytes for instructions a byte.
//!
//! With `page_` before the mode (`page_module`, `page_lol_html`, ...), it
//! rewrites graft-bench's 635-byte page (the one its variants serve) 1,000
//! times instead: a response's whole cost (divide by 1,000).
//!
//! The document, the chunks and the handlers are the criterion bench's
//! (`benches/common`).
use graft_html_rewrite::HtmlRewrite;
use serde_json::json;

#[path = "../benches/common/mod.rs"]
mod common;
use common::{document, through_lol_html, through_module};

fn main() {
    let arg = std::env::args().nth(1).unwrap_or_else(|| "module".into());
    let (doc, times, what) = match arg.strip_prefix("page_") {
        Some(what) => {
            let page = format!(
                "<!doctype html><html><head><title>graft</title></head><body>{}</body></html>\n",
                "<p>content</p>".repeat(40)
            );
            (page.into_bytes(), 1000, what.to_string())
        }
        None => (document(), 10, arg.clone()),
    };
    let module = HtmlRewrite::from_config(&json!({
        "head_end": "<script src=\"/rum.js\"></script>",
        "https_hosts": ["example.com", "cdn.example.com"],
        "obfuscate_emails": true
    }))
    .unwrap();
    let mut total = 0usize;
    for _ in 0..times {
        total += match what.as_str() {
            "module" => through_module(&module, &doc),
            "lol_html_handlers" => through_lol_html(&doc, true),
            _ => through_lol_html(&doc, false),
        };
    }
    println!("{arg}: {} bytes in, {total} out", doc.len() * times);
}
