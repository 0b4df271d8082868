//! The `tcp` listener: every connection goes to the listener's `forward_to`, or with
//! `route_by: destination_address` to the host whose auto-allocated address the client
//! connected to, but only while a rule allows that host and port — the policy decides
//! and the address guard applies, as for any other destination.

use std::net::SocketAddr;
use std::sync::Arc;

use super::context::{Accepted, Context};
use super::downstream::Downstream;
use super::tunnel::Tunnel;
use crate::audit::ResponseFlags;
use crate::egress::Destination;
use crate::policy::RouteBy;
use crate::wire::host::Host;

/// CONNECTION_TERMINATION_DETAILS when a `tcp` listener has no `forward_to`, which
/// policy validation prevents; kept so that such a connection still gets its line.
const MISSING_FORWARD_TO: &str = "tcp_missing_forward_to";

/// CONNECTION_TERMINATION_DETAILS when the address a client connected to was not
/// allocated to any host.
const UNKNOWN_ADDRESS: &str = "unallocated_destination_address";

/// Serves one connection on a `tcp` listener.
pub(crate) async fn serve_connection(ctx: Arc<Context>, accepted: Accepted, io: Downstream) {
    let destination = match accepted.spec.route_by {
        RouteBy::ForwardTo => accepted.spec.forward_to.clone(),
        RouteBy::DestinationAddress => {
            let reached = original_destination(&io).unwrap_or(accepted.local);
            let policy = ctx.egress.store.current();
            let host = policy.allocations().host(reached.ip());
            host.map(|host| (Host::Name(host.to_owned()), reached.port()))
        }
    };
    let missing = match accepted.spec.route_by {
        RouteBy::ForwardTo => MISSING_FORWARD_TO,
        RouteBy::DestinationAddress => UNKNOWN_ADDRESS,
    };
    let mut tunnel = Tunnel::open(ctx, accepted);
    let Some((host, port)) = destination else {
        tunnel.refuse(ResponseFlags::NO_ROUTE_FOUND, missing);
        return;
    };
    match tunnel.connect(Destination { host, port }, false).await {
        Ok(upstream) => tunnel.relay(io.into(), upstream, &[]).await,
        Err(e) => tunnel.fail(&e),
    }
}

/// Where a connection redirected to the gateway (iptables `REDIRECT`) was going; `None`
/// for one that came here directly.
#[cfg(target_os = "linux")]
fn original_destination(io: &Downstream) -> Option<SocketAddr> {
    use nix::sys::socket::{getsockopt, sockopt};
    let Downstream::Plain(stream) = io else {
        return None;
    };
    let local = stream.local_addr().ok()?;
    let original = match local {
        SocketAddr::V4(_) => {
            let sin = getsockopt(stream, sockopt::OriginalDst).ok()?;
            let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            SocketAddr::new(ip.into(), u16::from_be(sin.sin_port))
        }
        SocketAddr::V6(_) => {
            let sin6 = getsockopt(stream, sockopt::Ip6tOriginalDst).ok()?;
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            SocketAddr::new(ip.into(), u16::from_be(sin6.sin6_port))
        }
    };
    (original != local).then_some(original)
}

#[cfg(not(target_os = "linux"))]
fn original_destination(_: &Downstream) -> Option<SocketAddr> {
    None
}
