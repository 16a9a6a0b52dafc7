//! The request as graft's modules see it ([`RequestView`]), over Pingora's
//! request header, and the changes a step makes to it.
//!
//! What nginx computes when it reads a request (`$uri`, `$request_uri`,
//! `$args`, the host) is computed once, when the request arrives
//! ([`Facts`]); headers are read where Pingora keeps them, so a step sees
//! the header changes of the steps before it, as in nginx.
use std::net::IpAddr;
use std::ops::ControlFlow;

use graft_contract::{Changes, HeaderAction, HeaderOp, HeaderVisitor, RequestView};
use graft_url_normalize::UrlNormalize;
use pingora_http::RequestHeader;

/// What nginx reads of a request once: its path, target, arguments, host
/// and client.
#[derive(Debug, Clone)]
pub struct Facts {
    /// `$uri`: decoded once, dot segments resolved, slashes merged; a
    /// step's `uri` change replaces it.
    pub path: Vec<u8>,
    /// `$request_uri`: the target as the client sent it.
    pub raw_uri: Vec<u8>,
    /// `$args`, when not empty.
    pub query: Option<Vec<u8>>,
    /// The host, lower case, without port or trailing dot.
    pub host: Vec<u8>,
    pub client: Option<IpAddr>,
}

/// Why a request cannot be read as nginx reads it (nginx answers 400).
#[derive(Debug, PartialEq, Eq)]
pub struct BadRequest(pub &'static str);

impl Facts {
    pub fn of(head: &RequestHeader, client: Option<IpAddr>) -> Result<Facts, BadRequest> {
        let raw = head.raw_path();
        let raw_uri = if raw.first() == Some(&b'/') {
            raw.to_vec()
        } else {
            // Absolute form (`GET http://host/x`): the path and query.
            head.uri
                .path_and_query()
                .map_or(b"/".to_vec(), |p| p.as_str().as_bytes().to_vec())
        };
        let (raw_path, query) = match raw_uri.iter().position(|&b| b == b'?') {
            Some(q) => (&raw_uri[..q], Some(&raw_uri[q + 1..])),
            None => (&raw_uri[..], None),
        };
        // nginx's reading: a decoded CR or LF is kept (url_normalize,
        // a step, refuses it where the zone runs it), a NUL refused.
        let path = normalizer()
            .nginx_uri(raw_path)
            .map_err(|_| {
                BadRequest(
                    "a path nginx refuses (bad encoding, an encoded NUL, or \"..\" above the root)",
                )
            })?
            .ok_or(BadRequest("a target that is not a path"))?;
        let host = host_of(head).ok_or(BadRequest("a Host that is not a host name"))?;
        Ok(Facts {
            path,
            raw_uri: raw_uri.clone(),
            query: query.filter(|q| !q.is_empty()).map(<[u8]>::to_vec),
            host,
            client,
        })
    }
}

/// The path as nginx resolves it: url_normalize's reading, merging
/// slashes (nginx's `merge_slashes on`, its default).
fn normalizer() -> &'static UrlNormalize {
    static N: std::sync::OnceLock<UrlNormalize> = std::sync::OnceLock::new();
    N.get_or_init(|| {
        use graft_contract::Configured;
        UrlNormalize::configure(&serde_json::json!({ "merge_slashes": true }))
            .expect("url_normalize's default configuration")
    })
}

/// The request's host: the `Host` header, else the target's authority
/// (HTTP/2's `:authority`), lower case, without port and trailing dot;
/// empty with neither (an HTTP/1.0 request: the `"*"` zone's, if any).
/// `None`: a host nginx refuses.
fn host_of(head: &RequestHeader) -> Option<Vec<u8>> {
    let raw = match head.headers.get(http::header::HOST) {
        Some(v) => v.as_bytes(),
        None => match head.uri.authority() {
            Some(a) => a.as_str().as_bytes(),
            None => return Some(Vec::new()),
        },
    };
    let raw = raw.trim_ascii();
    let name = if raw.first() == Some(&b'[') {
        let end = raw.iter().position(|&b| b == b']')?;
        &raw[..=end]
    } else {
        match raw.iter().rposition(|&b| b == b':') {
            Some(colon) => &raw[..colon],
            None => raw,
        }
    };
    let name = name.strip_suffix(b".").unwrap_or(name);
    if name.is_empty()
        || !name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-._[]:".contains(b))
    {
        return None;
    }
    Some(name.to_ascii_lowercase())
}

