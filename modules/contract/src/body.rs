//! Request bodies as modules read them: which decoding a body gets (by its
//! `Content-Type`), and the strings of a JSON body.
//!
//! A body reaches a module only in a zone that reads bodies (the zone's
//! `"body"` in graft's file), and at most that zone's `max_bytes` of it: a
//! longer body is cut there, so every decoder here takes a document cut
//! anywhere.
//!
//! JSON is not parsed into a tree but scanned for its strings: every string
//! (object keys and values) at any depth, in document order, with its
//! escapes decoded. A scanner needs no recursion (a body nested a million
//! deep costs what a flat one does), and it reads a broken or cut document
//! as far as it goes instead of giving up on it: a payload cannot hide
//! from the WAF behind a syntax error that a lenient backend forgives. The
//! Lua twin is `lua/graft/body.lua`, the same rules byte for byte.
//!
//! A compressed body is undecidable ([`undecidable`]) unless its module
//! opts in to bounded decompression ([`decode`]): then its one coding
//! (gzip, deflate, br) is decoded within a limit of bytes and of ratio,
//! and the Content-Type rules still hold ([`undecidable_type`]).

pub mod decode;

/// How a body is decoded, by the request's `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// `application/x-www-form-urlencoded`: arguments, as a query string.
    Form,
    /// `application/json`, or any `<type>/<subtype>+json`: its strings.
    Json,
    /// Anything else: the raw bytes only.
    Other,
}

impl BodyKind {
    /// The decoding for a `Content-Type` value (its media type compared
    /// without regard to case, parameters ignored).
    pub fn of(content_type: Option<&[u8]>) -> BodyKind {
        let Some(ct) = content_type else {
            return BodyKind::Other;
        };
        let media = ct.split(|&b| b == b';').next().unwrap_or_default();
        let media = media.trim_ascii().to_ascii_lowercase();
        if media == b"application/x-www-form-urlencoded" {
            BodyKind::Form
        } else if media == b"application/json"
            || (media.ends_with(b"+json") && media.contains(&b'/'))
        {
            BodyKind::Json
        } else {
            BodyKind::Other
        }
    }
}

/// Why graft cannot read a request's body the way a common backend (PHP,
/// Express, Django, a Java container) may, or `None`. A module that reads
/// bodies treats such a body as undecidable: its step fails, and the
/// step's failure policy answers (an access control's is to refuse),
/// counted and logged, rather than let through a payload it did not see.
///
/// - a `Content-Encoding` other than `identity` (a compressed body a
///   backend may inflate; a module that opts in to [`decode`] checks
///   [`undecidable_type`] instead, and decodes it);
/// - more than one `Content-Type`, or one that is not a single media type
///   (`type/subtype`) with `name=value` parameters, each named once;
/// - a `charset` that is not ASCII-compatible (UTF-16, UTF-32, UTF-7,
///   EBCDIC...): the bytes graft matches are not the text a backend reads.
pub fn undecidable(req: &dyn crate::RequestView) -> Option<String> {
    let mut encoding = None;
    req.for_each_header(&mut |name, value| {
        let name = name.trim_ascii();
        if name.eq_ignore_ascii_case(b"content-encoding") {
            let v = value.trim_ascii();
            if !v.is_empty() && !v.eq_ignore_ascii_case(b"identity") && encoding.is_none() {
                encoding = Some(String::from_utf8_lossy(v).into_owned());
            }
        }
        std::ops::ControlFlow::Continue(())
    });
    if let Some(e) = encoding {
        return Some(format!(
            "its Content-Encoding is \"{e}\": graft reads no compressed body"
        ));
    }
    undecidable_type(req)
}

/// Why graft cannot read a request's body as a backend may, its
/// `Content-Encoding` left out: [`undecidable`]'s rules on the
/// `Content-Type` and its `charset`, for a body decoded by [`decode`].
pub fn undecidable_type(req: &dyn crate::RequestView) -> Option<String> {
    let mut content_types = Vec::new();
    req.for_each_header(&mut |name, value| {
        if name.trim_ascii().eq_ignore_ascii_case(b"content-type") {
            content_types.push(value.trim_ascii().to_vec());
        }
        std::ops::ControlFlow::Continue(())
    });
    match content_types.as_slice() {
        // An empty one says no more than none: the raw bytes are read.
        [] => None,
        [one] if one.is_empty() => None,
        [one] => content_type_undecidable(one),
        many => Some(format!("it has {} Content-Type headers", many.len())),
    }
}

