//! The `connect` listener: an HTTP forward proxy (`HTTPS_PROXY`, `curl -x`).
//! `CONNECT host:port` is decided, guarded and connected, then answered `200` and
//! relayed as a tunnel; absolute-form requests (`GET http://host/path`) are served by
//! the `http` listener's request path.

use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use ::http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::activity::Tracked;
use super::http::local_reply;
use super::http_body::ResponseBody;
use super::preface::Rewind;
use super::{http, Accepted, Context, Downstream};
use crate::audit::{Recorder, ResponseFlags};
use crate::connections::Kind;
use crate::egress::limits::Admitted;
use crate::egress::Destination;
use crate::error::EgressError;
use crate::policy::Verdict;
use crate::upstream::{connect_tcp, Endpoints};
use crate::wire::connect::parse_target;
use crate::wire::host::Host;

mod sni;

/// Serves one connection on a `connect` listener: HTTP/1.1, where CONNECT requests
/// come back to [`tunnel`].
pub(crate) async fn serve_connection(ctx: Arc<Context>, accepted: Accepted, io: Downstream) {
    http::serve_connection(ctx, accepted, io).await;
}

/// An upstream connection made for a CONNECT request, waiting for the client's side.
struct Opened {
    destination: Destination,
    rule: Option<String>,
    upstream: TcpStream,
    idle_timeout: Duration,
    /// Counted by its rule's `max_concurrent` while the tunnel lasts.
    admitted: Admitted,
}

/// Answers a CONNECT: `200` and a tunnel task once the upstream is connected, or the
/// refusal (400, 403, 503) as a one-line reason. The tunnel's audit line is written
/// when it ends; a refusal's when its reply is sent.
pub(super) async fn tunnel(
    ctx: &Arc<Context>,
    accepted: &Accepted,
    mut req: Request<Incoming>,
    mut recorder: Recorder,
) -> Response<ResponseBody> {
    let opened = match open(ctx, accepted, &req, &mut recorder).await {
        Ok(opened) => opened,
        Err(e) => return local_reply(e, recorder),
    };
    recorder.record().response_code = StatusCode::OK.as_u16();
    let upgrade = hyper::upgrade::on(&mut req);
    ctx.tasks.spawn(run(
        Arc::clone(ctx),
        accepted.clone(),
        upgrade,
        opened,
        recorder,
    ));
    Response::new(ResponseBody::empty())
}

/// decide → resolve → guard → connect, filling the record as it goes.
async fn open(
    ctx: &Context,
    accepted: &Accepted,
    req: &Request<Incoming>,
    recorder: &mut Recorder,
) -> Result<Opened, EgressError> {
    let target = req.uri().authority().map_or("", |a| a.as_str());
    let (host, port) = parse_target(target).map_err(|e| EgressError::BadRequest {
        reason: "invalid_connect_target",
        message: e.to_string(),
    })?;
    let destination = Destination { host, port };
    let judged = ctx
        .egress
        .decide(&destination, &accepted.listener, &accepted.source);
    recorder.set_decision(judged.label());
    recorder.record().route_name = judged.route_name();
    let route = judged.route(&destination)?;
    if matches!(destination.host, Host::Ip(_))
        && judged.decision.verdict == Verdict::Allow
        && judged.decision.rule.is_none()
    {
        // Name rules cannot see an address: a tunnel to an IP literal needs a rule that
        // lists the address, even when the mode lets everything else out.
        return Err(EgressError::Denied {
            destination: destination.to_string(),
            rule: None,
            why: "a CONNECT to an IP address needs a rule that lists it".to_owned(),
        });
    }
    recorder.record().upstream_cluster = Some(destination.cluster_name());
    let admitted = ctx.egress.admit(&judged, &route, &accepted.source)?;
    let addrs = ctx.egress.addresses(&route, &destination).await?;
    let (upstream, Endpoints { peer, local }) =
        connect_tcp(&addrs, route.connect_timeout, &ctx.egress.metrics.upstream)
            .await
            .inspect_err(|e| recorder.record().upstream_host = e.upstream_addr())?;
    let record = recorder.record();
    record.upstream_host = Some(peer);
    record.upstream_local_address = Some(local);
    record.response_code_details = Some(match judged.decision.verdict {
        Verdict::WouldDeny => {
            format!("audit_would_deny[{}]", judged.rule_name().unwrap_or("none")).into()
        }
        _ => "via_upstream".into(),
    });
    Ok(Opened {
        destination,
        rule: judged.rule_name().map(str::to_owned),
        upstream,
        idle_timeout: route.idle_timeout,
        admitted,
    })
}

