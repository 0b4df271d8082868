//! The `tcp` listener (being built).

use std::sync::Arc;

use super::{Accepted, Context, Downstream};

/// Serves one connection on a `tcp` listener.
pub(crate) async fn serve_connection(ctx: Arc<Context>, accepted: Accepted, io: Downstream) {
    let _ = (ctx, accepted, io);
}
