//! What every tunnel listener (tls, tcp, connect) does around the bytes: register the
//! connection, decide its destination, connect upstream, relay, and write its audit
//! lines — interim ones while it lasts, and one when it ends, whatever ends it.

use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::context::{Accepted, Context};
use super::downstream::Downstream;
use crate::audit::{AuditRecord, Recorder, ResponseFlags};
use crate::connections::{Entry, Kind, Registration};
use crate::egress::limits::Admitted;
use crate::egress::{Destination, Leg, Outbound};
use crate::error::EgressError;
use crate::relay::{self, Ending, Settings};
use crate::upstream::connect_tcp;

/// RESPONSE_CODE_DETAILS of an interim line: the tunnel is still open, and its bytes
/// and duration are the totals so far.
pub const TUNNEL_INTERIM: &str = "tunnel_interim";
/// CONNECTION_TERMINATION_DETAILS of a tunnel closed for `idle_timeout`.
pub const IDLE_TIMEOUT: &str = "idle_timeout";

/// One tunnel from accept to its last audit line.
#[derive(Debug)]
pub(crate) struct Tunnel {
    ctx: Arc<Context>,
    accepted: Accepted,
    registration: Registration,
    recorder: Recorder,
    /// Counted by its rule's `max_concurrent` while the tunnel lasts.
    admitted: Option<Admitted>,
    /// Counted in `egress_tunnels_opened_total` already.
    counted: bool,
}

/// An upstream connection made for a tunnel.
#[derive(Debug)]
pub(crate) struct Connected {
    /// The socket.
    pub stream: TcpStream,
    /// The rule's idle timeout.
    pub idle_timeout: Duration,
}

impl Tunnel {
    /// Registers the connection and starts its audit record.
    pub fn open(ctx: Arc<Context>, accepted: Accepted) -> Self {
        let mut recorder =
            Recorder::start(Arc::clone(&ctx.recording), Arc::clone(&accepted.listener));
        let record = recorder.record();
        record.downstream_local_address = Some(accepted.local);
        record.downstream_remote_address = Some(accepted.source.addr);
        record.downstream_peer_uri_san = accepted.source.identity.clone();
        Self::adopt(ctx, accepted, recorder)
    }

    /// Registers a tunnel whose record is already started: a CONNECT request's.
    pub fn adopt(ctx: Arc<Context>, accepted: Accepted, recorder: Recorder) -> Self {
        let registration = ctx.connections.register(
            Arc::clone(&accepted.listener),
            accepted.source.clone(),
            accepted.local,
            Kind::Tunnel,
        );
        Self {
            ctx,
            accepted,
            registration,
            recorder,
            admitted: None,
            counted: false,
        }
    }

    /// Gives up the tunnel before it opened: its record, for a CONNECT refusal that is
    /// answered over HTTP and written with the reply.
    pub fn into_recorder(self) -> Recorder {
        self.recorder
    }

    /// The audit record, to fill in (e.g. REQUESTED_SERVER_NAME).
    pub fn record(&mut self) -> &mut AuditRecord {
        self.recorder.record()
    }

    /// The listener's name.
    pub fn listener(&self) -> &str {
        &self.accepted.listener
    }

    /// The registry entry: byte counters and revocation.
    pub fn entry(&self) -> &Arc<Entry> {
        self.registration.entry()
    }

    /// Ends the tunnel before any upstream: writes its line with `flags` and `details`
    /// (CONNECTION_TERMINATION_DETAILS).
    pub fn refuse(mut self, flags: ResponseFlags, details: &str) {
        let record = self.recorder.record();
        record.response_flags.insert(flags);
        record.connection_termination_details = Some(details.to_owned());
        self.finish();
    }

    /// Ends the tunnel on an error of the egress path (denied, refused address, DNS,
    /// connect failure): its flag, its details, and the upstream tried if any.
    pub fn fail(mut self, error: &EgressError) {
        self.recorder.note_failure(error);
        self.recorder.record().connection_termination_details = Some(error.details().into_owned());
        self.finish();
    }

    /// Runs the egress sequence for `destination` and connects; with
    /// `literal_needs_rule`, an IP literal needs a rule that lists it.
    ///
    /// Fails with the denial or the egress error; nothing is written until the caller
    /// passes it to [`Tunnel::fail`] (a CONNECT listener answers the client first).
    pub async fn connect(
        &mut self,
        destination: Destination,
        literal_needs_rule: bool,
    ) -> Result<Connected, EgressError> {
        let outbound = Outbound {
            destination: &destination,
            listener: &self.accepted.listener,
            source: &self.accepted.source,
            leg: Leg::Tunnel {
                entry: self.registration.entry(),
                literal_needs_rule,
            },
        };
        let egress = &self.ctx.egress;
        let opened = egress.open(outbound, &mut self.recorder).await?;
        let route = opened.route();
        let (stream, endpoints) = connect_tcp(
            &opened.addrs,
            route.connect_timeout,
            &egress.metrics.upstream,
        )
        .await?;
        let idle_timeout = route.idle_timeout;
        drop(route);
        let record = self.recorder.record();
        record.upstream_host = Some(endpoints.peer);
        record.upstream_local_address = Some(endpoints.local);
        self.admitted = Some(opened.admitted);
        Ok(Connected {
            stream,
            idle_timeout,
        })
    }

