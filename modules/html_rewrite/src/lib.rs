//! `html_rewrite`: rewrites HTML responses as they stream, on `lol_html`
//! (Cloudflare's streaming HTML rewriter): chunks in, chunks out, never
//! the whole document in memory.
//!
//! ```json
//! { "head_end": "<script src=\"/rum.js\"></script>",
//!   "https_hosts": ["example.com", "cdn.example.com"],
//!   "obfuscate_emails": true }
//! ```
//!
//! - `head_end`: HTML inserted just before `</head>`. A document whose
//!   `<head>`s would take more than [`MAX_INSERTED`] bytes of it in all
//!   fails the step: no page makes a response grow without bound.
//! - `https_hosts`: an `href`, `src` or `action` attribute whose value is
//!   `http://` and one of these hosts (any case; then the end, `/`, `?`,
//!   `#` or `:`) gets `https://` instead. The changed tag is written out
//!   again as `lol_html` writes one: its name, then each attribute after a
//!   single space (unchanged ones exactly as they were, the changed one as
//!   `name="value"` with `"` as `&quot;`), then ` />` or `>`.
//! - `obfuscate_emails`: in text (not in scripts, styles, titles, text
//!   areas, comments or attributes), each address's `@` becomes `&#64;`
//!   ([`obfuscate`]). A text node longer than [`MAX_TEXT`] is left as it
//!   is (no unbounded buffering).
//!
//! Only `text/html` responses that are not compressed are rewritten; the
//! others pass untouched (`on_response_body` gives no rewriter). The Lua
//! twin is `lua/graft/legacy/html_rewrite.lua`.
#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use graft_contract::{
    parse_config, BodyRewriter, ConfigError, Configured, Factory, Module, ModuleError, ResponseHead,
};
use lol_html::html_content::Element;
use lol_html::html_content::{ContentType, TextType};
use lol_html::send::SendHandlerTypes;
use lol_html::send::{HtmlRewriter, Settings};
use lol_html::{doc_text, ElementContentHandlers, HandlerResult, MemorySettings, Selector};
use serde::Deserialize;

pub const NAME: &str = "html_rewrite";
/// The longest text node whose addresses are obfuscated.
pub const MAX_TEXT: usize = 64 * 1024;
/// The most memory one response's rewriter may hold (`lol_html`'s own
/// buffers): a document that needs more fails the step.
pub const MAX_MEMORY: usize = 8 * 1024 * 1024;
/// The most `head_end` bytes inserted into one document (each `<head>`
/// gets a copy, held until its end tag): past it the step fails. A
/// response's rewrite then holds no more than this and `MAX_MEMORY`,
/// however many `<head>`s a page has.
pub const MAX_INSERTED: usize = 1024 * 1024;
pub const MAX_HOSTS: usize = 10_000;
pub const MAX_SNIPPET: usize = 64 * 1024;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    head_end: Option<String>,
    #[serde(default)]
    https_hosts: Vec<String>,
    #[serde(default)]
    obfuscate_emails: bool,
}

/// The module, its configuration checked and shared by every response's
/// rewriter.
pub struct HtmlRewrite(Arc<Rules>);

