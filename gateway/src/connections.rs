//! The connections open now: what `GET /connections` lists, and what a policy change
//! re-decides (a tunnel the new policy denies is revoked, and closes at once).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::egress::Destination;
use crate::source::Source;

/// What kind of connection an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An HTTP connection from the mesh; its requests are decided one by one.
    Http,
    /// A tunnel (tls, tcp, connect): decided once, re-decided on policy changes.
    Tunnel,
}

/// One open connection.
#[derive(Debug)]
pub struct Entry {
    /// Unique while the gateway runs.
    pub id: u64,
    /// The listener that accepted it.
    pub listener: Arc<str>,
    /// Who opened it.
    pub source: Source,
    /// The listener address it reached.
    pub local: SocketAddr,
    /// HTTP or tunnel.
    pub kind: Kind,
    /// When it was accepted.
    pub started: SystemTime,
    started_at: Instant,
    /// Set once a tunnel's destination is decided.
    target: Mutex<Option<(Destination, Option<String>)>>,
    /// Bytes from the client.
    pub bytes_received: AtomicU64,
    /// Bytes to the client.
    pub bytes_sent: AtomicU64,
    /// Cancelled when a policy change denies this tunnel.
    pub revoked: CancellationToken,
}

impl Entry {
    /// Records the decided destination and the rule that allowed it.
    pub fn set_target(&self, destination: Destination, rule: Option<String>) {
        *self.target.lock().unwrap_or_else(PoisonError::into_inner) = Some((destination, rule));
    }

    /// The decided destination and rule, if decided.
    pub fn target(&self) -> Option<(Destination, Option<String>)> {
        self.target
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How long it has been open.
    pub fn age(&self) -> std::time::Duration {
        self.started_at.elapsed()
    }
}

/// The registry of open connections.
#[derive(Debug, Default)]
pub struct Connections {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Entry>>>,
}

/// Keeps an entry registered; dropping it removes the entry.
#[derive(Debug)]
pub struct Registration {
    registry: Arc<Connections>,
    entry: Arc<Entry>,
}

impl Registration {
    /// The registered entry.
    pub fn entry(&self) -> &Arc<Entry> {
        &self.entry
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.entry.id);
    }
}

impl Connections {
    /// An empty registry.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Registers a connection accepted now.
    pub fn register(
        self: &Arc<Self>,
        listener: Arc<str>,
        source: Source,
        local: SocketAddr,
        kind: Kind,
    ) -> Registration {
        let entry = Arc::new(Entry {
            id: self.next.fetch_add(1, Ordering::Relaxed) + 1,
            listener,
            source,
            local,
            kind,
            started: SystemTime::now(),
            started_at: Instant::now(),
            target: Mutex::new(None),
            bytes_received: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            revoked: CancellationToken::new(),
        });
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(entry.id, Arc::clone(&entry));
        Registration {
            registry: Arc::clone(self),
            entry,
        }
    }

    /// Every open connection, oldest first.
    pub fn snapshot(&self) -> Vec<Arc<Entry>> {
        let mut all: Vec<Arc<Entry>> = self
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        all.sort_by_key(|e| e.id);
        all
    }

    /// How many are open.
    pub fn len(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_leave_the_registry_when_their_registration_drops() {
        let registry = Connections::new();
        let source = Source::from_addr("10.0.0.1:4000".parse().unwrap());
        let local = "127.0.0.1:8443".parse().unwrap();
        let a = registry.register("tls".into(), source.clone(), local, Kind::Tunnel);
        let b = registry.register("http".into(), source, local, Kind::Http);
        assert_eq!(
            registry.snapshot().iter().map(|e| e.id).collect::<Vec<_>>(),
            vec![a.entry().id, b.entry().id]
        );
        drop(a);
        assert_eq!(registry.len(), 1);
        drop(b);
        assert!(registry.is_empty());
    }
}
