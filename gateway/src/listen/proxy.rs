//! The PROXY protocol (v1 and v2) in front of a listener's connections (being built).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use super::Context;

/// Why a connection's PROXY header was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    /// Not implemented yet.
    #[error("the PROXY protocol is not supported yet")]
    Unsupported,
}

/// Reads the PROXY header: the client's address, or `None` for a `LOCAL` / `UNKNOWN`
/// header (health checks of the load balancer itself).
///
/// Fails when the header is missing, malformed, or does not arrive within `timeout`.
pub async fn read_header(
    stream: &mut TcpStream,
    timeout: Duration,
) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let _ = (stream, timeout);
    Err(ProxyHeaderError::Unsupported)
}

/// Writes the audit line of a connection refused for its PROXY header.
pub fn refuse(
    ctx: &Context,
    listener: &str,
    peer: SocketAddr,
    local: SocketAddr,
    error: &ProxyHeaderError,
) {
    let _ = (ctx, listener, peer, local, error);
}
