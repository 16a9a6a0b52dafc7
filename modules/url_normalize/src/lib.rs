//! url_normalize: the request path, from the bytes the client sent,
//! decoded exactly once, with `.` and `..` segments resolved and repeated
//! slashes merged; the modules after it see the result as the path.
//!
//! - an encoded NUL, CR or LF, or a `%` not followed by two hex digits,
//!   is answered with 400;
//! - `..` above the root is answered with 400;
//! - decoding happens once: `%252e%252e` becomes the literal `%2e%2e`,
//!   which is not a dot segment.
//!
//! The Lua legacy implementation is `lua/graft/legacy/url_normalize.lua`.
#![forbid(unsafe_code)]

use graft_contract::{
    parse_config, Changes, ConfigError, Configured, Context, Decision, Factory, Module,
    ModuleError, RequestView, Response,
};
use serde::Deserialize;

pub const NAME: &str = "url_normalize";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UrlNormalize {
    #[serde(default = "yes")]
    merge_slashes: bool,
}

fn yes() -> bool {
    true
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Why a path is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    BadEncoding,
    ControlByte,
    AboveRoot,
}

impl Refusal {
    fn text(&self) -> &'static str {
        match self {
            Refusal::BadEncoding => "invalid percent-encoding",
            Refusal::ControlByte => "encoded NUL, CR or LF",
            Refusal::AboveRoot => "\"..\" above the root",
        }
    }
}

/// Decodes `%XX` once.
pub fn decode_once(raw: &[u8]) -> Result<Vec<u8>, Refusal> {
    decode(raw, &[0, b'\r', b'\n'])
}

/// Decodes `%XX` once, refusing a decoded byte of `refused`.
fn decode(raw: &[u8], refused: &[u8]) -> Result<Vec<u8>, Refusal> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            let h = raw.get(i + 1).and_then(|&b| hex(b));
            let l = raw.get(i + 2).and_then(|&b| hex(b));
            let (Some(h), Some(l)) = (h, l) else {
                return Err(Refusal::BadEncoding);
            };
            out.push(h << 4 | l);
            i += 3;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    if out.iter().any(|b| refused.contains(b)) {
        return Err(Refusal::ControlByte);
    }
    Ok(out)
}

impl UrlNormalize {
    /// The normalized path of a raw request target (`/a/../b?x` → `/b`).
    pub fn normalize(&self, raw_uri: &[u8]) -> Result<Option<Vec<u8>>, Refusal> {
        self.resolve(raw_uri, &[0, b'\r', b'\n'])
    }

    /// nginx's own `$uri` of a raw request target: as [`normalize`]
    /// reads it, but for a decoded CR or LF, which nginx keeps (refusing
    /// them is this module's choice, not nginx's); an encoded NUL nginx
    /// refuses too.
    ///
    /// [`normalize`]: UrlNormalize::normalize
    pub fn nginx_uri(&self, raw_uri: &[u8]) -> Result<Option<Vec<u8>>, Refusal> {
        self.resolve(raw_uri, &[0])
    }

    fn resolve(&self, raw_uri: &[u8], refused: &[u8]) -> Result<Option<Vec<u8>>, Refusal> {
        let raw_path = raw_uri.split(|&b| b == b'?').next().unwrap_or_default();
        if raw_path.first() != Some(&b'/') {
            return Ok(None);
        }
        let decoded = decode(raw_path, refused)?;
        let segments: Vec<&[u8]> = decoded[1..].split(|&b| b == b'/').collect();
        let last = segments.len() - 1;
        let mut out: Vec<&[u8]> = Vec::with_capacity(segments.len());
        let mut trailing = false;
        for (i, seg) in segments.iter().enumerate() {
            match *seg {
                b"" if i == last => trailing = true,
                b"" if !self.merge_slashes => out.push(b""),
                b"" => {}
                b"." => trailing |= i == last,
                b".." => {
                    out.pop().ok_or(Refusal::AboveRoot)?;
                    trailing |= i == last;
                }
                s => out.push(s),
            }
        }
        let mut path = Vec::with_capacity(decoded.len());
        path.push(b'/');
        path.extend(out.join(&b'/'));
        if trailing && !out.is_empty() {
            path.push(b'/');
        }
        Ok(Some(path))
    }
}

