//! Who may use the admin API. It can switch every control off (an apply of
//! `{"zones":{}}`), so a loopback listener is not enough: any local user,
//! a web page open on the host (a no-cors POST to 127.0.0.1) or a
//! server-side request forgery in an application on the host reaches it.
//! A call is refused unless, in this order:
//!
//! 1. the admin API is open at all: nginx names a token file
//!    (`graft_admin_token`); without one every call is refused;
//! 2. it carries no mark of a browser (`Origin`, `Sec-Fetch-*`, or a body
//!    type a page can send without asking: a form, `text/plain`);
//! 3. its `Host` is a loopback name (`localhost`, `127.0.0.1`, `[::1]`,
//!    any port), so a page on another name rebound to 127.0.0.1 fails;
//! 4. it carries the token: `Authorization: Bearer <token>`, compared in
//!    constant time.
//!
//! Every refusal is counted by reason (`graft_admin_refused_total`) and
//! logged by the caller.

/// Why a call to the admin API was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `graft_admin_token` in nginx's configuration.
    Closed = 0,
    /// A browser's request (`Origin`, `Sec-Fetch-*`, a form's body type).
    Browser = 1,
    /// A `Host` that is not a loopback name.
    Host = 2,
    /// No token, or another one.
    Token = 3,
}

impl Refusal {
    pub const ALL: [Refusal; 4] = [
        Refusal::Closed,
        Refusal::Browser,
        Refusal::Host,
        Refusal::Token,
    ];

    /// The metric's label.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Closed => "closed",
            Refusal::Browser => "browser",
            Refusal::Host => "host",
            Refusal::Token => "token",
        }
    }

    /// The status the call is answered with.
    pub fn status(self) -> u16 {
        match self {
            Refusal::Token => 401,
            _ => 403,
        }
    }

    /// What the error log says.
    pub fn why(self) -> &'static str {
        match self {
            Refusal::Closed => "the admin API is closed: nginx names no graft_admin_token file",
            Refusal::Browser => {
                "a browser's request (Origin, Sec-Fetch-*, or a form's body type): refused"
            }
            Refusal::Host => "its Host is not a loopback name (localhost, 127.0.0.1, [::1])",
            Refusal::Token => "no admin token, or a wrong one (Authorization: Bearer <token>)",
        }
    }
}

/// What the admin API's guard reads of a call.
#[derive(Debug, Default, Clone, Copy)]
pub struct Call<'a> {
    pub host: Option<&'a [u8]>,
    /// Whether it has an `Origin` header, or any `Sec-Fetch-*` one.
    pub browser_headers: bool,
    pub content_type: Option<&'a [u8]>,
    pub authorization: Option<&'a [u8]>,
}

/// The shortest token `graft_admin_token` accepts.
pub const MIN_TOKEN: usize = 32;

/// Checks a token file's text: the token (trimmed), or why not.
pub fn parse_token(text: &[u8]) -> Result<Vec<u8>, String> {
    let token = text.trim_ascii();
    if token.len() < MIN_TOKEN {
        return Err(format!(
            "the token is {} bytes, under {MIN_TOKEN} (make one with: head -c 32 /dev/urandom | base64)",
            token.len()
        ));
    }
    if !token.iter().all(|b| b.is_ascii_graphic()) {
        return Err("the token has a byte that is not printable ASCII".into());
    }
    Ok(token.to_vec())
}

/// Whether the call may use the admin API, with `token` the one nginx's
/// configuration names (`None`: the admin API is closed).
pub fn judge(token: Option<&[u8]>, call: &Call) -> Result<(), Refusal> {
    let Some(token) = token else {
        return Err(Refusal::Closed);
    };
    if call.browser_headers || call.content_type.is_some_and(is_simple_form_type) {
        return Err(Refusal::Browser);
    }
    if !call.host.is_some_and(is_loopback_host) {
        return Err(Refusal::Host);
    }
    let sent = call
        .authorization
        .and_then(|a| strip_prefix_ignore_case(a.trim_ascii(), b"bearer "))
        .map(<[u8]>::trim_ascii);
    match sent {
        Some(sent) if equal_in_constant_time(sent, token) => Ok(()),
        _ => Err(Refusal::Token),
    }
}

