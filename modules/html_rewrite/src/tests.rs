use super::*;
use proptest::prelude::*;
use serde_json::json;

fn rewrite_in(config: serde_json::Value, chunks: &[&[u8]]) -> String {
    let m = HtmlRewrite::from_config(&config).unwrap();
    let mut r = m.rewriter();
    let mut out = Vec::new();
    for c in chunks {
        r.write(c, &mut out).unwrap();
    }
    r.end(&mut out).unwrap();
    String::from_utf8(out).unwrap()
}

fn all() -> serde_json::Value {
    json!({ "head_end": "<script src=\"/rum.js\"></script>",
            "https_hosts": ["example.com", "cdn.example.com"],
            "obfuscate_emails": true })
}

#[test]
fn the_three_rewrites() {
    let doc = r#"<!DOCTYPE html><html><HEAD><title>a@b.com</title></HEAD><body>
<a href="http://example.com/x" class=big>mail ann@example.org now</a>
<img SRC='http://CDN.example.com:8080/i.png' alt=x/>
<a href="http://example.com.evil.net/">no</a><a href="https://example.com/">already</a>
<form action=http://example.com?q=1 method=post></form>
<!-- bob@example.org --><script>var m = "eve@example.org";</script>
<p>x@y a@b.c c@d.co.uk. not@all@ z@@q.com</p></body></html>"#;
    let out = rewrite_in(all(), &[doc.as_bytes()]);
    assert_eq!(
        out,
        r#"<!DOCTYPE html><html><HEAD><title>a@b.com</title><script src="/rum.js"></script></HEAD><body>
<a href="https://example.com/x" class=big>mail ann&#64;example.org now</a>
<img SRC="https://CDN.example.com:8080/i.png" alt=x/>
<a href="http://example.com.evil.net/">no</a><a href="https://example.com/">already</a>
<form action="https://example.com?q=1" method=post></form>
<!-- bob@example.org --><script>var m = "eve@example.org";</script>
<p>x@y a@b.c c&#64;d.co.uk. not@all@ z@@q.com</p></body></html>"#
    );
}

#[test]
fn obfuscation_rules() {
    for (text, want) in [
        ("ann@example.org", "ann&#64;example.org"),
        ("@example.org", "@example.org"),
        ("a@example.org1", "a@example.org1"),
        ("a@b.example.com.", "a&#64;b.example.com."),
        ("a@b..com", "a@b..com"),
        ("a@b@c.com", "a@b&#64;c.com"),
        ("x a@b.cd e@f.gh", "x a&#64;b.cd e&#64;f.gh"),
        (
            "é@é.com ü.x@ex-ample.museum",
            "é@é.com ü.x&#64;ex-ample.museum",
        ),
    ] {
        assert_eq!(obfuscate(text), want, "{text}");
    }
}

#[test]
fn only_uncompressed_html_is_rewritten() {
    let m = HtmlRewrite::from_config(&all()).unwrap();
    let head = |ct: Option<&'static str>, ce: Option<&'static str>| ResponseHead {
        status: 200,
        content_type: ct.map(str::as_bytes),
        content_encoding: ce.map(str::as_bytes),
    };
    assert!(m
        .on_response_body(&head(Some("text/html; charset=utf-8"), None))
        .is_some());
    assert!(m
        .on_response_body(&head(Some("TEXT/HTML"), Some("identity")))
        .is_some());
    assert!(m
        .on_response_body(&head(Some("text/html"), Some("gzip")))
        .is_none());
    assert!(m
        .on_response_body(&head(Some("application/json"), None))
        .is_none());
    assert!(m.on_response_body(&head(None, None)).is_none());
}

#[test]
fn bad_configurations_are_refused_with_the_field_named() {
    for (config, field) in [
        (json!({ "https_hosts": ["exa mple.com"] }), "https_hosts[0]"),
        (json!({ "https_hosts": [""] }), "https_hosts[0]"),
        (
            json!({ "head_end": "x".repeat(MAX_SNIPPET + 1) }),
            "head_end",
        ),
        (json!({ "obfuscate": true }), "obfuscate"),
    ] {
        let e = HtmlRewrite::from_config(&config).err().expect("refused");
        assert!(e.to_string().contains(field), "{e}");
    }
}

#[test]
fn head_end_goes_into_one_document_up_to_a_bound_then_the_rewrite_fails() {
    let snippet = "x".repeat(MAX_SNIPPET);
    let m = HtmlRewrite::from_config(&json!({ "head_end": snippet })).unwrap();
    let fits = MAX_INSERTED / MAX_SNIPPET;
    let rewrite = |heads: usize| {
        let mut r = m.rewriter();
        let mut out = Vec::new();
        let mut result = Ok(());
        for _ in 0..heads {
            result = result.and_then(|()| r.write(b"<head></head>", &mut out));
            // What a caller passes on goes; the rewriter holds none of it.
            out.clear();
        }
        result.and_then(|()| r.end(&mut out))
    };
    assert!(rewrite(fits).is_ok());
    let e = rewrite(fits + 1).expect_err("past the bound");
    assert!(e.message.contains("head_end"), "{}", e.message);
}

/// A document from the sample pieces (`sample`).
fn document() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        prop::sample::select(sample::PIECES).prop_map(str::to_string),
        "[a-z@. <]{0,12}",
    ];
    (
        prop::collection::vec(piece.clone(), 0..5),
        prop::collection::vec(piece, 0..8),
    )
        .prop_map(|(head, body)| sample::document(&head, &body))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn every_way_of_cutting_a_document_gives_the_same_output(
        doc in document(),
        at in prop::collection::vec(0.0f64..1.0, 0..24),
    ) {
        let whole = rewrite_in(all(), &[doc.as_bytes()]);
        let chunks = sample::cut(doc.as_bytes(), &at);
        let parts: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        prop_assert_eq!(rewrite_in(all(), &parts), whole);
    }

    #[test]
    fn byte_by_byte_too(doc in document()) {
        let whole = rewrite_in(all(), &[doc.as_bytes()]);
        let parts: Vec<&[u8]> = doc.as_bytes().chunks(1).collect();
        prop_assert_eq!(rewrite_in(all(), &parts), whole);
    }
}

#[test]
fn a_text_node_passes_untouched_up_to_its_first_at_and_is_held_from_there() {
    let mail = json!({ "obfuscate_emails": true });
    // The `@` starts a chunk after a chunk that ended the address's local
    // part: that one was written, and its last byte still counts.
    let out = rewrite_in(
        mail.clone(),
        &[
            b"<p>write to ann",
            b"@example.org or ",
            b"x @y.com, b",
            b"@c.de</p>",
        ],
    );
    assert_eq!(
        out,
        "<p>write to ann&#64;example.org or x @y.com, b&#64;c.de</p>"
    );
    // A chunk that ends before the `@` with a byte that is not an
    // address's: no address.
    let out = rewrite_in(mail.clone(), &[b"<p>see (", b"@example.org)</p>"]);
    assert_eq!(out, "<p>see (@example.org)</p>");
    // Over MAX_TEXT, held or not, a node passes as it is (the Lua twin
    // leaves such a node whole too).
    let long = "y".repeat(MAX_TEXT);
    let early = format!("<p>ann@example.org {long}</p>");
    let late = format!("<p>{long} ann@example.org</p>");
    for doc in [&early, &late] {
        let chunks: Vec<&[u8]> = doc.as_bytes().chunks(1000).collect();
        assert_eq!(&rewrite_in(mail.clone(), &chunks), doc);
    }
}
