//! The hand-off from graft-edge to FL1 (nginx with graft and Lua): the
//! `Graft-Edge` request header graft-edge sends with a request it passes
//! to FL1, and FL1's judgement of it.
//!
//! ```text
//! Graft-Edge: v=2; from=2; zone=shop.example; config=1a2b3c4d5e6f7a8b; fallback=0; t=1765000000; mac=<64 hex digits>
//! ```
//!
//! - `from` is the first step FL1 runs: graft-edge ran (and counted) the
//!   steps before it, so FL1 passes them, and a rate limit counts a
//!   request once.
//! - `fallback=1`: graft-edge asked step `from`'s Rust side and it did not
//!   decide (declined, failed, panicked): FL1 serves that step from Lua
//!   without asking Rust again.
//! - `config` names the configuration graft-edge ran (its hash, as
//!   `graft_configuration_info` shows it): FL1 accepts the hand-off only
//!   when it serves the same one, since steps are named by their place.
//! - `t` is when graft-edge sent it; FL1 accepts it for [`MAX_AGE`]
//!   seconds either way.
//! - `mac` is HMAC-SHA-256 with the key both servers read from a file
//!   (`graft_edge_key` in nginx, `fl1_key_file` in graft-edge's settings)
//!   over every field and the request's method and target: a client
//!   cannot forge the header, and a header seen once cannot be used for
//!   another request or later. graft-edge removes any copy a client sent.
//!
//! A header FL1 cannot accept gains nothing: FL1 runs every step (a step
//! may count twice; none is skipped), counts and logs it.
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header's name.
pub const HEADER: &str = "Graft-Edge";

/// How far from FL1's clock a hand-off's time may be, in seconds.
pub const MAX_AGE: u64 = 60;

/// What graft-edge says of a request it passes to FL1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandOff<'a> {
    /// The zone graft-edge ran, by name.
    pub zone: &'a str,
    /// The first step FL1 runs.
    pub from: usize,
    /// Step `from`'s Rust side did not decide on graft-edge.
    pub fallback: bool,
    /// The hash of the configuration graft-edge ran.
    pub config: &'a str,
    /// When graft-edge sent it, in seconds since the epoch.
    pub time: u64,
}

/// The request a hand-off is for: its method and target as FL1 receives
/// them (the request line's).
#[derive(Debug, Clone, Copy)]
pub struct Bound<'a> {
    pub method: &'a [u8],
    pub target: &'a [u8],
}

/// Why FL1 did not accept a `Graft-Edge` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// This server has no `graft_edge_key`.
    NoKey = 0,
    /// Not the header's form, or two of them.
    Malformed = 1,
    /// Its MAC is not the key's for this request.
    Key = 2,
    /// Sent longer ago (or later) than `MAX_AGE`.
    Stale = 3,
    /// graft-edge ran another configuration than this server serves.
    Config = 4,
}

impl Refusal {
    pub const ALL: [Refusal; 5] = [
        Refusal::NoKey,
        Refusal::Malformed,
        Refusal::Key,
        Refusal::Stale,
        Refusal::Config,
    ];

    /// The metric's label.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::NoKey => "no_key",
            Refusal::Malformed => "malformed",
            Refusal::Key => "key",
            Refusal::Stale => "stale",
            Refusal::Config => "config",
        }
    }
}

/// Whether a key can sign hand-offs: what the header carries and the
/// admin token's rules (`admin::parse_token`) allow.
pub fn check_key(key: &[u8]) -> Result<(), String> {
    crate::admin::parse_token(key).map(|_| ())
}

fn fields(h: &HandOff<'_>) -> String {
    format!(
        "v=2; from={}; zone={}; config={}; fallback={}; t={}",
        h.from,
        h.zone,
        h.config,
        u8::from(h.fallback),
        h.time
    )
}

fn mac(key: &[u8], fields: &str, req: Bound<'_>) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    for part in [fields.as_bytes(), req.method, req.target] {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
    mac
}

/// The header's value for request `req` passed to FL1 as `h` says.
/// `None` for a zone name or configuration hash the header cannot carry
/// (a `;`, a space or a control byte).
pub fn header_value(h: &HandOff<'_>, req: Bound<'_>, key: &[u8]) -> Option<String> {
    let plain = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && b != b';');
    if !plain(h.zone) || !plain(h.config) {
        return None;
    }
    let fields = fields(h);
    let tag = mac(key, &fields, req).finalize().into_bytes();
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    Some(format!("{fields}; mac={hex}"))
}

