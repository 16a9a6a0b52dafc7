//! Header names and values that are safe to write: the only way to build a
//! decision's headers, so a CR, LF or NUL can never reach the wire.
use std::fmt;
use std::sync::Arc;

/// Why a header name or value was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidHeader {
    reason: &'static str,
}

impl fmt::Display for InvalidHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason)
    }
}

impl std::error::Error for InvalidHeader {}

/// A header name: an RFC 9110 token, at most 256 bytes. Shared, not
/// copied, when cloned: a module's configured headers go into every
/// request's decision without an allocation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HeaderName(Arc<str>);

/// A header value: no CR, LF, NUL or other control byte but tab, at most
/// 8 KiB. Shared, not copied, when cloned.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HeaderValue(Arc<[u8]>);

pub const MAX_HEADER_NAME: usize = 256;
pub const MAX_HEADER_VALUE: usize = 8192;

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl HeaderName {
    pub fn new(name: &str) -> Result<Self, InvalidHeader> {
        if name.is_empty() {
            return Err(InvalidHeader {
                reason: "header name is empty",
            });
        }
        if name.len() > MAX_HEADER_NAME {
            return Err(InvalidHeader {
                reason: "header name is longer than 256 bytes",
            });
        }
        if !name.bytes().all(is_token_byte) {
            return Err(InvalidHeader {
                reason: "header name has a character that is not allowed in a token",
            });
        }
        Ok(HeaderName(Arc::from(name)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl HeaderValue {
    pub fn new(value: impl Into<Vec<u8>>) -> Result<Self, InvalidHeader> {
        let value = value.into();
        if value.len() > MAX_HEADER_VALUE {
            return Err(InvalidHeader {
                reason: "header value is longer than 8192 bytes",
            });
        }
        if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(InvalidHeader {
                reason: "header value has a CR, LF, NUL or other control character",
            });
        }
        Ok(HeaderValue(Arc::from(value)))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl TryFrom<&str> for HeaderName {
    type Error = InvalidHeader;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        HeaderName::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn refuses_line_breaks_and_nul() {
        for bad in ["a\rb", "a\nb", "a\0b", "x\r\nSet-Cookie: y"] {
            assert!(HeaderValue::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(HeaderValue::new("a\tb c").is_ok());
    }

    #[test]
    fn names_are_tokens() {
        assert!(HeaderName::new("X-Graft").is_ok());
        for bad in ["", "X Graft", "X:Graft", "X\r\nY", "é"] {
            assert!(HeaderName::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    proptest! {
        #[test]
        fn an_accepted_value_never_holds_a_line_break(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(v) = HeaderValue::new(bytes) {
                prop_assert!(!v.as_bytes().iter().any(|b| matches!(b, b'\r' | b'\n' | 0)));
            }
        }

        #[test]
        fn an_accepted_name_is_a_token(s in "\\PC{0,20}") {
            if let Ok(n) = HeaderName::new(&s) {
                prop_assert!(n.as_str().bytes().all(is_token_byte));
            }
        }
    }
}
