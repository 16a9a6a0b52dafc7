//! The client listeners' connections: the limit (`limits.max_connections`,
//! nginx's `worker_connections` for graft-edge's one process), and which
//! HTTP a plain connection speaks.
//!
//! Pingora 0.9 has no limit of its own: [`Front`] is the app of the
//! listening service, in front of Pingora's HTTP proxy, and takes a
//! connection in only while fewer than the limit are open. One over it is
//! closed as it comes (counted, `graft_edge_connections_refused_total`,
//! and logged at most once a second), as an overloaded server sheds load.
//!
//! HTTP/2 in plain text (h2c, prior knowledge) is told from HTTP/1 here,
//! by the first three bytes (`PRI`, the HTTP/2 preface's start), rather
//! than by Pingora's own test: that one waits for the preface's 24 bytes,
//! so that a shorter HTTP/1 request (`GET / HTTP/1.0` and its empty line
//! are 18) or a short malformed one would wait for bytes that never come,
//! unanswered. A connection goes to one of two proxies over the same
//! `EdgeProxy`: HTTP/1 (and TLS, where ALPN chooses), or h2c.
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::{Stream, UniqueIDType};
use pingora_core::server::ShutdownWatch;

/// A connection: its descriptor and its client's address. The
/// descriptor alone is not enough: Pingora closes a connection's socket
/// before [`Front`] hears that it ended, and the kernel may hand the same
/// number to a new connection meanwhile, which would read as the old one
/// back for its next request (and the old one's end would then uncount
/// it).
type Key = (UniqueIDType, Option<std::net::SocketAddr>);

fn key(stream: &Stream) -> Key {
    let peer = stream
        .get_socket_digest()
        .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).copied());
    (stream.id(), peer)
}

/// The connections open, by [`Key`], and those refused.
pub struct Limit {
    max: usize,
    open: Mutex<HashSet<Key>>,
    refused: AtomicU64,
    /// The second a refusal was last logged.
    logged: AtomicU64,
}

impl Limit {
    pub fn new(max: usize) -> Limit {
        Limit {
            max,
            open: Mutex::new(HashSet::new()),
            refused: AtomicU64::new(0),
            logged: AtomicU64::new(0),
        }
    }

    /// Connections open now.
    pub fn open_now(&self) -> usize {
        self.open().len()
    }

    /// Connections refused since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn open(&self) -> std::sync::MutexGuard<'_, HashSet<Key>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether connection `id` may be served, and how: it is open
    /// already (a kept-alive HTTP/1 one, back for its next request), or
    /// new and there is room; `None`: refused.
    fn enter(&self, id: Key) -> Option<Entry> {
        let mut open = self.open();
        if open.contains(&id) {
            return Some(Entry::Back);
        }
        if open.len() < self.max {
            open.insert(id);
            return Some(Entry::New);
        }
        drop(open);
        self.refused.fetch_add(1, Ordering::Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if self.logged.swap(now, Ordering::Relaxed) != now {
            tracing::warn!(
                "graft-edge: {} connections open, the most limits.max_connections allows: a new one closed ({} since start)",
                self.max,
                self.refused()
            );
        }
        None
    }

    fn leave(&self, id: Key) {
        self.open().remove(&id);
    }
}

/// How a connection comes to [`Limit::enter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    /// Just accepted (or its TLS handshake just done).
    New,
    /// A kept-alive HTTP/1 connection back for its next request: only
    /// HTTP/1's proxy hands a connection back, so it is not peeked at
    /// again (a system call a request saved).
    Back,
}

/// How long a new connection may take to send its first three bytes:
/// Pingora's own wait for a request head's first read.
const FIRST_BYTES: Duration = Duration::from_secs(60);

/// The start of HTTP/2's connection preface (`PRI * HTTP/2.0`).
const H2_PREFACE_START: &[u8; 3] = b"PRI";

/// The listening service's app: the limit, then the proxy for the
/// connection's HTTP.
pub struct Front<A> {
    /// HTTP/1 in plain text, and every TLS connection (ALPN).
    pub http1: Arc<A>,
    /// HTTP/2 in plain text, with prior knowledge.
    pub h2c: Arc<A>,
    pub limit: Arc<Limit>,
}

impl<A> Front<A> {
    /// Which proxy serves `stream`; `None`: it closed, or sent nothing
    /// for [`FIRST_BYTES`], or the server is stopping.
    async fn proxy_for(&self, stream: &mut Stream, shutdown: &ShutdownWatch) -> Option<&Arc<A>> {
        if stream.get_ssl_digest().is_some() {
            return Some(&self.http1);
        }
        let mut first = [0u8; 3];
        let mut stopping = shutdown.clone();
        let peeked = tokio::select! {
            peeked = tokio::time::timeout(FIRST_BYTES, stream.try_peek(&mut first)) => peeked,
            _ = stopping.changed() => return None,
        };
        match peeked {
            Ok(Ok(true)) if &first == H2_PREFACE_START => Some(&self.h2c),
            // A stream that cannot peek: HTTP/1, whose proxy reads it all.
            Ok(Ok(_)) => Some(&self.http1),
            Ok(Err(_)) | Err(_) => None,
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Front<A> {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let id = key(&stream);
        let proxy = match self.limit.enter(id) {
            // Dropped: closed.
            None => return None,
            Some(Entry::Back) => Some(&self.http1),
            Some(Entry::New) => self.proxy_for(&mut stream, shutdown).await,
        };
        let kept = match proxy {
            Some(proxy) => proxy.process_new(stream, shutdown).await,
            None => None,
        };
        if kept.is_none() {
            self.limit.leave(id);
        }
        kept
    }

    async fn cleanup(&self) {
        self.http1.cleanup().await;
        self.h2c.cleanup().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(fd: UniqueIDType, port: u16) -> Key {
        (fd, Some(std::net::SocketAddr::from(([127, 0, 0, 1], port))))
    }

    #[test]
    fn a_connection_past_the_limit_is_refused_and_a_kept_one_comes_back() {
        let limit = Limit::new(2);
        assert_eq!(limit.enter(at(10, 4000)), Some(Entry::New));
        assert_eq!(limit.enter(at(11, 4001)), Some(Entry::New));
        assert_eq!(limit.enter(at(12, 4002)), None);
        assert_eq!(
            limit.enter(at(10, 4000)),
            Some(Entry::Back),
            "kept alive, back for its next request"
        );
        limit.leave(at(11, 4001));
        assert_eq!(limit.enter(at(12, 4002)), Some(Entry::New));
        assert_eq!(limit.refused(), 1);
    }

    #[test]
    fn a_descriptor_taken_again_before_its_old_connection_left_is_a_new_connection() {
        let limit = Limit::new(2);
        assert_eq!(limit.enter(at(10, 4000)), Some(Entry::New));
        // Its socket closed, descriptor 10 goes to another client before
        // the old connection's end is heard.
        assert_eq!(limit.enter(at(10, 4100)), Some(Entry::New));
        limit.leave(at(10, 4000));
        // The new one still counts: one more fits, not two.
        assert_eq!(limit.enter(at(11, 4001)), Some(Entry::New));
        assert_eq!(limit.enter(at(12, 4002)), None);
    }
}