/// What nginx refuses of a request head that Pingora takes, before any
/// phase (so before any step reads it, and with nginx's page, which no
/// body step rewrites): the status to answer and why. In nginx's order:
/// 400 a method of other bytes than `A`-`Z`, `_` and `-`; 414 a request
/// line longer than `max_line`; 400 a header line longer than that, a
/// head longer than `max_head`, two `Content-Length`s, or a
/// `Content-Length` beside a `Transfer-Encoding` (framing a server behind
/// could read otherwise); 405 `TRACE`. Pingora drops the `Content-Length`
/// of a request that has both (RFC 9112's reading): `raw`, the head as
/// the client sent it, tells.
pub fn refused_head(
    head: &RequestHeader,
    raw: Option<&[u8]>,
    max_line: usize,
    max_head: usize,
) -> Option<(u16, &'static str)> {
    let method = head.method.as_str().as_bytes();
    if !method
        .iter()
        .all(|&b| b.is_ascii_uppercase() || b == b'_' || b == b'-')
    {
        return Some((
            400,
            "a method nginx does not read (a byte other than A-Z, _ or -)",
        ));
    }
    // "METHOD target HTTP/1.1" and CR LF.
    let line = method.len() + head.raw_path().len() + 12;
    if line > max_line {
        return Some((414, "a request line over limits.max_line_bytes"));
    }
    let mut total = line;
    for (name, value) in &head.headers {
        let len = name.as_str().len() + value.len() + 4;
        total += len;
        if len > max_line || total > max_head {
            return Some((400, "a header line or a head over graft-edge's limits"));
        }
    }
    let lengths = head.headers.get_all(http::header::CONTENT_LENGTH);
    let mut lengths = lengths.iter();
    let first = lengths.next();
    let chunked = head.headers.contains_key(http::header::TRANSFER_ENCODING);
    if lengths.next().is_some()
        || first.is_some_and(|v| v.as_bytes().contains(&b','))
        || (chunked && (first.is_some() || raw.is_some_and(names_content_length)))
    {
        return Some((400, "a body framed twice"));
    }
    if head.method.as_str() == "TRACE" {
        return Some((405, "TRACE, which nginx never serves"));
    }
    None
}

/// Whether a raw request head has a `Content-Length` line.
fn names_content_length(raw: &[u8]) -> bool {
    raw.split(|&b| b == b'\n')
        .skip(1)
        .any(|line| line.len() >= 15 && line[..15].eq_ignore_ascii_case(b"content-length:"))
}

/// A request as one step reads it.
pub struct EdgeRequest<'a> {
    pub head: &'a RequestHeader,
    pub facts: &'a Facts,
    pub body: Option<&'a [u8]>,
}

impl RequestView for EdgeRequest<'_> {
    fn method(&self) -> &[u8] {
        self.head.method.as_str().as_bytes()
    }
    fn path(&self) -> &[u8] {
        &self.facts.path
    }
    fn raw_uri(&self) -> &[u8] {
        &self.facts.raw_uri
    }
    fn query(&self) -> Option<&[u8]> {
        self.facts.query.as_deref()
    }
    fn host(&self) -> &[u8] {
        &self.facts.host
    }
    fn header(&self, name: &[u8]) -> Option<&[u8]> {
        let name = std::str::from_utf8(name).ok()?;
        self.head.headers.get(name).map(|v| v.as_bytes())
    }
    fn for_each_header(&self, f: &mut HeaderVisitor<'_>) {
        if self.head.has_case() {
            for (name, value) in self.head.case_header_iter() {
                if f(name.as_slice(), value.as_bytes()).is_break() {
                    return;
                }
            }
        } else {
            for (name, value) in &self.head.headers {
                if f(name.as_str().as_bytes(), value.as_bytes()) == ControlFlow::Break(()) {
                    return;
                }
            }
        }
    }
    fn client_addr(&self) -> Option<IpAddr> {
        self.facts.client
    }
    fn body(&self) -> Option<&[u8]> {
        self.body
    }
}

