//! What every connection handler is given: the shared [`Context`] and the [`Accepted`]
//! connection. A leaf of `listen/`: every handler depends on it, it on none of them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::certificates::Certificates;
use crate::audit::Recording;
use crate::config::LimitsConfig;
use crate::connections::Connections;
use crate::egress::Egress;
use crate::policy::Listener;
use crate::source::Source;

/// What every connection handler shares.
#[derive(Debug)]
pub struct Context {
    /// Decide, resolve, guard, connect.
    pub egress: Egress,
    /// Audit lines and metrics.
    pub recording: Arc<Recording>,
    /// Limits on what clients may send.
    pub limits: LimitsConfig,
    /// Cancelled when the gateway drains: accept loops stop, connections finish.
    pub drain: CancellationToken,
    /// Every connection task, so draining can wait for them.
    pub tasks: TaskTracker,
    /// The connections open now.
    pub connections: Arc<Connections>,
    /// A tunnel open longer than this writes interim audit lines this often.
    pub audit_flush_interval: Duration,
    /// The certificates terminating listeners serve, for the expiry gauge.
    pub certificates: Certificates,
}

/// How long tunnels closed at the drain timeout get to write their final lines.
const TUNNEL_CLOSE_GRACE: Duration = Duration::from_secs(1);

impl Context {
    /// Drains: accept loops stop, connections finish what is in flight, up to
    /// `timeout`; tunnels still open then are closed (`drain_timeout`) so each writes
    /// its final audit line. Returns whether everything finished in time.
    pub async fn drain(&self, timeout: Duration) -> bool {
        self.drain.cancel();
        self.tasks.close();
        let drained = tokio::time::timeout(timeout, self.tasks.wait())
            .await
            .is_ok();
        if !drained {
            tracing::warn!("drain timeout passed with work still in flight");
            // Tunnels last as long as their clients want.
            let closed = self
                .connections
                .close_tunnels(crate::connections::DRAIN_TIMEOUT);
            if closed > 0 {
                let _ = tokio::time::timeout(TUNNEL_CLOSE_GRACE, self.tasks.wait()).await;
            }
        }
        drained
    }
}

/// A connection as its handler receives it: who (after any PROXY header), on which
/// listener, at which local address.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The listener's name.
    pub listener: Arc<str>,
    /// The listener's declaration.
    pub spec: Arc<Listener>,
    /// The client (the PROXY header's source when the listener expects one).
    pub source: Source,
    /// The address the client reached (DOWNSTREAM_LOCAL_ADDRESS).
    pub local: SocketAddr,
}