/// The tunnel once `200` is on its way: the client's side of the connection, the SNI
/// check where the listener asks for it, the relay, and the audit line at the end.
async fn run(
    ctx: Arc<Context>,
    accepted: Accepted,
    upgrade: OnUpgrade,
    opened: Opened,
    mut recorder: Recorder,
) {
    let (mut client, early) = match upgrade.await {
        Ok(upgraded) => client_side(upgraded),
        Err(e) => {
            // The client left before the 200 reached it; the record says DC on drop.
            tracing::debug!(peer = %accepted.source.addr, error = %e, "CONNECT upgrade failed");
            return;
        }
    };
    recorder.tunnel_opened();
    // The accept loop counted the connection until hyper handed it over; the tunnel
    // counts it from here.
    let active = ctx
        .egress
        .metrics
        .connections_active
        .with_label_values(&[&*accepted.listener]);
    active.inc();
    let registration = ctx.connections.register(
        Arc::clone(&accepted.listener),
        accepted.source.clone(),
        accepted.local,
        Kind::Tunnel,
    );
    let entry = registration.entry();
    entry.set_target(opened.destination.clone(), opened.rule.clone());
    let Opened {
        destination,
        mut upstream,
        idle_timeout,
        admitted: _admitted,
        ..
    } = opened;

    let checked = if accepted.spec.check_sni {
        let host = &destination.host;
        let hello_timeout = ctx.limits.header_timeout;
        sni::check(
            &mut client,
            early,
            &upstream,
            host,
            idle_timeout,
            hello_timeout,
        )
        .await
    } else {
        Ok(sni::Checked {
            prefix: early,
            server_name: None,
        })
    };
    let end = match checked {
        Ok(checked) => {
            recorder.record().requested_server_name = checked.server_name;
            entry
                .bytes_received
                .fetch_add(checked.prefix.len() as u64, Ordering::Relaxed);
            match upstream.write_all(&checked.prefix).await {
                Ok(()) => relay(&ctx, client, upstream, idle_timeout, entry, &mut recorder).await,
                Err(_) => End::UpstreamError,
            }
        }
        Err(refusal) => {
            recorder.record().requested_server_name = refusal.server_name;
            entry
                .bytes_received
                .fetch_add(refusal.received as u64, Ordering::Relaxed);
            let _ = client.shutdown().await;
            End::Refused(refusal.reason)
        }
    };

    let record = recorder.record();
    record.bytes_received = entry.bytes_received.load(Ordering::Relaxed);
    record.bytes_sent = entry.bytes_sent.load(Ordering::Relaxed);
    match end {
        End::Closed => {}
        End::ClientError => record
            .response_flags
            .insert(ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION),
        End::UpstreamError => record
            .response_flags
            .insert(ResponseFlags::UPSTREAM_CONNECTION_TERMINATION),
        End::IdleTimeout => record.connection_termination_details = Some("idle_timeout".into()),
        End::Revoked(reason) => record.connection_termination_details = Some(reason.into()),
        End::Refused(reason) => record.connection_termination_details = Some(reason.into()),
    }
    recorder.finish();
    drop(registration);
    active.dec();
}

/// The client's side of a tunnel: its own connection back from hyper (spliced to the
/// upstream when plain), or hyper's stream when it could not be unwrapped.
enum ClientIo {
    Socket(Downstream),
    Upgraded(TokioIo<Upgraded>),
}

/// The client's socket back from hyper, and the bytes read past the CONNECT head (a
/// client may send its ClientHello without waiting for the 200): hyper's read buffer,
/// then what the preface sniff read and hyper did not. The socket leaves the HTTP
/// connection's wrapper, whose lingering close would read tunnel bytes away.
fn client_side(upgraded: Upgraded) -> (ClientIo, Vec<u8>) {
    match upgraded.downcast::<TokioIo<Tracked<Rewind<Downstream>>>>() {
        Ok(parts) => {
            let (unread, socket) = parts.io.into_inner().into_inner().into_parts();
            let mut early = parts.read_buf.to_vec();
            early.extend_from_slice(&unread);
            (ClientIo::Socket(socket), early)
        }
        Err(upgraded) => (ClientIo::Upgraded(TokioIo::new(upgraded)), Vec::new()),
    }
}

macro_rules! each {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            ClientIo::Socket($s) => $e,
            ClientIo::Upgraded($s) => $e,
        }
    };
}

impl AsyncRead for ClientIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each!(self.get_mut(), s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each!(self.get_mut(), s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        each!(self.get_mut(), s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        each!(self.get_mut(), s => Pin::new(s).poll_shutdown(cx))
    }
}

/// How a CONNECT tunnel ended.
enum End {
    /// Both sides closed their half.
    Closed,
    /// Reading from or writing to the client failed (reset).
    ClientError,
    /// Reading from or writing to the upstream failed (reset).
    UpstreamError,
    /// No byte either way for the route's idle timeout.
    IdleTimeout,
    /// Closed by the gateway: a policy change denies it, or the drain timeout passed.
    Revoked(&'static str),
    /// The gateway refused what the client sent first (the SNI check), with its reason.
    Refused(&'static str),
}

/// Relays the tunnel with the shared tunnel relay, writing interim lines while it lasts.
async fn relay(
    ctx: &Context,
    client: ClientIo,
    upstream: TcpStream,
    idle_timeout: Duration,
    entry: &crate::connections::Entry,
    recorder: &mut Recorder,
) -> End {
    let settings = crate::relay::Settings {
        idle_timeout,
        report_every: ctx.audit_flush_interval,
    };
    let auditor = &ctx.recording.auditor;
    let report = || auditor.record(&super::tunnel::interim_record(recorder, entry));
    let ending = match client {
        ClientIo::Socket(socket) => {
            super::tunnel::carry(socket, upstream, entry, settings, report).await
        }
        ClientIo::Upgraded(io) => crate::relay::relay(io, upstream, entry, settings, report).await,
    };
    match ending {
        crate::relay::Ending::Closed => End::Closed,
        crate::relay::Ending::IdleTimeout => End::IdleTimeout,
        crate::relay::Ending::Revoked(reason) => End::Revoked(reason),
        crate::relay::Ending::Downstream(_) => End::ClientError,
        crate::relay::Ending::Upstream(_) => End::UpstreamError,
    }
}
