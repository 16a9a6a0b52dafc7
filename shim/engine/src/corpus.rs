//! The request corpus format, one request a line:
//!
//! ```text
//! # a comment
//! GET<TAB>shop.example<TAB>/cart?id=3<TAB>User-Agent: curl/8<TAB>@client: 127.0.0.9
//! ```
//!
//! Fields are separated by tabs: method, host, request target, then any
//! number of headers. `@client: ADDR` is not a header: it is the loopback
//! address the request is sent from; nor is `@body: BYTES`, the request's
//! body (sent with its `Content-Length`). In every field `\xNN` is the byte NN,
//! `\t` a tab and `\\` a backslash, so a line can carry any byte.
use crate::error::{Error, ErrorKind};
use std::net::Ipv4Addr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorpusRequest {
    pub method: Vec<u8>,
    pub host: Vec<u8>,
    pub target: Vec<u8>,
    pub headers: Vec<Vec<u8>>,
    pub client: Option<Ipv4Addr>,
    pub body: Option<Vec<u8>>,
}

fn unescape(field: &str) -> Result<Vec<u8>, String> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        match bytes.get(i + 1) {
            Some(b'\\') => {
                out.push(b'\\');
                i += 2;
            }
            Some(b't') => {
                out.push(b'\t');
                i += 2;
            }
            Some(b'x') => {
                let hex = field.get(i + 2..i + 4).ok_or("\\x needs two hex digits")?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| "\\x needs two hex digits")?);
                i += 4;
            }
            _ => return Err(format!("unknown escape at byte {i}")),
        }
    }
    Ok(out)
}

pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'\t' => out.push_str("\\t"),
            0x21..=0x7e | b' ' => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

/// `escape`, with a first byte `lead` written as `\xNN` too.
fn escape_leading(bytes: &[u8], lead: u8) -> String {
    match bytes.split_first() {
        Some((&first, rest)) if first == lead => format!("\\x{first:02x}{}", escape(rest)),
        _ => escape(bytes),
    }
}

impl CorpusRequest {
    pub fn get(host: &str, target: &str) -> Self {
        CorpusRequest {
            method: b"GET".to_vec(),
            host: host.as_bytes().to_vec(),
            target: target.as_bytes().to_vec(),
            headers: vec![],
            client: None,
            body: None,
        }
    }

    /// A POST of `body` with that `Content-Type`.
    pub fn post(host: &str, target: &str, content_type: &str, body: &[u8]) -> Self {
        let mut req =
            CorpusRequest::get(host, target).header(&format!("Content-Type: {content_type}"));
        req.method = b"POST".to_vec();
        req.body = Some(body.to_vec());
        req
    }

    pub fn header(mut self, h: &str) -> Self {
        self.headers.push(h.as_bytes().to_vec());
        self
    }

    pub fn from(mut self, client: Ipv4Addr) -> Self {
        self.client = Some(client);
        self
    }

    pub fn to_line(&self) -> String {
        // A line starting with `#` is a comment, and a field starting with
        // `@` names the client or the body: a request's own bytes there are
        // written escaped, so that they read back as what they were.
        let mut fields = vec![
            escape_leading(&self.method, b'#'),
            escape(&self.host),
            escape(&self.target),
        ];
        fields.extend(self.headers.iter().map(|h| escape_leading(h, b'@')));
        if let Some(c) = self.client {
            fields.push(format!("@client: {c}"));
        }
        if let Some(body) = &self.body {
            fields.push(format!("@body: {}", escape(body)));
        }
        fields.join("\t")
    }

    /// The bytes sent: an HTTP/1.1 request that closes the connection.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut w = Vec::new();
        w.extend_from_slice(&self.method);
        w.push(b' ');
        w.extend_from_slice(&self.target);
        w.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        w.extend_from_slice(&self.host);
        w.extend_from_slice(b"\r\n");
        for h in &self.headers {
            w.extend_from_slice(h);
            w.extend_from_slice(b"\r\n");
        }
        if let Some(body) = &self.body {
            w.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
        }
        w.extend_from_slice(b"Connection: close\r\n\r\n");
        if let Some(body) = &self.body {
            w.extend_from_slice(body);
        }
        w
    }

    /// A short description for reports.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} {} {}",
            escape(&self.method),
            escape(&self.host),
            escape(&self.target)
        );
        if s.len() > 200 {
            s.truncate(200);
            s.push('…');
        }
        if let Some(c) = self.client {
            s.push_str(&format!(" from {c}"));
        }
        if let Some(body) = &self.body {
            let shown = escape(&body[..body.len().min(80)]);
            s.push_str(&format!(" with a {}-byte body: {shown}", body.len()));
        }
        s
    }
}

/// Parses a corpus; errors name the line.
pub fn parse(text: &str) -> Result<Vec<CorpusRequest>, Error> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |e: String| Error::new(ErrorKind::Corpus, format!("line {}: {e}", n + 1));
        let mut fields = line.split('\t');
        let mut next = |what: &str| fields.next().ok_or_else(|| err(format!("no {what}")));
        let method = unescape(next("method")?).map_err(err)?;
        let host = unescape(next("host")?).map_err(err)?;
        let target = unescape(next("target")?).map_err(err)?;
        let mut req = CorpusRequest {
            method,
            host,
            target,
            headers: vec![],
            client: None,
            body: None,
        };
        for f in fields {
            if let Some(body) = f.strip_prefix("@body: ") {
                req.body = Some(unescape(body).map_err(err)?);
            } else if let Some(addr) = f.strip_prefix("@client: ") {
                req.client = Some(
                    addr.parse()
                        .map_err(|_| err(format!("bad @client {addr}")))?,
                );
                if !req.client.unwrap().is_loopback() {
                    return Err(err("@client must be a loopback address (127.x.y.z)".into()));
                }
            } else {
                req.headers.push(unescape(f).map_err(err)?);
            }
        }
        out.push(req);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_any_byte() {
        let req = CorpusRequest {
            method: b"GET".to_vec(),
            host: b"a.example".to_vec(),
            target: b"/p/\xff\x00\t\\x".to_vec(),
            headers: vec![b"X-A: \x01\xfe".to_vec()],
            client: Some("127.0.0.9".parse().unwrap()),
            body: Some(b"q=1\t\xff\\{\"a\":[]}".to_vec()),
        };
        let parsed = parse(&req.to_line()).unwrap();
        assert_eq!(parsed, vec![req]);
        // A request's own bytes that look like the format's marks.
        let req = CorpusRequest {
            method: b"#GET".to_vec(),
            host: b"a".to_vec(),
            target: b"/".to_vec(),
            headers: vec![b"@body: x".to_vec(), b"@client: 127.0.0.1".to_vec()],
            client: None,
            body: None,
        };
        assert_eq!(parse(&req.to_line()).unwrap(), vec![req]);
        let e = parse("GET\ta\t/\t@client: 10.0.0.1").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corpus);
        assert!(e.to_string().contains("loopback"), "{e}");
    }
}
