//! What of a pair of responses is compared, and how a difference is shown.
use crate::corpus::CorpusRequest;
use crate::replay::Observed;
use crate::Response;

/// Response headers not compared, and why. Nothing else is left out: a
/// header one front sends and the other does not is a difference.
///
/// - `Date`: the second the response was made.
/// - `Server`: the software that made it (nginx, or graft-edge); FL2 is
///   another server by design. For the same reason the one line of an
///   error page that names the server (`<hr><center>nginx/1.22.1</center>`)
///   is compared with the name taken out; the status, the title and the
///   rest of the page are compared.
/// - `Connection`, `Keep-Alive`, `Transfer-Encoding`, `Content-Length`:
///   how the body is framed on the client's connection, each front's own
///   choice (nginx sends chunked what it did not read whole; graft-edge
///   keeps an origin's framing). Bodies are compared once de-chunked, and
///   a `Content-Length` must match the body it came with (checked, shown
///   as a difference when it does not), but in a response that has no
///   body (to a HEAD; a 1xx, 204 or 304), where it tells the length a GET
///   would get.
///
/// `Retry-After` is compared present or absent, its value shown as `*`:
/// the seconds left in a rate-limit window depend on the second each front
/// answered.
pub const IGNORED: [&str; 6] = [
    "date",
    "server",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
];

/// Differences FL1 and FL2 have by design, each named, with why: requests
/// that Pingora's HTTP/1 parser (in front of graft-edge's phases, and not
/// graft-edge's to change) refuses or rewrites before graft-edge sees
/// them. A pair is left out only when the request has the case's shape
/// and the answers are the ones the case names (Pingora's own 400, or
/// nginx's 400 to an escaped target); any other difference on such a
/// request is still one. README, Flamingo, "Not compared".
pub const ACCEPTED: [(&str, &str); 5] = [
    (
        "a byte above 0x7f, `<`, `>` or `\"` in the target",
        "Pingora's parser refuses it (400, no page) where nginx serves it",
    ),
    (
        "a control byte in a header value",
        "Pingora's parser refuses it (400, no page) where nginx serves it",
    ),
    (
        "a Transfer-Encoding other than chunked",
        "Pingora's parser refuses it (400, no page) where nginx answers 501",
    ),
    (
        "two Host headers",
        "Pingora's parser refuses it (400, no page) where nginx answers 400 with its page",
    ),
    (
        "a space or a control byte in the target",
        "Pingora's parser escapes it (`%20`) and graft-edge serves the escaped target where nginx answers 400",
    ),
];

/// Which of [`ACCEPTED`] a pair of answers to `req` is, if any.
pub fn accepted(req: &CorpusRequest, fl1: &Observed, fl2: &Observed) -> Option<&'static str> {
    let pingora_400 = fl2.status == 400
        && fl2.body.is_empty()
        && fl2.headers == [("cache-control".to_string(), "private, no-store".to_string())];
    let case = if pingora_400 {
        if req
            .target
            .iter()
            .any(|&b| b >= 0x80 || b"<>\"".contains(&b))
        {
            0
        } else if req
            .headers
            .iter()
            .any(|h| h.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f))
        {
            1
        } else if header_values(req, b"transfer-encoding").any(|v| {
            !v.rsplit(|&b| b == b',')
                .next()
                .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"))
        }) {
            2
        } else if header_values(req, b"host").next().is_some() {
            3
        } else {
            return None;
        }
    } else if fl1.status == 400 && req.target.iter().any(|&b| b <= 0x20 || b == 0x7f) {
        4
    } else {
        return None;
    };
    Some(ACCEPTED[case].0)
}

/// The values of a request's header lines named `name`.
fn header_values<'a>(req: &'a CorpusRequest, name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> {
    req.headers.iter().filter_map(move |h| {
        let (n, v) = h.split_at(h.iter().position(|&b| b == b':')?);
        n.eq_ignore_ascii_case(name).then(|| v[1..].trim_ascii())
    })
}

/// What is compared of a response: its status, its headers (names in
/// lower case, sorted by name, same-name lines in their order; those of
/// [`IGNORED`] left out) and its body (de-chunked; an error page's server
/// name taken out). `head`: the response is to a HEAD.
pub fn observe(r: Response, head: bool) -> Observed {
    let bodiless = head || r.status < 200 || r.status == 204 || r.status == 304;
    let mut headers: Vec<(String, String)> = Vec::with_capacity(r.headers.len());
    let mut framing = None;
    for (name, value) in r.headers {
        let name = name.to_ascii_lowercase();
        if name == "content-length"
            && !bodiless
            && value.trim().parse::<usize>() != Ok(r.body.len())
        {
            framing = Some(format!(
                "Content-Length {value} with a body of {} bytes",
                r.body.len()
            ));
        }
        if IGNORED.contains(&name.as_str()) {
            continue;
        }
        let value = if name == "retry-after" {
            "*".to_string()
        } else {
            value
        };
        headers.push((name, value));
    }
    headers.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(bad) = framing {
        headers.push(("graft-flamingo".to_string(), bad));
    }
    Observed {
        status: r.status,
        headers,
        body: without_server_name(r.body),
    }
}