struct Rules {
    head_end: Option<String>,
    /// Lower case.
    https_hosts: Vec<String>,
    obfuscate_emails: bool,
    /// The selectors of the handlers, parsed once here: each response's
    /// rewriter borrows them (parsing the four cost about 11,600
    /// instructions a response, 5 % of rewriting graft-bench's page).
    head: Selector,
    /// `[href]`, `[src]`, `[action]`, with their attribute's name.
    links: [(&'static str, Selector); 3],
}

/// A selector the module names, parsed (constant selectors: an error here
/// is a bug, refused as a configuration error rather than a panic).
fn selector(css: &str) -> Result<Selector, ConfigError> {
    css.parse()
        .map_err(|e| ConfigError::new("", format!("html_rewrite's selector {css}: {e}")))
}

impl HtmlRewrite {
    pub fn from_config(config: &serde_json::Value) -> Result<Self, ConfigError> {
        let c: Config = parse_config(config)?;
        if c.head_end.as_ref().is_some_and(|s| s.len() > MAX_SNIPPET) {
            return Err(ConfigError::new(
                "head_end",
                format!("longer than {MAX_SNIPPET} bytes"),
            ));
        }
        if c.https_hosts.len() > MAX_HOSTS {
            return Err(ConfigError::new(
                "https_hosts",
                format!("more than {MAX_HOSTS} hosts"),
            ));
        }
        for (i, h) in c.https_hosts.iter().enumerate() {
            if h.is_empty()
                || !h
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            {
                return Err(ConfigError::new(
                    format!("https_hosts[{i}]"),
                    "a host name: letters, digits, \".\" and \"-\"",
                ));
            }
        }
        Ok(HtmlRewrite(Arc::new(Rules {
            head_end: c.head_end,
            https_hosts: c
                .https_hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            obfuscate_emails: c.obfuscate_emails,
            head: selector("head")?,
            links: [
                ("href", selector("[href]")?),
                ("src", selector("[src]")?),
                ("action", selector("[action]")?),
            ],
        })))
    }

    /// A rewriter for one document, whatever its headers say.
    pub fn rewriter(&self) -> Box<dyn BodyRewriter> {
        Box::new(Rewriter::new(self.0.clone()))
    }
}

/// Whether a response is one this module rewrites: `text/html`, not
/// compressed.
pub fn rewritable(head: &ResponseHead<'_>) -> bool {
    let html = head.content_type.is_some_and(|ct| {
        let media = ct.split(|&b| b == b';').next().unwrap_or_default();
        media.trim_ascii().eq_ignore_ascii_case(b"text/html")
    });
    let plain = head.content_encoding.is_none_or(|e| {
        e.trim_ascii().is_empty() || e.trim_ascii().eq_ignore_ascii_case(b"identity")
    });
    html && plain
}

/// The `https://` form of an attribute value, when it is an `http://`
/// link to one of `hosts`.
pub fn upgrade(value: &str, hosts: &[String]) -> Option<String> {
    let b = value.as_bytes();
    if b.len() < 7 || !b[..7].eq_ignore_ascii_case(b"http://") {
        return None;
    }
    let rest = &value[7..];
    let end = rest.find(['/', '?', '#', ':']).unwrap_or(rest.len());
    let host = &rest[..end];
    hosts.iter().any(|h| h.eq_ignore_ascii_case(host)).then(|| {
        // Not `format!`: its machinery was 4 % of rewriting a page of links.
        let mut up = String::with_capacity(8 + rest.len());
        up.push_str("https://");
        up.push_str(rest);
        up
    })
}

fn is_local(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"._%+-".contains(&b)
}

fn is_domain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'-'
}

/// The length of the longest start of `run` (domain characters) that is a
/// domain: labels of letters, digits and `-`, none empty, at least two,
/// the last of two letters or more.
fn domain_len(run: &[u8]) -> Option<usize> {
    let mut best = None;
    let mut label_start = 0;
    let mut labels = 1;
    for i in 0..=run.len() {
        let at_end = i == run.len() || run[i] == b'.';
        if !at_end {
            continue;
        }
        let label = &run[label_start..i];
        if label.is_empty() {
            break;
        }
        if labels >= 2 && label.len() >= 2 && label.iter().all(u8::is_ascii_alphabetic) {
            best = Some(i);
        }
        labels += 1;
        label_start = i + 1;
    }
    best
}

/// Obfuscates the e-mail addresses of a text: each `@` with at least one
/// address character (letters, digits, `._%+-`) just before it and a
/// domain just after it ([`domain_len`]) becomes `&#64;`. Scans left to
/// right; after an address, from its end. The Lua twin does exactly this.
pub fn obfuscate(text: &str) -> String {
    obfuscate_after(None, text)
}

/// [`obfuscate`] of a text that follows `before`, the last byte of the
/// same text node already written (an `@` at the start of `text` is an
/// address's when `before` is an address character).
fn obfuscate_after(before: Option<u8>, text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len() + 8);
    let mut from = 0; // copied up to here
    let mut i = 0;
    while i < b.len() {
        let local_before = if i == 0 {
            before.is_some_and(is_local)
        } else {
            is_local(b[i - 1])
        };
        if b[i] != b'@' || !local_before {
            i += 1;
            continue;
        }
        let run_end = (i + 1..b.len())
            .find(|&j| !is_domain(b[j]))
            .unwrap_or(b.len());
        match domain_len(&b[i + 1..run_end]) {
            Some(len) => {
                out.push_str(&text[from..i]);
                out.push_str("&#64;");
                from = i + 1;
                i = i + 1 + len;
            }
            None => i += 1,
        }
    }
    out.push_str(&text[from..]);
    out
}

/// One document's rewriter: `lol_html`'s (its `Send` kind: a server may
/// move a response between threads), writing into `out`. The lock is
/// never contended: the rewriter and its sink are one response's, used by
/// one thread at a time.
struct Rewriter {
    inner: Option<HtmlRewriter<'static, Sink>>,
    out: Arc<Mutex<Vec<u8>>>,
}

struct Sink(Arc<Mutex<Vec<u8>>>);

fn lock(m: &Mutex<Vec<u8>>) -> std::sync::MutexGuard<'_, Vec<u8>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl lol_html::OutputSink for Sink {
    fn handle_chunk(&mut self, chunk: &[u8]) {
        lock(&self.0).extend_from_slice(chunk);
    }
}

/// An element handler on a selector parsed at load (`lol_html`'s
/// `element!` parses its selector each time).
fn handler<'s>(
    selector: &'s Selector,
    f: impl FnMut(&mut Element<'_, '_, SendHandlerTypes>) -> HandlerResult + Send + 'static,
) -> (
    Cow<'s, Selector>,
    ElementContentHandlers<'static, SendHandlerTypes>,
) {
    (
        Cow::Borrowed(selector),
        ElementContentHandlers::default().element(f),
    )
}

