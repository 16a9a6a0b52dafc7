//! Request bodies: read up to the zone's `max_bytes` before any step runs
//! (the access decision comes before a byte reaches an origin or FL1),
//! and passed on whole afterwards.
//!
//! What graft-edge read must reach the origin or FL1 with the rest. Pingora
//! 0.9 replays what a filter read before the proxy phase only from its
//! retry buffer (64 KiB; pingora issue #780), so:
//! - what fits it, Pingora replays, then streams the rest;
//! - more, with the body not over, is put in front of the next chunk Pingora
//!   reads (`request_body_filter`, [`Forward::Prepend`]);
//! - more, with the body over, goes in a Pingora subrequest whose body is
//!   what was read ([`Forward::Whole`]; `pipe_subrequest`): the request runs
//!   through the same proxy phases with its route already decided.
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use graft_engine::log_budget::LogFamily;
use graft_engine::{Config, OverLimit, Zone};
use pingora_error::Result;
use pingora_proxy::Session;

use crate::steps::log_limited;

/// The body as the zone's modules read it.
#[derive(Debug)]
pub enum Read {
    /// No body for the modules: none was sent (or an empty one), or the
    /// zone reads none.
    Nothing,
    /// Its first `max_bytes` at most.
    Body(Arc<[u8]>),
    /// Answer with this status before any step runs: the body is over the
    /// zone's `max_bytes`, and the zone answers such bodies.
    Refuse(u16),
}

/// How what was read reaches the origin or FL1.
#[derive(Debug)]
pub enum Forward {
    /// Nothing was read, or Pingora replays it (its retry buffer).
    Replayed,
    /// Before the next chunk of the body.
    Prepend(Bytes),
    /// The whole body, read here: sent from memory.
    Whole(Vec<Bytes>),
}

/// Reads the request's body as far as `zone` reads bodies.
pub async fn read(session: &mut Session, zone: &Zone, config: &Config) -> Result<(Read, Forward)> {
    let Some(limit) = zone.body else {
        return Ok((Read::Nothing, Forward::Replayed));
    };
    if session.as_downstream_mut().is_body_empty() {
        return Ok((Read::Nothing, Forward::Replayed));
    }
    let name = &zone.name;
    let max = limit.max_bytes;
    if let OverLimit::Respond(status) = limit.over {
        let declared = session
            .req_header()
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if let Some(declared) = declared.filter(|&d| d > max as u64) {
            config.count_body_over(name);
            log_limited(
                LogFamily::Decision,
                format_args!("graft: zone \"{name}\": request body of {declared} bytes is over its max_bytes of {max}: answered {status}"),
            );
            return Ok((Read::Refuse(status), Forward::Replayed));
        }
    }
    session.enable_retry_buffering();
    let mut chunks = Vec::new();
    let mut total = 0usize;
    while total <= max {
        match session.read_request_body().await? {
            Some(chunk) => {
                total += chunk.len();
                chunks.push(chunk);
            }
            None => break,
        }
    }
    let done = session.is_body_done();
    let forward = if total == 0 || session.as_downstream().get_retry_buffer().is_some() {
        Forward::Replayed
    } else if !done {
        Forward::Prepend(concat(&chunks, usize::MAX))
    } else {
        Forward::Whole(chunks.clone())
    };
    if total > max {
        config.count_body_over(name);
        let more = if done { "" } else { " or more" };
        match limit.over {
            OverLimit::Respond(status) => {
                log_limited(
                    LogFamily::Decision,
                    format_args!("graft: zone \"{name}\": request body of {total}{more} bytes is over its max_bytes of {max}: answered {status}"),
                );
                return Ok((Read::Refuse(status), forward));
            }
            OverLimit::Inspect => log_limited(
                LogFamily::Decision,
                format_args!("graft: zone \"{name}\": request body of {total}{more} bytes is over its max_bytes of {max}: its first {max} bytes inspected"),
            ),
        }
    }
    if total == 0 {
        // An empty body (chunked, with no data) is no body, as in nginx.
        return Ok((Read::Nothing, forward));
    }
    Ok((Read::Body(concat(&chunks, max).to_vec().into()), forward))
}

/// The first `max` bytes of `chunks`, in one buffer.
fn concat(chunks: &[Bytes], max: usize) -> Bytes {
    if let [one] = chunks {
        return one.slice(..one.len().min(max));
    }
    let mut out = BytesMut::new();
    for c in chunks {
        let room = max - out.len();
        out.extend_from_slice(&c[..c.len().min(room)]);
        if out.len() == max {
            break;
        }
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concat_cuts_at_max() {
        let chunks = [Bytes::from_static(b"abc"), Bytes::from_static(b"def")];
        assert_eq!(concat(&chunks, 4), "abcd");
        assert_eq!(concat(&chunks, usize::MAX), "abcdef");
        assert_eq!(concat(&chunks[..1], 2), "ab");
        assert_eq!(concat(&[], 2), "");
    }
}