/// Applies a step's request changes (its URI, its request headers) to the
/// request; its response-header changes are kept for the response.
/// `Err` when Pingora refuses one (a decision's headers were checked when
/// it was made, so this is a bug): nothing of the rest is applied.
pub fn apply(
    head: &mut RequestHeader,
    facts: &mut Facts,
    changes: Changes,
    response_ops: &mut Vec<HeaderOp>,
) -> Result<(), String> {
    if let Some(uri) = changes.uri {
        let mut target = escape_path(&uri);
        if let Some(q) = &facts.query {
            target.push(b'?');
            target.extend_from_slice(q);
        }
        head.set_raw_path(&target)
            .map_err(|e| format!("the new URI is refused: {e}"))?;
        facts.path = uri;
    }
    for op in changes.request_headers {
        set_header(head, &op)?;
    }
    response_ops.extend(changes.response_headers);
    Ok(())
}

fn set_header(head: &mut RequestHeader, op: &HeaderOp) -> Result<(), String> {
    let name = op.name.as_str().to_string();
    let value = op.value.as_bytes();
    let refused = |e: Box<pingora_error::Error>| format!("header \"{name}\" refused: {e}");
    match op.action {
        HeaderAction::Remove => {
            head.remove_header(name.as_str());
        }
        HeaderAction::Set => head.insert_header(name.clone(), value).map_err(refused)?,
        HeaderAction::Add => {
            head.append_header(name.clone(), value).map_err(refused)?;
        }
    }
    Ok(())
}