impl Rewriter {
    fn new(rules: Arc<Rules>) -> Self {
        let out = Arc::new(Mutex::new(Vec::new()));
        let mut elements = Vec::new();
        if let Some(snippet) = rules.head_end.clone() {
            let mut inserted = 0usize;
            elements.push(handler(&rules.head, move |el| {
                inserted += snippet.len();
                if inserted > MAX_INSERTED {
                    return Err(format!(
                        "head_end would insert more than {MAX_INSERTED} bytes into this document (a copy per <head>)"
                    )
                    .into());
                }
                el.append(&snippet, ContentType::Html);
                Ok(())
            }));
        }
        if !rules.https_hosts.is_empty() {
            for (attr, selector) in &rules.links {
                let attr = *attr;
                let rules = rules.clone();
                elements.push(handler(selector, move |el| {
                    if let Some(v) = el.get_attribute(attr) {
                        if let Some(up) = upgrade(&v, &rules.https_hosts) {
                            el.set_attribute(attr, &up)?;
                        }
                    }
                    Ok(())
                }));
            }
        }
        let mut texts = Vec::new();
        if rules.obfuscate_emails {
            // A text node's chunks pass as they come until one has an
            // `@`: only an `@` ever changes, so what comes before the
            // first one is written untouched (its last byte kept: it says
            // whether that `@` follows an address). From there the node
            // is held to its end, where its addresses are known. A node
            // over MAX_TEXT, held or not, passes as it is from there:
            // what was held goes out as it was.
            let mut held = String::new();
            let mut holding = false;
            let mut node_len = 0usize;
            let mut before: Option<u8> = None;
            let mut too_long = false;
            texts.push(doc_text!(move |t| {
                if t.text_type() != TextType::Data {
                    return Ok(());
                }
                if !too_long {
                    let chunk = t.as_str();
                    node_len += chunk.len();
                    if node_len > MAX_TEXT {
                        too_long = true;
                        if holding {
                            held.push_str(chunk);
                            let held = std::mem::take(&mut held);
                            t.replace(&held, ContentType::Html);
                        }
                    } else if holding || chunk.contains('@') {
                        holding = true;
                        held.push_str(chunk);
                        t.remove();
                    } else if let Some(&last) = chunk.as_bytes().last() {
                        before = Some(last);
                    }
                }
                if t.last_in_text_node() {
                    if holding && !too_long {
                        let text = std::mem::take(&mut held);
                        t.replace(&obfuscate_after(before, &text), ContentType::Html);
                    }
                    held.clear();
                    (holding, node_len, before, too_long) = (false, 0, None, false);
                }
                Ok(())
            }));
        }
        let settings = Settings {
            element_content_handlers: elements,
            document_content_handlers: texts,
            memory_settings: MemorySettings {
                max_allowed_memory_usage: MAX_MEMORY,
                ..MemorySettings::new()
            },
            ..Settings::new_send()
        };
        let inner = HtmlRewriter::new(settings, Sink(out.clone()));
        Rewriter {
            inner: Some(inner),
            out,
        }
    }

    fn drain(&self, out: &mut Vec<u8>) {
        let mut written = lock(&self.out);
        if out.is_empty() {
            // Handed over, not copied: a long write is held once.
            std::mem::swap(out, &mut written);
        } else {
            out.append(&mut written);
        }
    }
}

impl BodyRewriter for Rewriter {
    fn write(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), ModuleError> {
        let inner = self
            .inner
            .as_mut()
            .ok_or_else(|| ModuleError::new("html_rewrite: the document already ended"))?;
        let r = inner.write(chunk);
        self.drain(out);
        r.map_err(|e| ModuleError::new(format!("html_rewrite: {e}")))
    }

    fn end(&mut self, out: &mut Vec<u8>) -> Result<(), ModuleError> {
        let inner = self
            .inner
            .take()
            .ok_or_else(|| ModuleError::new("html_rewrite: the document already ended"))?;
        let r = inner.end();
        self.drain(out);
        r.map_err(|e| ModuleError::new(format!("html_rewrite: {e}")))
    }
}

impl Module for HtmlRewrite {
    fn rewrites_bodies(&self) -> bool {
        true
    }

    fn on_response_body(&self, head: &ResponseHead<'_>) -> Option<Box<dyn BodyRewriter>> {
        rewritable(head).then(|| self.rewriter())
    }
}

impl Configured for HtmlRewrite {
    const NAME: &'static str = NAME;

    fn configure(config: &serde_json::Value) -> Result<Self, ConfigError> {
        Self::from_config(config)
    }
}

/// The registry's factory of this module.
pub static FACTORY: Factory<HtmlRewrite> = Factory::new();

pub mod sample;

#[cfg(test)]
mod tests;
