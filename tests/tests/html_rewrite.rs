//! html_rewrite through the real nginx: an origin that sends a document
//! in chunks (flushed one by one, cut anywhere), rewritten by Rust in
//! graft's body filter or by the Lua twin in body_filter_by_lua, both
//! equal to the module's own output; Content-Length removed; compressed
//! and non-HTML responses untouched and counted; a step left to Lua in a
//! location with no Lua filter counted as failed, never silent.
use graft_contract::Module;
use graft_html_rewrite::{sample, HtmlRewrite};
use graft_tests::Nginx;
use serde_json::json;

fn rewrite_config() -> serde_json::Value {
    json!({ "head_end": "<script src=\"/rum.js\"></script>",
            "https_hosts": ["example.com", "cdn.example.com"],
            "obfuscate_emails": true })
}

fn config(mode: &str) -> String {
    json!({ "zones": { "localhost": { "modules": [
        { "module": "html_rewrite", "mode": mode, "config": rewrite_config() } ] } } })
    .to_string()
}

/// `/html/`: a Lua origin sending `html/native/<file>` in chunks of `?n=`
/// bytes, each flushed on its own, with `?type=` and `?encoding=`; the
/// Lua bridge in front of it, and graft's Lua filters. `/bare/`: the same
/// origin with the bridge and no Lua filters. `/nat/`: the native pipeline
/// alone, in front of static files.
const EXTRA: &str = r#"
        location /html/ {
            access_by_lua_block { require("graft").access() }
            header_filter_by_lua_block { require("graft").header_filter() }
            body_filter_by_lua_block { require("graft").body_filter() }
            content_by_lua_block {
                local f = assert(io.open(ngx.config.prefix() .. "html/native/" .. ngx.var.arg_file, "rb"))
                local doc = f:read("*a")
                f:close()
                ngx.header["Content-Type"] = ngx.var.arg_type or "text/html; charset=utf-8"
                if ngx.var.arg_encoding then
                    ngx.header["Content-Encoding"] = ngx.var.arg_encoding
                end
                ngx.header["Content-Length"] = #doc
                local n = tonumber(ngx.var.arg_n) or #doc
                for i = 1, #doc, n do
                    ngx.print(doc:sub(i, i + n - 1))
                    ngx.flush(true)
                end
            }
        }
        location /bare/ {
            access_by_lua_block { require("graft").access() }
            content_by_lua_block {
                ngx.header["Content-Type"] = "text/html"
                ngx.print("<html><head></head><body>a@example.org</body></html>")
            }
        }
        location /nat/ {
            graft_native on;
            default_type text/html;
            alias @PREFIX@/html/native/;
        }
"#;

fn expected(doc: &str) -> String {
    let m = HtmlRewrite::from_config(&rewrite_config()).unwrap();
    let head = graft_contract::ResponseHead {
        status: 200,
        content_type: Some(b"text/html"),
        content_encoding: None,
    };
    let mut rw = m.on_response_body(&head).unwrap();
    let mut out = Vec::new();
    rw.write(doc.as_bytes(), &mut out).unwrap();
    rw.end(&mut out).unwrap();
    String::from_utf8(out).unwrap()
}

fn document() -> String {
    let pieces: Vec<String> = sample::PIECES.iter().map(|p| p.to_string()).collect();
    let mut body = Vec::new();
    for _ in 0..40 {
        body.extend(pieces.iter().cloned());
    }
    sample::document(&pieces[..4], &body)
}

#[test]
fn both_sides_rewrite_a_chunked_document_as_the_module_does_however_it_is_cut() {
    let doc = document();
    let want = expected(&doc);
    assert_ne!(want, doc);
    for mode in ["rust", "lua"] {
        let nginx = Nginx::start_extra(&config(mode), false, EXTRA);
        std::fs::write(nginx.prefix.join("html/native/doc.html"), &doc).unwrap();
        for n in [doc.len(), 4096, 997, 61, 7, 1] {
            let r = nginx.get("localhost", &format!("/html/x?file=doc.html&n={n}"));
            assert_eq!(r.status, 200);
            assert_eq!(
                r.text(),
                want,
                "{mode}, chunks of {n}: {}",
                nginx.error_log()
            );
            assert_eq!(r.header("Content-Length"), None, "{mode}");
        }
        let side = if mode == "rust" { "rust" } else { "lua" };
        assert_eq!(nginx.counter("localhost", 0, side), 6);
        assert_eq!(nginx.counter("localhost", 0, "failed"), 0);
        nginx.assert_clean_log(&[]);
    }
}