    /// Counts the tunnel as opened (once): it relays from now on.
    pub fn opened(&mut self) {
        if !std::mem::replace(&mut self.counted, true) {
            self.recorder.tunnel_opened();
        }
    }

    /// Writes `first` (bytes already read from the client, e.g. its ClientHello) to the
    /// upstream, then relays until the tunnel ends, and writes the final line.
    pub async fn relay(mut self, client: Client, mut upstream: Connected, first: &[u8]) {
        self.opened();
        if let Err(e) = upstream.stream.write_all(first).await {
            self.end(Ending::Upstream(e));
            return;
        }
        let settings = Settings {
            idle_timeout: upstream.idle_timeout,
            report_every: self.ctx.audit_flush_interval,
        };
        let Self {
            ctx,
            registration,
            recorder,
            ..
        } = &mut self;
        let entry = registration.entry();
        let auditor = &ctx.recording.auditor;
        let ending = carry(client, upstream.stream, entry, settings, || {
            auditor.record(&interim_record(recorder, entry));
        })
        .await;
        self.end(ending);
    }

    /// Writes the final line for how the relay ended.
    fn end(mut self, ending: Ending) {
        let record = self.recorder.record();
        match ending {
            Ending::Closed => {}
            Ending::IdleTimeout => {
                record.connection_termination_details = Some(IDLE_TIMEOUT.to_owned());
            }
            Ending::Revoked(reason) => {
                record.connection_termination_details = Some(reason.to_owned());
            }
            Ending::Downstream(e) => {
                record
                    .response_flags
                    .insert(ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION);
                tracing::debug!(peer = %self.accepted.source.addr, error = %e, "tunnel client failed");
            }
            Ending::Upstream(e) => {
                record
                    .response_flags
                    .insert(ResponseFlags::UPSTREAM_CONNECTION_TERMINATION);
                record.upstream_transport_failure_reason = Some(e.to_string());
            }
        }
        self.finish();
    }

    fn finish(mut self) {
        let entry = self.registration.entry();
        let received = entry.bytes_received.load(Ordering::Relaxed);
        let sent = entry.bytes_sent.load(Ordering::Relaxed);
        let record = self.recorder.record();
        record.bytes_received = received;
        record.bytes_sent = sent;
        self.recorder.finish();
    }
}

/// Relays a tunnel: spliced in the kernel when the client's side is a plain socket,
/// copied through the gateway when the listener terminated its TLS or hyper keeps it.
async fn carry(
    client: Client,
    upstream: TcpStream,
    entry: &Entry,
    settings: Settings,
    report: impl FnMut(),
) -> Ending {
    match client {
        Client::Socket(Downstream::Plain(socket)) => {
            relay::relay_sockets(socket, upstream, entry, settings, report).await
        }
        terminated => relay::relay(terminated, upstream, entry, settings, report).await,
    }
}

/// The client's side of a tunnel: its connection, or hyper's stream of a CONNECT whose
/// connection could not be unwrapped.
pub(crate) enum Client {
    /// The connection (plain, or TLS the listener terminated).
    Socket(Downstream),
    /// What hyper hands back after a CONNECT.
    Upgraded(TokioIo<Upgraded>),
}

impl From<Downstream> for Client {
    fn from(io: Downstream) -> Self {
        Client::Socket(io)
    }
}

macro_rules! each {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            Client::Socket($s) => $e,
            Client::Upgraded($s) => $e,
        }
    };
}

impl AsyncRead for Client {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each!(self.get_mut(), s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Client {
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

/// The interim line of a tunnel still open: its record so far, marked `tunnel_interim`,
/// with the bytes and duration up to now.
fn interim_record(recorder: &mut Recorder, entry: &Entry) -> AuditRecord {
    let mut line = recorder.record().clone();
    line.duration = Some(recorder.elapsed());
    line.bytes_received = entry.bytes_received.load(Ordering::Relaxed);
    line.bytes_sent = entry.bytes_sent.load(Ordering::Relaxed);
    line.response_code_details = Some(TUNNEL_INTERIM.into());
    line
}