/// Judges a `Graft-Edge` header's value for request `req`, with `key`
/// the one this server holds (`None`: it holds none), `config` the hash of
/// the configuration it serves and `now` its clock. The MAC is checked in
/// constant time, before anything it covers is believed.
pub fn judge<'v>(
    value: &'v [u8],
    req: Bound<'_>,
    key: Option<&[u8]>,
    config: &str,
    now: u64,
) -> Result<HandOff<'v>, Refusal> {
    let key = key.ok_or(Refusal::NoKey)?;
    let value = std::str::from_utf8(value).map_err(|_| Refusal::Malformed)?;
    let (signed, tag) = value.rsplit_once("; mac=").ok_or(Refusal::Malformed)?;
    let tag = hex_bytes(tag).ok_or(Refusal::Malformed)?;
    if mac(key, signed, req).verify_slice(&tag).is_err() {
        return Err(Refusal::Key);
    }
    let h = parse(signed).ok_or(Refusal::Malformed)?;
    if h.time.abs_diff(now) > MAX_AGE {
        return Err(Refusal::Stale);
    }
    if h.config != config {
        return Err(Refusal::Config);
    }
    Ok(h)
}

fn hex_bytes(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 {
        return None;
    }
    (0..64)
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The signed fields, in the order `fields` writes them.
fn parse(signed: &str) -> Option<HandOff<'_>> {
    let mut parts = signed.split("; ");
    let mut next = |name: &str| parts.next()?.strip_prefix(name)?.strip_prefix('=');
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    if next("v")? != "2" {
        return None;
    }
    let from = number(next("from")?)?;
    let zone = next("zone")?;
    let config = next("config")?;
    let fallback = match next("fallback")? {
        "0" => false,
        "1" => true,
        _ => return None,
    };
    let time = number(next("t")?)?;
    let h = HandOff {
        zone,
        from: usize::try_from(from).ok()?,
        fallback,
        config,
        time,
    };
    // Exactly what graft-edge writes, nothing after.
    (fields(&h) == signed).then_some(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
    const REQ: Bound<'static> = Bound {
        method: b"GET",
        target: b"/shop?x=1",
    };

    fn pass(from: usize, fallback: bool) -> HandOff<'static> {
        HandOff {
            zone: "shop.example",
            from,
            fallback,
            config: "1a2b3c4d5e6f7a8b",
            time: 1_000_000,
        }
    }

    #[test]
    fn what_graft_edge_writes_fl1_accepts() {
        for fallback in [false, true] {
            let v = header_value(&pass(2, fallback), REQ, KEY).unwrap();
            assert_eq!(
                judge(v.as_bytes(), REQ, Some(KEY), "1a2b3c4d5e6f7a8b", 1_000_030),
                Ok(pass(2, fallback))
            );
        }
        let mut bad = pass(0, false);
        bad.zone = "a;b";
        assert_eq!(header_value(&bad, REQ, KEY), None);
    }

    #[test]
    fn a_forged_replayed_stale_or_broken_header_gains_nothing() {
        let v = header_value(&pass(3, false), REQ, KEY).unwrap();
        fn judged(
            v: &[u8],
            req: Bound<'_>,
            key: Option<&[u8]>,
            config: &str,
            now: u64,
        ) -> Result<usize, &'static str> {
            judge(v, req, key, config, now)
                .map(|h| h.from)
                .map_err(Refusal::reason)
        }
        let ok = |v: &[u8]| judged(v, REQ, Some(KEY), "1a2b3c4d5e6f7a8b", 1_000_000);
        assert_eq!(
            judged(v.as_bytes(), REQ, None, "1a2b3c4d5e6f7a8b", 1_000_000),
            Err("no_key")
        );
        let other_key = b"another key, just as long as it..";
        assert_eq!(
            judged(
                v.as_bytes(),
                REQ,
                Some(other_key),
                "1a2b3c4d5e6f7a8b",
                1_000_000
            ),
            Err("key")
        );
        // Another request: the MAC covers its method and target.
        for other in [
            Bound {
                method: b"POST",
                target: b"/shop?x=1",
            },
            Bound {
                method: b"GET",
                target: b"/admin",
            },
        ] {
            assert_eq!(
                judged(
                    v.as_bytes(),
                    other,
                    Some(KEY),
                    "1a2b3c4d5e6f7a8b",
                    1_000_000
                ),
                Err("key")
            );
        }
        assert_eq!(
            judged(
                v.as_bytes(),
                REQ,
                Some(KEY),
                "1a2b3c4d5e6f7a8b",
                1_000_000 + MAX_AGE + 1
            ),
            Err("stale")
        );
        assert_eq!(
            judged(v.as_bytes(), REQ, Some(KEY), "ffffffffffffffff", 1_000_000),
            Err("config")
        );
        // A field changed after signing: the MAC no longer holds.
        let more = v.replace("from=3", "from=9");
        assert_eq!(ok(more.as_bytes()), Err("key"));
        for broken in [
            "",
            "from=1; zone=a",
            "v=2; from=1; zone=a; config=c; fallback=0; t=1; mac=zz",
            &v[..v.len() - 2],
        ] {
            assert_eq!(ok(broken.as_bytes()), Err("malformed"), "{broken}");
        }
    }
}
