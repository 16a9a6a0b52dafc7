//! Puts a step's answer on the wire as nginx's native pipeline does
//! (`respond` in shim/nginx/src/native.rs): with no body and a status of
//! 300 or more, the server's own page for the status; otherwise the
//! status, a `Content-Length` from the body (none in a 204 or a 304,
//! which carry no body) and the body. The decision's framing was checked
//! when it was made (`Decision::check_framing`), so the length is the
//! server's to set, through Pingora's own header.
use bytes::Bytes;
use graft_contract::Response;
use pingora_error::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

/// The reason phrase of the statuses nginx has a page for.
fn page_title(status: u16) -> Option<&'static str> {
    Some(match status {
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Authorization Required",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Time-out",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Large",
        415 => "Unsupported Media Type",
        416 => "Requested Range Not Satisfiable",
        421 => "Misdirected Request",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Temporarily Unavailable",
        504 => "Gateway Time-out",
        505 => "HTTP Version Not Supported",
        507 => "Insufficient Storage",
        _ => return None,
    })
}

/// The page nginx sends for `status` (its layout, graft-edge's name at
/// the foot), or none for a status nginx has no page for.
pub fn page(status: u16) -> Option<String> {
    let title = page_title(status)?;
    Some(format!(
        "<html>\r\n<head><title>{status} {title}</title></head>\r\n<body>\r\n<center><h1>{status} {title}</h1></center>\r\n<hr><center>graft-edge</center>\r\n</body>\r\n</html>\r\n"
    ))
}

/// The header and body of an answer.
pub fn render(resp: &Response) -> Result<(ResponseHeader, Bytes)> {
    let mut head = ResponseHeader::build(resp.status, Some(resp.headers.len() + 2))?;
    for (name, value) in &resp.headers {
        head.append_header(name.as_str().to_string(), value.as_bytes())?;
    }
    let no_body = matches!(resp.status, 204 | 304);
    let body = if no_body {
        Bytes::new()
    } else if resp.body.is_empty() && resp.status >= 300 {
        match page(resp.status) {
            Some(page) => {
                head.insert_header(http::header::CONTENT_TYPE, "text/html")?;
                Bytes::from(page)
            }
            None => Bytes::new(),
        }
    } else {
        Bytes::copy_from_slice(&resp.body)
    };
    if !no_body {
        head.set_content_length(body.len())?;
    }
    Ok((head, body))
}

/// Sends an answer's header and body to the client.
pub async fn write(session: &mut Session, head: ResponseHeader, body: Bytes) -> Result<()> {
    let head_only = body.is_empty() || session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(head), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use graft_contract::{HeaderName, HeaderValue};

    fn resp(status: u16, body: &str) -> Response {
        Response {
            status,
            headers: vec![(
                HeaderName::new("X-Graft-Impl").unwrap(),
                HeaderValue::new("rust").unwrap(),
            )],
            body: body.as_bytes().to_vec(),
            log: Vec::new(),
        }
    }

    #[test]
    fn an_answer_is_framed_by_its_body() {
        let (head, body) = render(&resp(200, "rust /x\n")).unwrap();
        assert_eq!(head.status.as_u16(), 200);
        assert_eq!(head.headers["content-length"], "8");
        assert_eq!(head.headers["x-graft-impl"], "rust");
        assert_eq!(body, "rust /x\n");
        let (head, body) = render(&resp(204, "")).unwrap();
        assert!(head.headers.get("content-length").is_none());
        assert!(body.is_empty());
        let (head, body) = render(&resp(403, "")).unwrap();
        assert_eq!(head.headers["content-type"], "text/html");
        assert!(String::from_utf8_lossy(&body).contains("<h1>403 Forbidden</h1>"));
        assert_eq!(
            head.headers["content-length"],
            body.len().to_string().as_str()
        );
        let (head, body) = render(&resp(299, "")).unwrap();
        assert_eq!(head.headers["content-length"], "0");
        assert!(body.is_empty());
        let (_, body) = render(&resp(418, "")).unwrap();
        assert!(body.is_empty());
    }
}