#[test]
fn the_native_pipeline_rewrites_a_static_file_sent_from_disk() {
    let doc = document();
    let nginx = Nginx::start_extra(&config("rust"), false, EXTRA);
    std::fs::write(nginx.prefix.join("html/native/doc.html"), &doc).unwrap();
    let r = nginx.get("localhost", "/nat/doc.html");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), expected(&doc));
    // The validators of the file on disk do not name the rewritten body.
    for h in ["Content-Length", "ETag", "Last-Modified"] {
        assert_eq!(r.header(h), None, "{h}");
    }
    assert_eq!(nginx.counter("localhost", 0, "native"), 1);
    nginx.assert_clean_log(&[]);
}

#[test]
fn compressed_and_non_html_responses_pass_untouched_and_are_counted() {
    let doc = document();
    for mode in ["rust", "lua"] {
        let nginx = Nginx::start_extra(&config(mode), false, EXTRA);
        std::fs::write(nginx.prefix.join("html/native/doc.html"), &doc).unwrap();
        for query in [
            "file=doc.html&n=100&encoding=gzip",
            "file=doc.html&n=100&type=text/plain",
            "file=doc.html&n=100&type=application/json",
        ] {
            let r = nginx.get("localhost", &format!("/html/x?{query}"));
            assert_eq!(r.text(), doc, "{mode} {query}");
        }
        assert_eq!(nginx.counter("localhost", 0, "untouched"), 3, "{mode}");
        let text = nginx.get("localhost", "/graft/metrics").text();
        assert!(
            text.contains(
                r#"graft_response_bodies_untouched_total{zone="localhost",module="html_rewrite"} 3"#
            ),
            "{mode}: {text}"
        );
        nginx.assert_clean_log(&[]);
    }
}

#[test]
fn a_step_left_to_lua_where_no_lua_filter_runs_is_counted_as_failed_not_skipped_in_silence() {
    let nginx = Nginx::start_extra(&config("lua"), false, EXTRA);
    let r = nginx.get("localhost", "/bare/x");
    assert_eq!(r.status, 200);
    assert!(r.text().contains("a@example.org"), "{}", r.text());
    assert_eq!(nginx.counter("localhost", 0, "failed"), 1);
    let expected = "no Lua body filter took it";
    assert!(
        nginx.error_log().contains(expected),
        "{}",
        nginx.error_log()
    );
    nginx.assert_clean_log(&[expected]);
}

#[test]
fn in_shadow_lua_serves_the_body_and_rust_rewrites_it_beside_and_compares() {
    let doc = document();
    let nginx = Nginx::start_extra(&config("shadow"), false, EXTRA);
    std::fs::write(nginx.prefix.join("html/native/doc.html"), &doc).unwrap();
    // The one difference left between the twins: a stray "</" that
    // swallows the head's end tag (lol_html closes the head where its
    // parent ends; the Lua tokenizer, which builds no tree, never does).
    let odd = "<html><head><title>t</title></</head><body>x</body></html>";
    std::fs::write(nginx.prefix.join("html/native/odd.html"), odd).unwrap();
    for n in [doc.len(), 997, 7] {
        let r = nginx.get("localhost", &format!("/html/x?file=doc.html&n={n}"));
        assert_eq!(r.text(), expected(&doc), "chunks of {n}");
    }
    assert_eq!(nginx.counter("localhost", 0, "shadow_diff"), 0);
    let r = nginx.get("localhost", "/html/x?file=odd.html&n=5");
    assert_ne!(r.text(), expected(odd), "Lua's answer is served");
    assert_eq!(nginx.counter("localhost", 0, "shadow_diff"), 1);
    let log = nginx.error_log();
    assert!(
        log.contains(
            r#"graft: shadow diff: zone "localhost" module "html_rewrite" response body: lua"#
        ),
        "{log}"
    );
    nginx.assert_clean_log(&[]);
}

#[test]
fn a_slow_client_gets_the_whole_rewritten_body() {
    use std::io::{Read, Write};
    // Bigger than the loopback's socket buffers: nginx's writer has to
    // wait for the client, and flush through graft's filter later.
    let pieces: Vec<String> = sample::PIECES.iter().map(|p| p.to_string()).collect();
    let body: Vec<String> = (0..12000).flat_map(|_| pieces.iter().cloned()).collect();
    let doc = sample::document(&pieces[..2], &body);
    assert!(doc.len() > 8_000_000, "{}", doc.len());
    let want = expected(&doc);
    let nginx = Nginx::start_extra(&config("rust"), false, EXTRA);
    std::fs::write(nginx.prefix.join("html/native/big.html"), &doc).unwrap();
    for target in ["/nat/big.html", "/html/x?file=big.html&n=65536"] {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", nginx.port)).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        write!(
            s,
            "GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(700));
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match s.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => panic!("{target}: read after {} bytes: {e}", buf.len()),
            }
            if buf.len() % (1 << 20) < 4096 {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        let r = graft_tests::parse_response(&buf).expect("a response");
        assert_eq!(r.status, 200);
        assert!(
            r.text() == want,
            "{target}: {} bytes, not the {} expected",
            r.body.len(),
            want.len()
        );
    }
    nginx.assert_clean_log(&[]);
}
