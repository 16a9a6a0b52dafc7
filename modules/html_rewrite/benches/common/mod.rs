//! What the criterion bench (`benches/html_rewrite.rs`) and the
//! instructions example (`examples/instructions.rs`) both rewrite, and
//! how: the same document, the same chunks, the same handlers, so that
//! their figures describe one job.
use graft_html_rewrite::{sample, HtmlRewrite};
use lol_html::send::{HtmlRewriter, Settings};
use lol_html::{doc_text, element};

/// nginx's body filter gets a response in chunks of about this size.
pub const CHUNK: usize = 16 * 1024;

/// graft-bench's HTML rewriting document: 122,069 bytes of the sample
/// pieces.
pub fn document() -> Vec<u8> {
    let pieces: Vec<String> = sample::PIECES.iter().map(|p| p.to_string()).collect();
    let body: Vec<String> = (0..160).flat_map(|_| pieces.iter().cloned()).collect();
    sample::document(&pieces[..4], &body).into_bytes()
}

/// `doc` through the module, in chunks; the bytes written.
pub fn through_module(rw: &HtmlRewrite, doc: &[u8]) -> usize {
    let mut r = rw.rewriter();
    let mut out = Vec::with_capacity(doc.len() + 4096);
    for chunk in doc.chunks(CHUNK) {
        r.write(chunk, &mut out).unwrap();
    }
    r.end(&mut out).unwrap();
    out.len()
}

/// `doc` through lol_html alone, in chunks, with no handler or with the
/// module's handlers (`head`, `[href]`, `[src]`, `[action]`, every text
/// chunk) doing nothing; the bytes written.
pub fn through_lol_html(doc: &[u8], handlers: bool) -> usize {
    let mut n = 0usize;
    let settings = if handlers {
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
    for chunk in doc.chunks(CHUNK) {
        r.write(chunk).unwrap();
    }
    r.end().unwrap();
    n
}
