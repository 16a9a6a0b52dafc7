//! What graft's fuzz targets share: a request read leniently from the
//! fuzzer's bytes, so that seeds stay readable and every input is a request.
//!
//! ```text
//! POST /login?next=%2e%2e/x HTTP/1.1      method and target (any version)
//! Host: Shop.Example:8080                  headers, one a line (`\r` dropped)
//! Content-Type: application/json
//! @client: 10.1.2.3                        not a header: the client address
//!                                          an empty line: a body follows
//! {"user":"<script>"}
//! ```
//!
//! No input is refused: a missing line is an empty field.

use graft_contract::OwnedRequest;

fn line(rest: &mut &[u8]) -> Option<Vec<u8>> {
    if rest.is_empty() {
        return None;
    }
    let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
    let mut l = rest[..end].to_vec();
    *rest = rest.get(end + 1..).unwrap_or_default();
    if l.last() == Some(&b'\r') {
        l.pop();
    }
    Some(l)
}

/// The request `data` describes (format in the module doc).
pub fn request(data: &[u8]) -> OwnedRequest {
    let mut rest = data;
    let first = line(&mut rest).unwrap_or_default();
    let mut words = first.splitn(3, |&b| b == b' ');
    let method = words.next().unwrap_or_default().to_vec();
    let raw_uri = words.next().unwrap_or_default().to_vec();
    let (path, query) = match raw_uri.iter().position(|&b| b == b'?') {
        Some(q) => (
            raw_uri[..q].to_vec(),
            Some(raw_uri[q + 1..].to_vec()).filter(|q| !q.is_empty()),
        ),
        None => (raw_uri.clone(), None),
    };
    let mut req = OwnedRequest {
        method,
        path,
        raw_uri,
        query,
        ..OwnedRequest::default()
    };
    while let Some(l) = line(&mut rest) {
        if l.is_empty() {
            req.body = Some(rest.to_vec());
            break;
        }
        if let Some(addr) = l.strip_prefix(b"@client: ") {
            req.client = std::str::from_utf8(addr).ok().and_then(|a| a.parse().ok());
            continue;
        }
        let (name, value) = match l.iter().position(|&b| b == b':') {
            Some(c) => (l[..c].to_vec(), l[c + 1..].trim_ascii_start().to_vec()),
            None => (l, Vec::new()),
        };
        if name.eq_ignore_ascii_case(b"host") {
            let host = value.split(|&b| b == b':').next().unwrap_or_default();
            req.host = host.to_ascii_lowercase();
        }
        req.headers.push((name, value));
    }
    req
}

/// Splits `data` at its first newline: a first line (a configuration or a
/// condition) and the rest (a request).
pub fn split_first_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(n) => (&data[..n], &data[n + 1..]),
        None => (data, &[]),
    }
}
