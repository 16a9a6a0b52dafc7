//! The response-header phase: what a module sees of a response before its
//! headers are sent (the upstream's, a content handler's, an error
//! page's), and the header changes it returns.
use crate::{is_framing_header, HeaderOp};

/// A response's status and headers, read-only.
pub trait ResponseView {
    /// The status.
    fn status(&self) -> u16;
    /// The first header of that name (ASCII case-insensitive), if any.
    fn header(&self, name: &[u8]) -> Option<&[u8]>;
}

/// A response held in memory: for tests and tools.
#[derive(Debug, Clone, Default)]
pub struct OwnedResponse {
    pub status: u16,
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
}

impl OwnedResponse {
    /// A response with `status` and `headers` (name, value).
    pub fn new(status: u16, headers: &[(&str, &str)]) -> Self {
        OwnedResponse {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect(),
        }
    }
}

impl ResponseView for OwnedResponse {
    fn status(&self) -> u16 {
        self.status
    }

    fn header(&self, name: &[u8]) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

/// Checks the changes of a response-header phase before any is applied:
/// none may touch a header only the server frames (`Content-Length`,
/// `Transfer-Encoding`...).
pub fn check_response_ops(ops: &[HeaderOp]) -> Result<(), String> {
    match ops.iter().find(|op| is_framing_header(op.name.as_str())) {
        Some(op) => Err(format!(
            "changes the response header \"{}\", which only the server frames",
            op.name.as_str()
        )),
        None => Ok(()),
    }
}
