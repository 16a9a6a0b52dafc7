//! The client listeners' connection limit (`limits.max_connections`),
//! nginx's `worker_connections` for graft-edge's one process.
//!
//! Pingora 0.9 has no limit of its own: [`Limited`] wraps its HTTP proxy
//! as the app of the listening service, and takes a connection in only
//! while fewer than the limit are open. One over it is closed as it comes
//! (counted, `graft_edge_connections_refused_total`, and logged at most
//! once a second), as an overloaded server sheds load; a kept-alive
//! connection holds its place between its requests.
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::{Stream, UniqueIDType};
use pingora_core::server::ShutdownWatch;

/// The connections open, by their descriptor, and those refused.
pub struct Limit {
    max: usize,
    open: Mutex<HashSet<UniqueIDType>>,
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

    /// Connections refused since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn open(&self) -> std::sync::MutexGuard<'_, HashSet<UniqueIDType>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether connection `id` may be served: it is open already (a
    /// kept-alive one, back for its next request), or there is room.
    fn enter(&self, id: UniqueIDType) -> bool {
        let mut open = self.open();
        if open.contains(&id) || open.len() < self.max {
            open.insert(id);
            return true;
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
        false
    }

    fn leave(&self, id: UniqueIDType) {
        self.open().remove(&id);
    }
}

/// A listening service's app, served within a [`Limit`].
pub struct Limited<A> {
    pub app: Arc<A>,
    pub limit: Arc<Limit>,
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Limited<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let id = stream.id();
        if !self.limit.enter(id) {
            // Dropped: closed.
            return None;
        }
        let kept = self.app.process_new(stream, shutdown).await;
        if kept.is_none() {
            self.limit.leave(id);
        }
        kept
    }

    async fn cleanup(&self) {
        self.app.cleanup().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_past_the_limit_is_refused_and_a_kept_one_comes_back() {
        let limit = Limit::new(2);
        assert!(limit.enter(10) && limit.enter(11));
        assert!(!limit.enter(12));
        assert!(limit.enter(10), "kept alive, back for its next request");
        limit.leave(11);
        assert!(limit.enter(12));
        assert_eq!(limit.refused(), 1);
    }
}
