use crate::{HeaderName, HeaderValue};

/// What a module decided about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go on to the next module, after applying these changes.
    Continue(Changes),
    /// Answer now; the modules after this one do not run.
    Respond(Response),
    /// Not handled by this implementation: serve the request through the
    /// Lua twin of the same module.
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

    /// Empty, and never allocated: dropping it frees nothing.
    pub fn holds_nothing(&self) -> bool {
        self.uri.is_none()
            && self.request_headers.capacity() == 0
            && self.response_headers.capacity() == 0
            && self.log.capacity() == 0
    }
}

/// An answer sent in place of the normal content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// 200..=599 (see [`Decision::check_framing`]).
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

/// Headers that frame a message on the wire, or say how its connection is
/// kept. The server writes them from the answer itself: a decision that
/// set one could make a response whose framing a proxy in front reads
/// differently (`Transfer-Encoding` beside `Content-Length`), or a request
/// the origin reads differently from graft.
pub const FRAMING_HEADERS: [&str; 7] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
];

/// Whether a header name is one of [`FRAMING_HEADERS`].
pub fn is_framing_header(name: &str) -> bool {
    FRAMING_HEADERS.iter().any(|f| f.eq_ignore_ascii_case(name))
}

impl Decision {
    /// Checks that the decision can go on the wire as HTTP/1.1 frames it,
    /// and drops what the server sets itself: the server applies a
    /// decision only after this, and applies it whole.
    ///
    /// - An answer's status is 200 to 599; a 204 or 304 has no body.
    /// - An answer's `Content-Length` equal to its body's length is
    ///   dropped (the server sets the length from the body); any other
    ///   framing header in it is refused.
    /// - A change never touches a framing header, of the request or of
    ///   the response.
    pub fn check_framing(&mut self) -> Result<(), String> {
        match self {
            Decision::Respond(resp) => resp.check_framing(),
            Decision::Continue(changes) => {
                let ops = changes
                    .request_headers
                    .iter()
                    .map(|op| ("request", op))
                    .chain(changes.response_headers.iter().map(|op| ("response", op)));
                for (which, op) in ops {
                    if is_framing_header(op.name.as_str()) {
                        return Err(format!(
                            "changes the {which} header \"{}\", which only the server frames",
                            op.name.as_str()
                        ));
                    }
                }
                Ok(())
            }
            Decision::Decline => Ok(()),
        }
    }
}

impl Response {
    fn check_framing(&mut self) -> Result<(), String> {
        if !(200..=599).contains(&self.status) {
            return Err(format!(
                "answers with status {}, not one from 200 to 599",
                self.status
            ));
        }
        if matches!(self.status, 204 | 304) && !self.body.is_empty() {
            return Err(format!(
                "answers {} with a body of {} bytes, which that status cannot carry",
                self.status,
                self.body.len()
            ));
        }
        let length = self.body.len().to_string();
        let mut refused = None;
        self.headers.retain(|(name, value)| {
            let name = name.as_str();
            if !is_framing_header(name) {
                return true;
            }
            if name.eq_ignore_ascii_case("content-length")
                && value.as_bytes() == length.as_bytes()
            {
                return false;
            }
            refused.get_or_insert_with(|| {
                format!(
                    "answers with the header \"{name}: {}\", which only the server frames (its body is {length} bytes)",
                    String::from_utf8_lossy(value.as_bytes())
                )
            });
            true
        });
        refused.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_change_list_that_allocated_is_not_one_that_holds_nothing() {
        assert!(Changes::default().holds_nothing());
        let mut emptied = Changes::default();
        emptied.log.push("x".into());
        emptied.log.clear();
        assert!(emptied.is_empty() && !emptied.holds_nothing());
    }

    fn respond(status: u16, headers: &[(&str, &str)], body: &str) -> Decision {
        Decision::Respond(Response {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| (HeaderName::new(n).unwrap(), HeaderValue::new(*v).unwrap()))
                .collect(),
            body: body.as_bytes().to_vec(),
            log: Vec::new(),
        })
    }

    #[test]
    fn a_matching_content_length_is_dropped_and_a_wrong_one_refused() {
        let mut d = respond(200, &[("Content-Length", "2"), ("X-A", "1")], "ok");
        assert_eq!(d.check_framing(), Ok(()));
        assert_eq!(d, respond(200, &[("X-A", "1")], "ok"));
        let mut d = respond(204, &[("content-length", "0")], "");
        assert_eq!(d.check_framing(), Ok(()));
        assert_eq!(d, respond(204, &[], ""));
        let err = respond(200, &[("Content-Length", "5")], "ok")
            .check_framing()
            .unwrap_err();
        assert!(err.contains("Content-Length: 5"), "{err}");
    }

    #[test]
    fn framing_headers_and_bodies_a_status_cannot_carry_are_refused() {
        for name in ["Transfer-Encoding", "Connection", "Upgrade", "Keep-Alive"] {
            assert!(respond(200, &[(name, "x")], "ok").check_framing().is_err());
        }
        assert!(respond(204, &[], "x").check_framing().is_err());
        assert!(respond(304, &[], "x").check_framing().is_err());
        assert!(respond(101, &[], "").check_framing().is_err());
        assert!(respond(600, &[], "").check_framing().is_err());
        assert_eq!(respond(403, &[("X-A", "1")], "").check_framing(), Ok(()));
        for which in [0, 1] {
            let op = HeaderOp {
                action: HeaderAction::Set,
                name: HeaderName::new("Transfer-Encoding").unwrap(),
                value: HeaderValue::new("chunked").unwrap(),
            };
            let mut changes = Changes::default();
            if which == 0 {
                changes.request_headers.push(op);
            } else {
                changes.response_headers.push(op);
            }
            let err = Decision::Continue(changes).check_framing().unwrap_err();
            assert!(err.contains("Transfer-Encoding"), "{err}");
        }
        assert_eq!(
            Decision::Continue(Changes::default()).check_framing(),
            Ok(())
        );
    }
}
