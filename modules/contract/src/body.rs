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