impl Module for UrlNormalize {
    fn on_request(&self, req: &dyn RequestView, _ctx: &Context) -> Result<Decision, ModuleError> {
        match self.normalize(req.raw_uri()) {
            Ok(Some(path)) if path != req.path() => Ok(Decision::Continue(Changes {
                uri: Some(path),
                ..Changes::default()
            })),
            Ok(_) => Ok(Decision::Continue(Changes::default())),
            Err(refusal) => Ok(Decision::Respond(Response {
                status: 400,
                headers: Vec::new(),
                body: Vec::new(),
                log: vec![format!("bad path: {}", refusal.text())],
            })),
        }
    }
}

impl Configured for UrlNormalize {
    const NAME: &'static str = NAME;

    fn configure(config: &serde_json::Value) -> Result<Self, ConfigError> {
        parse_config::<UrlNormalize>(config)
    }
}

/// The registry's factory of this module.
pub static FACTORY: Factory<UrlNormalize> = Factory::new();

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn norm(raw: &str) -> Result<String, Refusal> {
        let n = UrlNormalize {
            merge_slashes: true,
        };
        n.normalize(raw.as_bytes())
            .map(|p| String::from_utf8_lossy(&p.unwrap()).into_owned())
    }

    #[test]
    fn resolves_and_decodes_once() {
        let cases = [
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/a//b///c", "/a/b/c"),
            ("/a/./b/../c", "/a/c"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("/a/", "/a/"),
            ("/%61%2Fb", "/a/b"),
            ("/a/%2e%2e/b", "/b"),
            ("/a/%252e%252e/b", "/a/%2e%2e/b"),
            ("/x?y=/../..", "/x"),
            ("/..a/b..", "/..a/b.."),
            ("/a+b", "/a+b"),
        ];
        for (raw, want) in cases {
            assert_eq!(norm(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn refuses_what_it_must() {
        assert_eq!(norm("/a%00b"), Err(Refusal::ControlByte));
        assert_eq!(norm("/a%0d%0aX"), Err(Refusal::ControlByte));
        let n = UrlNormalize {
            merge_slashes: true,
        };
        assert_eq!(n.nginx_uri(b"/a/%0d%0aX"), Ok(Some(b"/a/\r\nX".to_vec())));
        assert_eq!(n.nginx_uri(b"/a%00b"), Err(Refusal::ControlByte));
        assert_eq!(norm("/a%zz"), Err(Refusal::BadEncoding));
        assert_eq!(norm("/a%4"), Err(Refusal::BadEncoding));
        assert_eq!(norm("/.."), Err(Refusal::AboveRoot));
        assert_eq!(norm("/a/../../b"), Err(Refusal::AboveRoot));
    }

    #[test]
    fn keeps_empty_segments_when_told() {
        let n = UrlNormalize {
            merge_slashes: false,
        };
        assert_eq!(n.normalize(b"//a//b/").unwrap().unwrap(), b"//a//b/");
    }

    proptest! {
        /// Normalizing a normalized path changes nothing (unless it holds a
        /// literal `%`, which a second pass would decode: never done).
        #[test]
        fn is_idempotent(segs in prop::collection::vec("[a-z.]{0,3}|%2[eEfF]|%25", 0..8)) {
            let raw = format!("/{}", segs.join("/"));
            if let Ok(once) = norm(&raw) {
                if !once.contains('%') {
                    prop_assert_eq!(norm(&once), Ok(once.clone()));
                }
                prop_assert!(!once.contains("//"));
                prop_assert!(!once.split('/').any(|s| s == "." || s == ".."));
            }
        }
    }
}
