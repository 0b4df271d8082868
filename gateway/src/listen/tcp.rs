//! The `tcp` listener: every connection goes to the listener's `forward_to`, but only
//! while a rule allows that host and port — the policy decides and the address guard
//! applies, as for any other destination.

use std::sync::Arc;

use super::tunnel::Tunnel;
use super::{Accepted, Context, Downstream};
use crate::audit::ResponseFlags;
use crate::egress::Destination;

/// CONNECTION_TERMINATION_DETAILS when a `tcp` listener has no `forward_to`, which
/// policy validation prevents; kept so that such a connection still gets its line.
const MISSING_FORWARD_TO: &str = "tcp_missing_forward_to";

/// Serves one connection on a `tcp` listener.
pub(crate) async fn serve_connection(ctx: Arc<Context>, accepted: Accepted, io: Downstream) {
    let forward_to = accepted.spec.forward_to.clone();
    let mut tunnel = Tunnel::open(ctx, accepted);
    let Some((host, port)) = forward_to else {
        tunnel.refuse(ResponseFlags::NONE, MISSING_FORWARD_TO);
        return;
    };
    match tunnel.connect(Destination { host, port }).await {
        Ok(upstream) => tunnel.relay(io, upstream, &[]).await,
        Err(e) => tunnel.fail(&e),
    }
}