/// A decoded path as a request target, escaped as nginx escapes a changed
/// URI it proxies (`ngx_escape_uri`): every byte but the unreserved ones,
/// sub-delimiters, `:`, `@` and `/`.
pub fn escape_path(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    for &b in path {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b) {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(target: &str, host: Option<&str>) -> RequestHeader {
        let mut h = RequestHeader::build("GET", target.as_bytes(), None).unwrap();
        if let Some(host) = host {
            h.insert_header("Host", host).unwrap();
        }
        h
    }

    #[test]
    fn reads_a_request_as_nginx_does() {
        let f = Facts::of(
            &head("/a/./b/../c//d%20e?x=1", Some("Shop.Example:8080")),
            None,
        )
        .unwrap();
        assert_eq!(f.path, b"/a/c/d e");
        assert_eq!(f.raw_uri, b"/a/./b/../c//d%20e?x=1");
        assert_eq!(f.query.as_deref(), Some(&b"x=1"[..]));
        assert_eq!(f.host, b"shop.example");
        let f = Facts::of(&head("/?", Some("[::1]:80")), None).unwrap();
        assert_eq!((f.query, f.host.as_slice()), (None, &b"[::1]"[..]));
        assert_eq!(
            Facts::of(&head("/x", Some("a.test.")), None).unwrap().host,
            b"a.test"
        );
        for bad in ["/../x", "/%zz", "/%00"] {
            assert!(
                Facts::of(&head(bad, Some("a.test")), None).is_err(),
                "{bad}"
            );
        }
        assert!(Facts::of(&head("/", Some("a b")), None).is_err());
        assert!(Facts::of(&head("/", Some("")), None).is_err());
        assert_eq!(Facts::of(&head("/", None), None).unwrap().host, b"");
    }

    #[test]
    fn a_head_nginx_refuses_is_refused() {
        let fine = head("/a", Some("a.test"));
        assert_eq!(refused_head(&fine, None, 64, 128).map(|r| r.0), None);
        let long = head(&format!("/{}", "a".repeat(60)), Some("a.test"));
        assert_eq!(refused_head(&long, None, 64, 128).map(|r| r.0), Some(414));
        let mut big = head("/a", Some("a.test"));
        big.insert_header("X-Big", "b".repeat(60)).unwrap();
        assert_eq!(refused_head(&big, None, 64, 1024).map(|r| r.0), Some(400));
        let mut many = head("/a", Some("a.test"));
        for i in 0..10 {
            many.append_header(format!("X-{i}"), "0123456789").unwrap();
        }
        assert_eq!(refused_head(&many, None, 64, 128).map(|r| r.0), Some(400));
        assert_eq!(refused_head(&many, None, 64, 1024).map(|r| r.0), None);
        for headers in [
            &[("Content-Length", "1"), ("Content-Length", "1")][..],
            &[("Content-Length", "1, 1")],
            &[("Content-Length", "0"), ("Transfer-Encoding", "chunked")],
        ] {
            let mut h = head("/", Some("a.test"));
            for (n, v) in headers {
                h.append_header(*n, *v).unwrap();
            }
            assert_eq!(
                refused_head(&h, None, 1024, 4096).map(|r| r.0),
                Some(400),
                "{headers:?}"
            );
        }
        // Pingora took the Content-Length away: the raw head has it.
        let mut te = head("/", Some("a.test"));
        te.append_header("Transfer-Encoding", "chunked").unwrap();
        assert_eq!(
            refused_head(&te, Some(b"GET / HTTP/1.1\r\nHost: a\r\n"), 1024, 4096).map(|r| r.0),
            None
        );
        let raw = b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\ncontent-LENGTH: 0\r\n";
        assert_eq!(
            refused_head(&te, Some(raw), 1024, 4096).map(|r| r.0),
            Some(400)
        );
        // nginx's methods: A-Z, _ and -; TRACE refused with 405 once the
        // head is read.
        let method = |m: &str| {
            let h = RequestHeader::build(m, b"/", None).unwrap();
            refused_head(&h, None, 1024, 4096).map(|r| r.0)
        };
        assert_eq!(method("PROP_FIND-X"), None);
        assert_eq!(method("get"), Some(400));
        assert_eq!(method("G3T"), Some(400));
        assert_eq!(method("TRACE"), Some(405));
    }

    #[test]
    fn a_changed_uri_keeps_the_arguments_and_round_trips() {
        let mut h = head("/old%20x?a=1", Some("a.test"));
        let mut f = Facts::of(&h, None).unwrap();
        let mut ops = Vec::new();
        let changes = Changes {
            uri: Some(b"/new path/%/?".to_vec()),
            ..Changes::default()
        };
        apply(&mut h, &mut f, changes, &mut ops).unwrap();
        assert_eq!(h.raw_path(), b"/new%20path/%25/%3F?a=1");
        assert_eq!(f.path, b"/new path/%/?");
        assert_eq!(Facts::of(&h, None).unwrap().path, f.path);
        assert_eq!(f.raw_uri, b"/old%20x?a=1", "$request_uri stays as sent");
    }

    #[test]
    fn header_changes_are_seen_by_the_next_step() {
        use graft_contract::{HeaderName, HeaderValue};
        let mut h = head("/", Some("a.test"));
        h.append_header("X-A", "1").unwrap();
        h.append_header("X-A", "2").unwrap();
        let mut f = Facts::of(&h, None).unwrap();
        let op = |action, name: &str, value: &str| HeaderOp {
            action,
            name: HeaderName::new(name).unwrap(),
            value: HeaderValue::new(value).unwrap(),
        };
        let changes = Changes {
            request_headers: vec![
                op(HeaderAction::Set, "X-A", "3"),
                op(HeaderAction::Add, "X-B", "4"),
                op(HeaderAction::Remove, "Host", ""),
            ],
            response_headers: vec![op(HeaderAction::Add, "X-R", "5")],
            ..Changes::default()
        };
        let mut ops = Vec::new();
        apply(&mut h, &mut f, changes, &mut ops).unwrap();
        let view = EdgeRequest {
            head: &h,
            facts: &f,
            body: None,
        };
        assert_eq!(view.header(b"x-a"), Some(&b"3"[..]));
        assert_eq!(view.header(b"X-B"), Some(&b"4"[..]));
        assert_eq!(view.header(b"host"), None);
        assert_eq!(h.headers.get_all("x-a").iter().count(), 1);
        assert_eq!(ops.len(), 1);
        let mut seen = Vec::new();
        view.for_each_header(&mut |n, v| {
            seen.push((n.to_ascii_lowercase(), v.to_vec()));
            ControlFlow::Continue(())
        });
        seen.sort();
        assert_eq!(
            seen,
            vec![
                (b"x-a".to_vec(), b"3".to_vec()),
                (b"x-b".to_vec(), b"4".to_vec())
            ]
        );
    }
}
