//! The hand-off from graft-edge to FL1 (nginx with graft and Lua): the
//! `Graft-Edge` request header graft-edge sends with a request it passes
//! to FL1, and FL1's judgement of it.
//!
//! ```text
//! Graft-Edge: from=2; zone=shop.example; key=<the shared key>
//! ```
//!
//! `from` is the first step FL1 runs: graft-edge ran (and counted) the
//! steps before it, so FL1 passes them, and a rate limit counts a request
//! once. The key is a secret both servers read from a file
//! (`graft_edge_key` in nginx, `fl1_key_file` in graft-edge's settings):
//! a client cannot forge the header, and graft-edge removes any copy a
//! client sent. A header FL1 cannot accept (no key configured, malformed,
//! another key) gains nothing: FL1 runs every step, counts and logs it.

/// The header's name.
pub const HEADER: &str = "Graft-Edge";

/// A hand-off FL1 accepted.
#[derive(Debug, PartialEq, Eq)]
pub struct HandOff<'a> {
    /// The zone graft-edge ran, by name.
    pub zone: &'a str,
    /// The first step FL1 runs.
    pub from: usize,
}

/// Why FL1 did not accept a `Graft-Edge` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// This server has no `graft_edge_key`.
    NoKey = 0,
    /// Not `from=N; zone=NAME; key=KEY`.
    Malformed = 1,
    /// Another key.
    Key = 2,
}

impl Refusal {
    pub const ALL: [Refusal; 3] = [Refusal::NoKey, Refusal::Malformed, Refusal::Key];

    /// The metric's label.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::NoKey => "no_key",
            Refusal::Malformed => "malformed",
            Refusal::Key => "key",
        }
    }
}

/// The header's value for a request passed to FL1 at step `from` of
/// `zone`. `None` for a zone name the header cannot carry (a `;`, a
/// control byte).
pub fn header_value(zone: &str, from: usize, key: &[u8]) -> Option<String> {
    if zone.bytes().any(|b| b == b';' || !b.is_ascii_graphic()) {
        return None;
    }
    Some(format!(
        "from={from}; zone={zone}; key={}",
        String::from_utf8_lossy(key)
    ))
}

/// Judges a `Graft-Edge` header's value with `key` the one this server
/// holds (`None`: it holds none). The key is compared in constant time.
pub fn judge<'v>(value: &'v [u8], key: Option<&[u8]>) -> Result<HandOff<'v>, Refusal> {
    let key = key.ok_or(Refusal::NoKey)?;
    let (mut from, mut zone, mut given) = (None, None, None);
    for part in value.split(|&b| b == b';') {
        let part = part.trim_ascii();
        let Some(eq) = part.iter().position(|&b| b == b'=') else {
            return Err(Refusal::Malformed);
        };
        let (name, v) = (&part[..eq], &part[eq + 1..]);
        let slot = match name {
            b"from" => &mut from,
            b"zone" => &mut zone,
            b"key" => &mut given,
            _ => return Err(Refusal::Malformed),
        };
        if slot.replace(v).is_some() {
            return Err(Refusal::Malformed);
        }
    }
    let (Some(from), Some(zone), Some(given)) = (from, zone, given) else {
        return Err(Refusal::Malformed);
    };
    if !crate::admin::equal_in_constant_time(given, key) {
        return Err(Refusal::Key);
    }
    let from = std::str::from_utf8(from)
        .ok()
        .filter(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|f| f.parse().ok())
        .ok_or(Refusal::Malformed)?;
    let zone = std::str::from_utf8(zone)
        .ok()
        .filter(|z| !z.is_empty())
        .ok_or(Refusal::Malformed)?;
    Ok(HandOff { zone, from })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn what_graft_edge_writes_fl1_accepts() {
        let v = header_value("shop.example", 2, KEY).unwrap();
        assert_eq!(
            judge(v.as_bytes(), Some(KEY)),
            Ok(HandOff {
                zone: "shop.example",
                from: 2
            })
        );
        assert_eq!(header_value("a;b", 0, KEY), None);
    }

    #[test]
    fn a_forged_or_broken_header_gains_nothing() {
        let v = header_value("*", 3, KEY).unwrap();
        assert_eq!(judge(v.as_bytes(), None), Err(Refusal::NoKey));
        assert_eq!(
            judge(v.as_bytes(), Some(b"another key, just as long as it..")),
            Err(Refusal::Key)
        );
        for bad in [
            &b""[..],
            b"from=1; zone=a",
            b"from=1; zone=a; key=k; key=k",
            b"from=-1; zone=a; key=0123456789abcdef0123456789abcdef",
            b"from=1; zone=; key=0123456789abcdef0123456789abcdef",
            b"from=1; zone=a; key=0123456789abcdef0123456789abcdef; x=1",
            b"from=99999999999999999999999; zone=a; key=0123456789abcdef0123456789abcdef",
        ] {
            assert!(
                judge(bad, Some(KEY)).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
