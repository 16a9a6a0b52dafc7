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
use graft_html_rewrite::{sample, HtmlRewrite};
use lol_html::send::{HtmlRewriter, Settings};
use lol_html::{doc_text, element};
use serde_json::json;

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
        None => {
            let pieces: Vec<String> = sample::PIECES.iter().map(|p| p.to_string()).collect();
            let body: Vec<String> = (0..160).flat_map(|_| pieces.iter().cloned()).collect();
            (
                sample::document(&pieces[..4], &body).into_bytes(),
                10,
                arg.clone(),
            )
        }
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
            "module" => {
                let mut r = module.rewriter();
                let mut out = Vec::with_capacity(doc.len() + 4096);
                for chunk in doc.chunks(16 * 1024) {
                    r.write(chunk, &mut out).unwrap();
                }
                r.end(&mut out).unwrap();
                out.len()
            }
            lol => {
                let mut n = 0usize;
                let settings = if lol == "lol_html_handlers" {
                    Settings {
                        element_content_handlers: vec![
                            element!("head", |_el| Ok(())),
                            element!("[href]", |_el| Ok(())),
                            element!("[src]", |_el| Ok(())),
                            element!("[action]", |_el| Ok(())),
                        ],
                        document_content_handlers: vec![doc_text!(|_t| Ok(()))],
                        ..Settings::new_send()
                    }
                } else {
                    Settings::new_send()
                };
                let mut r = HtmlRewriter::new(settings, |c: &[u8]| n += c.len());
                for chunk in doc.chunks(16 * 1024) {
                    r.write(chunk).unwrap();
                }
                r.end().unwrap();
                n
            }
        };
    }
    println!("{arg}: {} bytes in, {total} out", doc.len() * times);
}
