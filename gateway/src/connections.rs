//! The connections open now: what `GET /connections` lists, and what a policy change
//! re-decides (a tunnel the new policy denies is revoked, and closes at once).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::egress::Destination;
use crate::policy::{Policy, Query, Verdict};
use crate::source::Source;

/// CONNECTION_TERMINATION_DETAILS of a tunnel closed because a new policy denies it.
pub const POLICY_REVOKED: &str = "policy_revoked";
/// CONNECTION_TERMINATION_DETAILS of a tunnel still open when the drain timeout passed.
pub const DRAIN_TIMEOUT: &str = "drain_timeout";

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
    /// Cancelled when a policy change denies this tunnel; see [`Entry::revoke`].
    pub revoked: CancellationToken,
    /// Why it was revoked, set once before `revoked` is cancelled.
    revoke_reason: OnceLock<&'static str>,
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

    /// Closes the tunnel at once, for `reason` (a snake_case word for its audit line).
    /// The first reason given is kept.
    pub fn revoke(&self, reason: &'static str) {
        let _ = self.revoke_reason.set(reason);
        self.revoked.cancel();
    }

    /// Why it was revoked, if it was.
    pub fn revoke_reason(&self) -> Option<&'static str> {
        self.revoke_reason.get().copied()
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
            revoke_reason: OnceLock::new(),
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

    /// Decides every open tunnel again against `policy` (its destination, listener and
    /// source) and revokes those it denies, with [`POLICY_REVOKED`]. Tunnels it still
    /// allows, by whichever rule, are left alone: a reload never resets them. Audit mode
    /// revokes nothing, as it refuses nothing. Returns how many were revoked.
    ///
    /// A tunnel whose destination is not decided yet is not here to judge; it checks
    /// the policy it was decided on against the one in force once it has set its target.
    pub fn redecide(&self, policy: &Policy) -> usize {
        let mut revoked = 0;
        for entry in self.snapshot() {
            if entry.kind != Kind::Tunnel || entry.revoked.is_cancelled() {
                continue;
            }
            let Some((destination, _)) = entry.target() else {
                continue;
            };
            let decision = policy.decide(&Query {
                host: &destination.host,
                port: destination.port,
                listener: &entry.listener,
                source: &entry.source,
            });
            if decision.verdict == Verdict::Deny {
                entry.revoke(POLICY_REVOKED);
                revoked += 1;
            }
        }
        revoked
    }

    /// Revokes every open tunnel for `reason`: at the end of a drain, so that each
    /// still writes its final line before the process exits. Returns how many.
    pub fn close_tunnels(&self, reason: &'static str) -> usize {
        let tunnels: Vec<Arc<Entry>> = self
            .snapshot()
            .into_iter()
            .filter(|e| e.kind == Kind::Tunnel && !e.revoked.is_cancelled())
            .collect();
        for entry in &tunnels {
            entry.revoke(reason);
        }
        tunnels.len()
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

    fn policy(yaml: &str) -> Policy {
        crate::policy::compile(&[crate::policy::PolicyFile {
            name: "p.yaml".into(),
            text: yaml.into(),
        }])
        .unwrap()
    }

    fn tunnel_to(registry: &Arc<Connections>, host: &str, port: u16) -> Registration {
        let source = Source::from_addr("10.0.0.1:4000".parse().unwrap());
        let reg = registry.register(
            "tls".into(),
            source,
            "127.0.0.1:8443".parse().unwrap(),
            Kind::Tunnel,
        );
        let destination = Destination {
            host: crate::wire::host::parse_host(host).unwrap(),
            port,
        };
        reg.entry().set_target(destination, Some("r".into()));
        reg
    }

    const LISTENERS: &str = "listeners: [{name: tls, port: 8443, protocol: tls}]\n";

    #[test]
    fn redecide_revokes_only_what_the_new_policy_denies() {
        let registry = Connections::new();
        let kept = tunnel_to(&registry, "api.example.com", 443);
        let moved = tunnel_to(&registry, "cdn.example.com", 443);
        let gone = tunnel_to(&registry, "www.163.com", 443);
        let other_port = tunnel_to(&registry, "api.example.com", 8443);
        let undecided = registry.register(
            "tls".into(),
            Source::from_addr("10.0.0.1:4001".parse().unwrap()),
            "127.0.0.1:8443".parse().unwrap(),
            Kind::Tunnel,
        );
        let http = registry.register(
            "http".into(),
            Source::from_addr("10.0.0.1:4002".parse().unwrap()),
            "127.0.0.1:8080".parse().unwrap(),
            Kind::Http,
        );
        let new = policy(&format!(
            "{LISTENERS}rules:\n  - {{name: api, hosts: [api.example.com], ports: [443]}}\n  - {{name: cdn, hosts: ['*.example.com']}}\n"
        ));
        assert_eq!(registry.redecide(&new), 1);
        assert!(!kept.entry().revoked.is_cancelled());
        // Now allowed by a different rule: still allowed, so untouched.
        assert!(!moved.entry().revoked.is_cancelled());
        assert!(gone.entry().revoked.is_cancelled());
        assert_eq!(gone.entry().revoke_reason(), Some(POLICY_REVOKED));
        // api.example.com:8443 falls to the wildcard rule, which allows any port.
        assert!(!other_port.entry().revoked.is_cancelled());
        assert!(!undecided.entry().revoked.is_cancelled());
        assert!(!http.entry().revoked.is_cancelled());
        // A deny rule revokes; an already revoked tunnel is not counted twice.
        let deny = policy(&format!(
            "{LISTENERS}rules:\n  - {{name: no, hosts: ['*.example.com'], action: deny}}\n"
        ));
        assert_eq!(registry.redecide(&deny), 3);
        assert!(kept.entry().revoked.is_cancelled());
        assert!(other_port.entry().revoked.is_cancelled());
    }

    #[test]
    fn closing_tunnels_leaves_http_connections_alone() {
        let registry = Connections::new();
        let t = tunnel_to(&registry, "api.example.com", 443);
        let http = registry.register(
            "http".into(),
            Source::from_addr("10.0.0.1:4002".parse().unwrap()),
            "127.0.0.1:8080".parse().unwrap(),
            Kind::Http,
        );
        assert_eq!(registry.close_tunnels(DRAIN_TIMEOUT), 1);
        assert_eq!(t.entry().revoke_reason(), Some(DRAIN_TIMEOUT));
        assert!(!http.entry().revoked.is_cancelled());
        assert_eq!(registry.close_tunnels(DRAIN_TIMEOUT), 0);
    }

    #[test]
    fn audit_mode_revokes_nothing() {
        let registry = Connections::new();
        let t = tunnel_to(&registry, "www.163.com", 443);
        let audit = policy(&format!("defaults: {{mode: audit}}\n{LISTENERS}"));
        assert_eq!(registry.redecide(&audit), 0);
        assert!(!t.entry().revoked.is_cancelled());
    }
}
