//! Listeners: bind the declared ports and accept, one task per connection, until the
//! gateway drains. Each protocol's connection handling lives in its own module.

mod activity;
mod headers;
pub mod http;
mod http_body;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audit::Recording;
use crate::config::LimitsConfig;
use crate::egress::Egress;
use crate::policy::{Listener, Protocol};

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
}

/// A listener that could not start.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// The address is taken or not ours.
    #[error("listener {name}: cannot bind {addr}: {source}")]
    Bind {
        /// Listener name.
        name: String,
        /// Address it wanted.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The protocol has no implementation in this build.
    #[error("listener {name}: protocol {protocol:?} is not supported yet; remove the listener or use http")]
    Unsupported {
        /// Listener name.
        name: String,
        /// Its protocol.
        protocol: Protocol,
    },
}

/// Binds a declared listener, or (tests) an ephemeral port on `override_ip`.
///
/// Fails when the protocol is not supported or the address cannot be bound.
pub async fn bind(
    spec: &Listener,
    override_ip: Option<IpAddr>,
) -> Result<TcpListener, ListenError> {
    if spec.protocol != Protocol::Http {
        return Err(ListenError::Unsupported {
            name: spec.name.clone(),
            protocol: spec.protocol,
        });
    }
    let addr = match override_ip {
        Some(ip) => SocketAddr::new(ip, 0),
        None => SocketAddr::new(spec.address, spec.port),
    };
    TcpListener::bind(addr)
        .await
        .map_err(|source| ListenError::Bind {
            name: spec.name.clone(),
            addr,
            source,
        })
}

/// Accepts connections on `listener` until the gateway drains.
pub fn spawn(
    ctx: Arc<Context>,
    spec: Listener,
    listener: TcpListener,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(accept_loop(ctx, Arc::new(spec), listener))
}

async fn accept_loop(ctx: Arc<Context>, spec: Arc<Listener>, listener: TcpListener) {
    let name: Arc<str> = Arc::from(spec.name.as_str());
    let active = ctx
        .egress
        .metrics
        .connections_active
        .with_label_values(&[&spec.name]);
    loop {
        let accepted = tokio::select! {
            () = ctx.drain.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(listener = %spec.name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let ctx = Arc::clone(&ctx);
        let name = Arc::clone(&name);
        let spec = Arc::clone(&spec);
        let active = active.clone();
        ctx.tasks.clone().spawn(async move {
            active.inc();
            // `bind` refuses every other protocol until it has a handler.
            if spec.protocol == Protocol::Http {
                http::serve_connection(ctx, name, spec, stream, peer).await;
            }
            active.dec();
        });
    }
}
