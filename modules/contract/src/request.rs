use std::net::IpAddr;
use std::ops::ControlFlow;

/// Called with each header's name and value; break to stop the walk.
pub type HeaderVisitor<'v> = dyn FnMut(&[u8], &[u8]) -> ControlFlow<()> + 'v;

/// A read-only view of a request, read where the server keeps it.
///
/// Byte strings are the server's own bytes: they need not be UTF-8.
pub trait RequestView {
    /// `GET`, `POST`, ...
    fn method(&self) -> &[u8];
    /// The path as the server resolved it: percent-decoded, with `.` and
    /// `..` segments and repeated slashes resolved (nginx's `$uri`).
    fn path(&self) -> &[u8];
    /// The request target exactly as the client sent it (`$request_uri`).
    fn raw_uri(&self) -> &[u8];
    /// The query string without the `?`; `None` when there is none or it is empty.
    fn query(&self) -> Option<&[u8]>;
    /// The host the request is for, lower case, without port.
    fn host(&self) -> &[u8];
    /// The first header of that name, compared without regard to case.
    fn header(&self, name: &[u8]) -> Option<&[u8]>;
    /// Calls `f` with every request header in the order received, until it breaks.
    fn for_each_header(&self, f: &mut HeaderVisitor<'_>);
    /// The client's address, when the connection has one.
    fn client_addr(&self) -> Option<IpAddr>;
    /// The request body, as far as the zone reads it: at most its
    /// `max_bytes` (a longer body is cut there). `None` in a zone that
    /// reads no bodies, or for a request without one.
    fn body(&self) -> Option<&[u8]> {
        None
    }
}

/// A request held in owned memory: for tests, replay and the parity harness.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnedRequest {
    pub method: Vec<u8>,
    pub path: Vec<u8>,
    pub raw_uri: Vec<u8>,
    pub query: Option<Vec<u8>>,
    pub host: Vec<u8>,
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub client: Option<IpAddr>,
    pub body: Option<Vec<u8>>,
}

impl OwnedRequest {
    /// A GET request for `target` (path and optional query) on `host`.
    pub fn get(host: &str, target: &str) -> Self {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, (!q.is_empty()).then(|| q.as_bytes().to_vec())),
            None => (target, None),
        };
        OwnedRequest {
            method: b"GET".to_vec(),
            path: path.as_bytes().to_vec(),
            raw_uri: target.as_bytes().to_vec(),
            query,
            host: host.as_bytes().to_vec(),
            headers: vec![(b"Host".to_vec(), host.as_bytes().to_vec())],
            client: None,
            body: None,
        }
    }
}

impl RequestView for OwnedRequest {
    fn method(&self) -> &[u8] {
        &self.method
    }
    fn path(&self) -> &[u8] {
        &self.path
    }
    fn raw_uri(&self) -> &[u8] {
        &self.raw_uri
    }
    fn query(&self) -> Option<&[u8]> {
        self.query.as_deref()
    }
    fn host(&self) -> &[u8] {
        &self.host
    }
    fn header(&self, name: &[u8]) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
    fn for_each_header(&self, f: &mut HeaderVisitor<'_>) {
        for (n, v) in &self.headers {
            if f(n, v).is_break() {
                break;
            }
        }
    }
    fn client_addr(&self) -> Option<IpAddr> {
        self.client
    }
    fn body(&self) -> Option<&[u8]> {
        self.body.as_deref()
    }
}