/// The body types a web page may send to another origin without a
/// preflight (the Fetch standard's CORS-safelisted ones).
fn is_simple_form_type(content_type: &[u8]) -> bool {
    let essence = content_type
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    [
        b"application/x-www-form-urlencoded".as_slice(),
        b"multipart/form-data",
        b"text/plain",
    ]
    .iter()
    .any(|t| essence.eq_ignore_ascii_case(t))
}

fn is_loopback_host(host: &[u8]) -> bool {
    let host = host.trim_ascii();
    let name = match host.strip_prefix(b"[") {
        // [::1] or [::1]:port
        Some(rest) => match rest.iter().position(|&b| b == b']') {
            Some(end) if rest[end + 1..].is_empty() || is_port(&rest[end + 1..]) => &rest[..end],
            _ => return false,
        },
        None => match host.iter().position(|&b| b == b':') {
            Some(colon) if is_port(&host[colon..]) => &host[..colon],
            Some(_) => return false,
            None => host,
        },
    };
    [b"localhost".as_slice(), b"127.0.0.1", b"::1"]
        .iter()
        .any(|l| name.eq_ignore_ascii_case(l))
}

/// `:` and 1 to 5 digits.
fn is_port(text: &[u8]) -> bool {
    text.strip_prefix(b":")
        .is_some_and(|d| (1..=5).contains(&d.len()) && d.iter().all(u8::is_ascii_digit))
}

fn strip_prefix_ignore_case<'a>(text: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// Equal bytes, in a time that depends on the lengths only.
pub(crate) fn equal_in_constant_time(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn call<'a>(host: &'a str, auth: &'a str) -> Call<'a> {
        Call {
            host: Some(host.as_bytes()),
            browser_headers: false,
            content_type: None,
            authorization: Some(auth.as_bytes()),
        }
    }

    #[test]
    fn only_a_loopback_call_with_the_token_and_no_browser_mark_passes() {
        let bearer = format!("Bearer {}", std::str::from_utf8(TOKEN).unwrap());
        for host in [
            "localhost",
            "127.0.0.1:8081",
            "[::1]",
            "[::1]:8081",
            "LOCALHOST",
        ] {
            assert_eq!(judge(Some(TOKEN), &call(host, &bearer)), Ok(()), "{host}");
        }
        assert_eq!(
            judge(None, &call("localhost", &bearer)),
            Err(Refusal::Closed)
        );
        for host in [
            "evil.example",
            "127.0.0.1.evil.example",
            "localhost:x",
            "[::1]x",
            "",
        ] {
            assert_eq!(
                judge(Some(TOKEN), &call(host, &bearer)),
                Err(Refusal::Host),
                "{host}"
            );
        }
        for auth in [
            "",
            "Bearer",
            "Bearer 0123",
            "Basic abc",
            &bearer[..bearer.len() - 1],
        ] {
            assert_eq!(
                judge(Some(TOKEN), &call("localhost", auth)),
                Err(Refusal::Token),
                "{auth}"
            );
        }
        let mut browser = call("localhost", &bearer);
        browser.browser_headers = true;
        assert_eq!(judge(Some(TOKEN), &browser), Err(Refusal::Browser));
        for ct in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "Multipart/Form-Data; boundary=x",
            "text/plain;charset=UTF-8",
        ] {
            let mut c = call("localhost", &bearer);
            c.content_type = Some(ct.as_bytes());
            assert_eq!(judge(Some(TOKEN), &c), Err(Refusal::Browser), "{ct}");
        }
        let mut json = call("localhost", &bearer);
        json.content_type = Some(b"application/json");
        assert_eq!(judge(Some(TOKEN), &json), Ok(()));
    }

    #[test]
    fn a_token_file_holds_one_long_printable_token() {
        assert_eq!(
            parse_token(b"  abcdefghijklmnopqrstuvwxyz0123456789\n")
                .unwrap()
                .len(),
            36
        );
        assert!(parse_token(b"short\n").unwrap_err().contains("under 32"));
        assert!(parse_token(b"abcdefghijklmnopqrstuvwxyz01234 56789").is_err());
    }
}
