//! The `connect` listener: an HTTP forward proxy (`HTTPS_PROXY`, `curl -x`).
//! `CONNECT host:port` runs the egress sequence as a [`Tunnel`] (so a policy change
//! decides it again like any tunnel), is answered `200` once the upstream is connected,
//! and is relayed; absolute-form requests (`GET http://host/path`) are served by the
//! `http` listener's request path.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use ::http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;

use super::activity::Tracked;
use super::context::{Accepted, Context};
use super::downstream::Downstream;
use super::http_body::ResponseBody;
use super::preface::Rewind;
use super::reply::local_reply;
use super::tunnel::{Client, Connected, Tunnel};
use crate::audit::{Recorder, ResponseFlags};
use crate::egress::Destination;
use crate::error::EgressError;
use crate::wire::connect::parse_target;
use crate::wire::host::Host;

mod sni;

/// Answers a CONNECT: `200` and a tunnel task once the upstream is connected, or the
/// refusal (400, 403, 503) as a one-line reason. The tunnel's audit line is written
/// when it ends; a refusal's when its reply is sent.
pub(super) async fn tunnel(
    ctx: &Arc<Context>,
    accepted: &Accepted,
    mut req: Request<Incoming>,
    recorder: Recorder,
) -> Response<ResponseBody> {
    let destination = match target(&req) {
        Ok(destination) => destination,
        Err(e) => return local_reply(e, recorder),
    };
    let mut tunnel = Tunnel::adopt(Arc::clone(ctx), accepted.clone(), recorder);
    let upstream = match tunnel.connect(destination.clone(), true).await {
        Ok(upstream) => upstream,
        Err(e) => return local_reply(e, tunnel.into_recorder()),
    };
    let record = tunnel.record();
    record.response_code = StatusCode::OK.as_u16();
    record
        .response_code_details
        .get_or_insert_with(|| "via_upstream".into());
    let upgrade = hyper::upgrade::on(&mut req);
    let check_sni = accepted.spec.check_sni.then_some(destination.host);
    ctx.tasks
        .spawn(run(Arc::clone(ctx), upgrade, tunnel, upstream, check_sni));
    Response::new(ResponseBody::empty())
}

/// The destination a CONNECT names: `host:port`, nothing else.
fn target(req: &Request<Incoming>) -> Result<Destination, EgressError> {
    let target = req.uri().authority().map_or("", |a| a.as_str());
    let (host, port) = parse_target(target).map_err(|e| EgressError::BadRequest {
        reason: "invalid_connect_target",
        message: e.to_string(),
    })?;
    Ok(Destination { host, port })
}

/// The tunnel once `200` is on its way: the client's side of the connection, the SNI
/// check against `check_sni` where the listener asks for it, and the relay.
async fn run(
    ctx: Arc<Context>,
    upgrade: OnUpgrade,
    mut tunnel: Tunnel,
    upstream: Connected,
    check_sni: Option<Host>,
) {
    let (mut client, early) = match upgrade.await {
        Ok(upgraded) => client_side(upgraded),
        Err(e) => {
            // The client left before the 200 reached it; the record says DC on drop.
            tracing::debug!(error = %e, "CONNECT upgrade failed");
            return;
        }
    };
    tunnel.opened();
    // The accept loop counted the connection until hyper handed it over; the tunnel
    // counts it from here.
    let active = ctx
        .egress
        .metrics
        .connections_active
        .with_label_values(&[tunnel.listener()]);
    active.inc();
    let checked = match &check_sni {
        Some(host) => {
            let hello_timeout = ctx.limits.header_timeout;
            let idle = upstream.idle_timeout;
            sni::check(
                &mut client,
                early,
                &upstream.stream,
                host,
                idle,
                hello_timeout,
            )
            .await
        }
        None => Ok(sni::Checked {
            prefix: early,
            server_name: None,
        }),
    };
    match checked {
        Ok(checked) => {
            tunnel.record().requested_server_name = checked.server_name;
            tunnel
                .entry()
                .bytes_received
                .fetch_add(checked.prefix.len() as u64, Ordering::Relaxed);
            tunnel.relay(client, upstream, &checked.prefix).await;
        }
        Err(refusal) => {
            tunnel.record().requested_server_name = refusal.server_name;
            tunnel
                .entry()
                .bytes_received
                .fetch_add(refusal.received as u64, Ordering::Relaxed);
            let _ = client.shutdown().await;
            tunnel.refuse(ResponseFlags::NONE, refusal.reason);
        }
    }
    active.dec();
}

/// The client's socket back from hyper, and the bytes read past the CONNECT head (a
/// client may send its ClientHello without waiting for the 200): hyper's read buffer,
/// then what the preface sniff read and hyper did not. The socket leaves the HTTP
/// connection's wrapper, whose lingering close would read tunnel bytes away.
fn client_side(upgraded: Upgraded) -> (Client, Vec<u8>) {
    match upgraded.downcast::<TokioIo<Tracked<Rewind<Downstream>>>>() {
        Ok(parts) => {
            let (unread, socket) = parts.io.into_inner().into_inner().into_parts();
            let mut early = parts.read_buf.to_vec();
            early.extend_from_slice(&unread);
            (Client::Socket(socket), early)
        }
        Err(upgraded) => (Client::Upgraded(TokioIo::new(upgraded)), Vec::new()),
    }
}
