use crate::{HeaderName, HeaderValue};

/// What a module decided about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go on to the next module, after applying these changes.
    Continue(Changes),
    /// Answer now; the modules after this one do not run.
    Respond(Response),
    /// Not handled by this implementation: serve the request through the
    /// Lua implementation of the same module.
    Decline,
}

/// Changes to a request that goes on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// A new URI path for the request (no query string).
    pub uri: Option<Vec<u8>>,
    /// Changes to the request headers, in order.
    pub request_headers: Vec<HeaderOp>,
    /// Changes to the response headers, applied when the response is sent.
    pub response_headers: Vec<HeaderOp>,
    /// Lines for the server's error log (at warn level), e.g. a rule that matched.
    pub log: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.uri.is_none()
            && self.request_headers.is_empty()
            && self.response_headers.is_empty()
            && self.log.is_empty()
    }
}

/// An answer sent in place of the normal content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// 100..=599.
    pub status: u16,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Empty: nginx sends its own page for the status.
    pub body: Vec<u8>,
    /// Lines for the server's error log (at warn level), e.g. why it answered.
    pub log: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderAction {
    /// Replace every header of that name with this one.
    Set,
    /// Add one more header of that name.
    Add,
    /// Remove every header of that name (the value is empty).
    Remove,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderOp {
    pub action: HeaderAction,
    pub name: HeaderName,
    pub value: HeaderValue,
}