/// An error page's footer with the server's name taken out: nginx's
/// `<hr><center>nginx/1.22.1</center>` and graft-edge's
/// `<hr><center>graft-edge</center>` read alike.
fn without_server_name(body: Vec<u8>) -> Vec<u8> {
    const OPEN: &[u8] = b"<hr><center>";
    const CLOSE: &[u8] = b"</center>";
    let Some(at) = body.windows(OPEN.len()).position(|w| w == OPEN) else {
        return body;
    };
    let from = at + OPEN.len();
    let Some(len) = body[from..].windows(CLOSE.len()).position(|w| w == CLOSE) else {
        return body;
    };
    let name = &body[from..from + len];
    if !(name.starts_with(b"nginx") || name == b"graft-edge") {
        return body;
    }
    [&body[..from], b"(server)", &body[from + len..]].concat()
}

/// Where two responses differ: the statuses, the header lines only one
/// has, and the bodies from their first different byte.
pub fn explain(fl1: &Observed, fl2: &Observed) -> String {
    let mut out = format!("  status: FL1 {}, FL2 {}\n", fl1.status, fl2.status);
    let only = |a: &Observed, b: &Observed| -> Vec<String> {
        a.headers
            .iter()
            .filter(|h| !b.headers.contains(h))
            .map(|(n, v)| format!("{n}: {v}"))
            .collect()
    };
    for (who, lines) in [("FL1", only(fl1, fl2)), ("FL2", only(fl2, fl1))] {
        if !lines.is_empty() {
            out.push_str(&format!(
                "  headers only {who} sent: {}\n",
                lines.join("; ")
            ));
        }
    }
    if fl1.body != fl2.body {
        let at = fl1
            .body
            .iter()
            .zip(&fl2.body)
            .position(|(a, b)| a != b)
            .unwrap_or(fl1.body.len().min(fl2.body.len()));
        let from = at.saturating_sub(40);
        let show = |b: &[u8]| {
            let end = b.len().min(at + 80);
            crate::corpus::escape(&b[from.min(end)..end])
        };
        out.push_str(&format!(
            "  body: FL1 {} bytes, FL2 {} bytes, apart from byte {at}:\n    FL1 …{}\n    FL2 …{}\n",
            fl1.body.len(),
            fl2.body.len(),
            show(&fl1.body),
            show(&fl2.body)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_response;

    #[test]
    fn only_the_documented_headers_are_left_out_and_framing_is_checked() {
        let r = parse_response(
            b"HTTP/1.1 403 Forbidden\r\nServer: nginx/1.22.1\r\nDate: x\r\nX-B: 1\r\nContent-Type: text/html\r\nX-A: 2\r\nX-B: 0\r\nRetry-After: 7\r\nConnection: close\r\nContent-Length: 48\r\n\r\n<html><hr><center>nginx/1.22.1</center></html>\r\n",
        )
        .unwrap();
        let o = observe(r, false);
        let names: Vec<&str> = o.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["content-type", "retry-after", "x-a", "x-b", "x-b"]);
        assert_eq!(o.headers[1].1, "*");
        assert_eq!((&o.headers[3].1[..], &o.headers[4].1[..]), ("1", "0"));
        assert_eq!(o.body, b"<html><hr><center>(server)</center></html>\r\n");
        // A length that is not the body's is a difference of its own.
        let bad = observe(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort").unwrap(),
            false,
        );
        assert!(bad.headers.iter().any(|(n, _)| n == "graft-flamingo"));
        // To a HEAD, it tells what a GET would get.
        let head = parse_response(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\n\r\n").unwrap();
        assert!(observe(head, true).headers.is_empty());
        // A body that only looks like a page keeps its words.
        let other = without_server_name(b"<hr><center>Alice</center>".to_vec());
        assert_eq!(other, b"<hr><center>Alice</center>");
    }

    #[test]
    fn only_the_listed_differences_with_their_answers_are_accepted() {
        let req = |line: &str| crate::corpus::parse(line).unwrap().remove(0);
        let answer = |status: u16, headers: &[(&str, &str)], body: &[u8]| Observed {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: body.to_vec(),
        };
        let pingora = answer(400, &[("cache-control", "private, no-store")], b"");
        let page = answer(400, &[("content-type", "text/html")], b"<html>");
        let ok = answer(200, &[], b"origin /");
        let cases = [
            ("GET\ta.example\t/x?q=<script>", &ok, &pingora, Some(0)),
            ("GET\ta.example\t/caf\\xc3\\xa9", &ok, &pingora, Some(0)),
            ("GET\ta.example\t/\tX-A: \\x01", &ok, &pingora, Some(1)),
            (
                "GET\ta.example\t/\tTransfer-Encoding: identity",
                &answer(501, &[], b""),
                &pingora,
                Some(2),
            ),
            (
                "GET\ta.example\t/\tHost: b.example",
                &page,
                &pingora,
                Some(3),
            ),
            ("GET\ta.example\t/X-A: 0", &page, &ok, Some(4)),
            // The shape without the answer the case names: a difference.
            ("GET\ta.example\t/x?q=<script>", &ok, &page, None),
            ("GET\ta.example\t/X-A: 0", &ok, &page, None),
            // The answer without the shape: a difference.
            ("GET\ta.example\t/", &ok, &pingora, None),
            (
                "GET\ta.example\t/\tTransfer-Encoding: chunked",
                &ok,
                &pingora,
                None,
            ),
        ];
        for (line, fl1, fl2, case) in cases {
            let want = case.map(|c: usize| ACCEPTED[c].0);
            assert_eq!(accepted(&req(line), fl1, fl2), want, "{line}");
        }
    }
}