fn is_token(s: &[u8]) -> bool {
    !s.is_empty()
        && s.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Charsets whose bytes below 0x80 are ASCII: what graft matches is what
/// a backend decodes.
fn ascii_compatible(charset: &[u8]) -> bool {
    let c = charset.to_ascii_lowercase();
    let c = c.as_slice();
    matches!(
        c,
        b"utf-8" | b"utf8" | b"us-ascii" | b"ascii" | b"latin1" | b"iso-8859-1"
    ) || c
        .strip_prefix(b"iso-8859-")
        .is_some_and(|n| (1..=2).contains(&n.len()) && n.iter().all(u8::is_ascii_digit))
        || c.strip_prefix(b"windows-125")
            .is_some_and(|n| n.len() == 1 && n[0].is_ascii_digit())
}

fn content_type_undecidable(ct: &[u8]) -> Option<String> {
    let shown = || String::from_utf8_lossy(ct).into_owned();
    let mut parts = ct.split(|&b| b == b';');
    let media = parts.next().unwrap_or_default().trim_ascii();
    let one_media_type = media
        .iter()
        .position(|&b| b == b'/')
        .is_some_and(|i| is_token(&media[..i]) && is_token(&media[i + 1..]));
    if !one_media_type {
        return Some(format!(
            "its Content-Type \"{}\" is not one media type",
            shown()
        ));
    }
    let mut names: Vec<Vec<u8>> = Vec::new();
    for param in parts {
        let param = param.trim_ascii();
        if param.is_empty() {
            continue;
        }
        let Some(eq) = param.iter().position(|&b| b == b'=') else {
            return Some(format!(
                "its Content-Type \"{}\" has a parameter with no value",
                shown()
            ));
        };
        let name = param[..eq].trim_ascii().to_ascii_lowercase();
        let raw = param[eq + 1..].trim_ascii();
        let value = match raw.strip_prefix(b"\"") {
            Some(rest) => match rest.strip_suffix(b"\"") {
                Some(inner) if !inner.contains(&b'"') && !inner.contains(&b'\\') => inner,
                _ => {
                    return Some(format!(
                        "its Content-Type \"{}\" has a quoted parameter graft does not read alike",
                        shown()
                    ))
                }
            },
            None if is_token(raw) => raw,
            None => {
                return Some(format!(
                    "its Content-Type \"{}\" has a parameter value that is not a token",
                    shown()
                ))
            }
        };
        if !is_token(&name) || names.contains(&name) {
            return Some(format!(
                "its Content-Type \"{}\" names a parameter twice, or one that is not a token",
                shown()
            ));
        }
        if name == b"charset" && !ascii_compatible(value) {
            return Some(format!(
                "its charset \"{}\" is not ASCII-compatible",
                String::from_utf8_lossy(value)
            ));
        }
        names.push(name);
    }
    None
}

fn hex4(b: &[u8]) -> Option<u32> {
    if b.len() < 4 {
        return None;
    }
    let mut v = 0u32;
    for &c in &b[..4] {
        v = v * 16 + (c as char).to_digit(16)?;
    }
    Some(v)
}

fn push_char(out: &mut Vec<u8>, c: u32) {
    let c = char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER);
    let mut buf = [0u8; 4];
    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
}

