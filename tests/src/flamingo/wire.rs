//! A corpus request on the wire: sent from its client's address, and the
//! response read whole and observed as Flamingo compares it.
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use socket2::{Domain, Socket, Type};

use super::compare::observe;
use crate::corpus::CorpusRequest;
use crate::parse_response;
use crate::replay::Observed;

/// Connects to `port` from the request's client address and sends it. A
/// front that answers before reading a whole body (413) may close while
/// it is written: the answer is read all the same.
pub fn open(port: u16, req: &CorpusRequest) -> std::io::Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    if let Some(client) = req.client {
        socket.bind(&SocketAddr::from((client, 0)).into())?;
    }
    socket.connect(&SocketAddr::from(([127, 0, 0, 1], port)).into())?;
    let mut stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let _ = stream.write_all(&req.to_wire());
    Ok(stream)
}

/// Reads a response to its end (the request asked to close).
pub fn finish(stream: std::io::Result<TcpStream>, req: &CorpusRequest) -> Observed {
    let read = stream.and_then(|mut s| {
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        parse_response(&buf).ok_or_else(|| {
            std::io::Error::other(format!(
                "no HTTP response: {:?}",
                String::from_utf8_lossy(&buf[..buf.len().min(200)])
            ))
        })
    });
    match read {
        Ok(r) => observe(r, req.method == b"HEAD"),
        Err(e) => Observed {
            status: 0,
            headers: vec![("graft-flamingo".to_string(), e.to_string())],
            body: Vec::new(),
        },
    }
}
