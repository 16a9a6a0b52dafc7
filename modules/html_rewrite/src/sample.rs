//! Documents for the tests of `html_rewrite` and of its parity with the
//! Lua twin: pieces chosen to put chunk boundaries everywhere that
//! matters (inside tags, attribute values of every quoting, comments,
//! scripts, text with addresses, multi-byte characters), and cuts.

/// The pieces a test document is made of.
pub const PIECES: &[&str] = &[
    "<p>Write to ann@example.org or ünïcødé 日本語 bob@cdn.example.com.</p>",
    "<a href=\"http://example.com/a?b=1#c\" title='t'>x</a>",
    "<a   HREF='http://Example.COM'  data-x=\"y\" >y</a>",
    "<img src=http://cdn.example.com/i.png alt=\"é\">",
    "<link rel=stylesheet href=\"http://other.net/s.css\"/>",
    "<form action=\"http://example.com:8443/post\" method=post></form>",
    "<!-- ann@example.org <a href=\"http://example.com/\"> -->",
    "<script>if (a < b) { s = \"eve@example.org\"; }</script>",
    "<style>p::after { content: \"x@y.com\" }</style>",
    "<textarea>t@example.org</textarea>",
    "a &amp; b &lt; c@d.ef &#64; 5 < 6",
    "<br/><hr ><input disabled value='http://example.com'>",
    "<a href='http://example.com/\"q\"' id=a1 >quote</a>",
    "<iframe src=\"http://cdn.example.com/f\"></iframe>",
    "x.y@sub.example.co.uk, @no, a@b, end@example.org.",
];

/// A whole document: the head's pieces, then the body's.
pub fn document(head: &[String], body: &[String]) -> String {
    format!(
        "<!DOCTYPE html>\n<html><head><title>T é a@b.com</title>{}</head>\n<body>{}</body></html>\n",
        head.concat(),
        body.concat()
    )
}

/// Cuts a document at the given fractions of its length (byte offsets:
/// inside multi-byte characters too).
pub fn cut(doc: &[u8], at: &[f64]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = at
        .iter()
        .map(|f| ((doc.len() as f64) * f) as usize)
        .collect();
    points.sort_unstable();
    let mut chunks = Vec::new();
    let mut from = 0;
    for p in points {
        chunks.push(doc[from..p.max(from)].to_vec());
        from = p.max(from);
    }
    chunks.push(doc[from..].to_vec());
    chunks
}