/// Calls `f` with every string of a JSON document, in order, decoded:
///
/// - a string starts at a `"` outside any string and ends at the next `"`
///   not escaped; a string the document ends inside (a cut body) is given
///   as far as it goes;
/// - `\"`, `\\`, `\/`, `\b`, `\f`, `\n`, `\r`, `\t` are their characters;
///   `\uXXXX` is that code point in UTF-8, a high and a low surrogate
///   escaped one after the other are one code point, and a surrogate
///   alone is U+FFFD; `\` before any other byte (or a `\u` without four
///   hex digits) is that byte itself (the `u` for `\u`);
/// - other bytes are copied as they are, valid UTF-8 or not.
pub fn for_each_json_string(body: &[u8], mut f: impl FnMut(&[u8])) {
    let mut out = Vec::new();
    let mut i = 0;
    while i < body.len() {
        if body[i] != b'"' {
            i += 1;
            continue;
        }
        i += 1;
        out.clear();
        while i < body.len() {
            match body[i] {
                b'"' => {
                    i += 1;
                    break;
                }
                b'\\' if i + 1 < body.len() => {
                    let e = body[i + 1];
                    i += 2;
                    match e {
                        b'b' => out.push(0x08),
                        b'f' => out.push(0x0c),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'u' => match hex4(&body[i..]) {
                            Some(hi @ 0xD800..=0xDBFF) => {
                                i += 4;
                                let lo = (body.get(i) == Some(&b'\\')
                                    && body.get(i + 1) == Some(&b'u'))
                                .then(|| hex4(&body[i + 2..]))
                                .flatten()
                                .filter(|lo| (0xDC00..=0xDFFF).contains(lo));
                                match lo {
                                    Some(lo) => {
                                        i += 6;
                                        push_char(
                                            &mut out,
                                            0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00),
                                        );
                                    }
                                    None => push_char(&mut out, 0xFFFD),
                                }
                            }
                            Some(c) => {
                                i += 4;
                                push_char(&mut out, c);
                            }
                            None => out.push(b'u'),
                        },
                        other => out.push(other),
                    }
                }
                // A lone `\` at the very end of a cut document.
                b'\\' => i += 1,
                b => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        f(&out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(body: &str) -> Vec<String> {
        let mut v = Vec::new();
        for_each_json_string(body.as_bytes(), |s| {
            v.push(String::from_utf8_lossy(s).into_owned())
        });
        v
    }

    #[test]
    fn kinds_by_content_type() {
        for (ct, kind) in [
            ("application/x-www-form-urlencoded", BodyKind::Form),
            (
                "Application/X-WWW-Form-Urlencoded; charset=UTF-8",
                BodyKind::Form,
            ),
            ("application/json", BodyKind::Json),
            (" application/json ;charset=utf-8", BodyKind::Json),
            ("application/merge-patch+json", BodyKind::Json),
            ("+json", BodyKind::Other),
            ("multipart/form-data; boundary=x", BodyKind::Other),
            ("text/plain", BodyKind::Other),
        ] {
            assert_eq!(BodyKind::of(Some(ct.as_bytes())), kind, "{ct}");
        }
        assert_eq!(BodyKind::of(None), BodyKind::Other);
    }

    #[test]
    fn every_string_at_every_depth_keys_included_escapes_decoded() {
        assert_eq!(
            strings(
                r#"{"q":"1' UNION SELECT","n":[1,{"deep":["a\"b\\c\/d\n"]}],"e":"\u00e9\ud83d\ude00"}"#
            ),
            [
                "q",
                "1' UNION SELECT",
                "n",
                "deep",
                "a\"b\\c/d\n",
                "e",
                "é😀"
            ]
        );
    }

    #[test]
    fn broken_and_cut_documents_are_read_as_far_as_they_go() {
        assert_eq!(strings(r#"{"a":"b" garbage "c"#), ["a", "b", "c"]);
        assert_eq!(strings(r#"["x\"#), ["x"]);
        assert_eq!(
            strings(r#"["\ud800x", "\u12", "\q"]"#),
            ["\u{fffd}x", "u12", "q"]
        );
        assert_eq!(strings(r#"["\ud800\u0041"]"#), ["\u{fffd}A"]);
        assert!(strings("no strings: 1, 2, [3]").is_empty());
    }

    #[test]
    fn nesting_costs_no_stack() {
        let deep = "[".repeat(1_000_000) + "\"x\"" + &"]".repeat(1_000_000);
        assert_eq!(strings(&deep), ["x"]);
    }
}

#[cfg(test)]
mod undecidable_tests {
    use super::undecidable;
    use crate::OwnedRequest;

    fn with(headers: &[(&str, &str)]) -> Option<String> {
        let mut req = OwnedRequest::get("a.test", "/");
        for (n, v) in headers {
            req.headers
                .push((n.as_bytes().to_vec(), v.as_bytes().to_vec()));
        }
        undecidable(&req)
    }

    #[test]
    fn a_body_graft_cannot_read_as_a_backend_may_is_undecidable() {
        for ok in [
            vec![],
            vec![("Content-Type", "application/json")],
            vec![(
                "Content-Type",
                "application/x-www-form-urlencoded; charset=UTF-8",
            )],
            vec![("Content-Type", "multipart/form-data; boundary=\"--x\"")],
            vec![("Content-Type", "text/plain;charset=iso-8859-15;")],
            vec![
                ("Content-Encoding", "identity"),
                ("Content-Type", "application/json"),
            ],
        ] {
            assert_eq!(with(&ok), None, "{ok:?}");
        }
        for bad in [
            vec![("Content-Encoding", "gzip")],
            vec![
                ("Content-Encoding", "br"),
                ("Content-Type", "application/json"),
            ],
            vec![
                ("Content-Type", "application/json"),
                ("Content-Type", "text/plain"),
            ],
            vec![("Content-Type", "application/json, text/plain")],
            vec![("Content-Type", "application/json; charset=utf-16")],
            vec![("Content-Type", "application/json; charset=UTF-7")],
            vec![("Content-Type", "text/plain; charset=ibm037")],
            vec![(
                "Content-Type",
                "application/json; charset=utf-8; charset=utf-16",
            )],
            vec![(
                "Content-Type",
                "multipart/form-data; boundary=a; boundary=b",
            )],
            vec![("Content-Type", "multipart/form-data; boundary")],
            vec![(
                "Content-Type",
                "application/x-www-form-urlencoded; charset=\"utf-8",
            )],
            vec![("Content-Type", "json")],
            vec![("Content-Type", "application /json")],
        ] {
            assert!(with(&bad).is_some(), "{bad:?} read as decidable");
        }
    }
}
