//! The `dns` listener: UDP and TCP on one port, every query answered from the policy
//! ([`answer`]) with one audit line and its metrics.
//!
//! Messages are read and written with hickory-proto. The serving loops are the
//! gateway's own rather than hickory-server's, because they need what its server has
//! no hook for: the gateway's drain and live listeners, a query rate per source, a cap
//! on TCP connections, and an audit line for every query, malformed ones included.

mod answer;
mod bind;
mod record;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::context::Context;
use crate::policy::{DnsListener, Listener};
use crate::rate::RateLimiter;
use crate::resolve::Forwarded;
use crate::source::Source;
use answer::{Asked, Decided, Outcome, Reply};
pub use bind::{bind, Sockets};
use record::Meta;

/// Forwarded questions waiting for the name servers at once, per listener; more are
/// answered SERVFAIL rather than queued without bound.
const FORWARDS_IN_FLIGHT: usize = 1024;

/// How long a forwarded question may wait for the name servers.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// A DNS-over-TCP connection with no query for this long is closed (RFC 7766 asks
/// servers to close idle connections within seconds).
const TCP_IDLE: Duration = Duration::from_secs(10);

/// The UDP payload answered without EDNS, and the most any EDNS client is given.
const UDP_MIN: usize = 512;
const UDP_MAX: usize = 4096;

/// One `dns` listener's serving state.
struct Server {
    ctx: Arc<Context>,
    spec: Arc<Listener>,
    settings: DnsListener,
    limiter: RateLimiter<IpAddr>,
    forwards: Arc<Semaphore>,
    tcp_slots: Arc<Semaphore>,
    /// Client → the gateway address it reaches, for a listener on a wildcard address.
    routes: Mutex<std::collections::HashMap<IpAddr, IpAddr>>,
}

/// What to do with one message.
enum Handled {
    Send(Vec<u8>),
    /// Not answered: too short to be a query, or a response sent to us.
    Drop,
    Forward(Box<Pending>),
}

/// A question waiting for the name servers.
struct Pending {
    meta: Meta,
    request: Message,
    name: String,
    rtype: hickory_proto::rr::RecordType,
    reply: Reply,
    _permit: OwnedSemaphorePermit,
}

/// Serves queries on `sockets` until `stop` is cancelled or the gateway drains; then
/// answers the datagrams already queued.
pub fn spawn(
    ctx: Arc<Context>,
    spec: Arc<Listener>,
    sockets: Sockets,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let Some(settings) = spec.dns.clone() else {
        tracing::error!(listener = %spec.name, "dns listener without dns settings");
        return tokio::spawn(async {});
    };
    let limits = &ctx.limits;
    let per_second = limits.dns_queries_per_source;
    let server = Arc::new(Server {
        limiter: RateLimiter::new(per_second, per_second),
        forwards: Arc::new(Semaphore::new(FORWARDS_IN_FLIGHT)),
        tcp_slots: Arc::new(Semaphore::new(limits.dns_tcp_connections.max(1))),
        routes: Mutex::new(std::collections::HashMap::new()),
        ctx,
        spec,
        settings,
    });
    server
        .ctx
        .egress
        .metrics
        .connection_refused_at_zero(&server.spec.name, "dns_tcp_connections");
    let Sockets { udp, tcp } = sockets;
    tokio::spawn(async move {
        let udp = Arc::clone(&server).serve_udp(Arc::new(udp), stop.clone());
        let tcp = Arc::clone(&server).serve_tcp(tcp, stop);
        tokio::join!(udp, tcp);
    })
}

impl Server {
    async fn serve_udp(self: Arc<Self>, socket: Arc<UdpSocket>, stop: CancellationToken) {
        let local = socket
            .local_addr()
            .unwrap_or(SocketAddr::new(self.spec.address, self.spec.port));
        let mut buf = vec![0u8; 65_535];
        loop {
            let received = tokio::select! {
                () = stop.cancelled() => break,
                () = self.ctx.drain.cancelled() => break,
                received = socket.recv_from(&mut buf) => received,
            };
            // Errors here are ICMP reports about earlier answers: nothing to do.
            if let Ok((len, peer)) = received {
                self.datagram(&socket, &buf[..len], peer, local).await;
            }
        }
        while let Some(Ok((len, peer))) =
            futures_util::FutureExt::now_or_never(socket.recv_from(&mut buf))
        {
            self.datagram(&socket, &buf[..len], peer, local).await;
        }
    }

    async fn datagram(
        self: &Arc<Self>,
        socket: &Arc<UdpSocket>,
        bytes: &[u8],
        peer: SocketAddr,
        local: SocketAddr,
    ) {
        let meta = Meta::new(
            record::Transport::Udp,
            peer,
            self.reached(local, peer),
            bytes,
        );
        match self.handle(bytes, meta) {
            Handled::Send(answer) => {
                let _ = socket.send_to(&answer, peer).await;
            }
            Handled::Drop => {}
            Handled::Forward(pending) => {
                let server = Arc::clone(self);
                let socket = Arc::clone(socket);
                self.ctx.tasks.spawn(async move {
                    let answer = server.forward(*pending).await;
                    let _ = socket.send_to(&answer, peer).await;
                });
            }
        }
    }

    async fn serve_tcp(self: Arc<Self>, listener: TcpListener, stop: CancellationToken) {
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => break,
                () = self.ctx.drain.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let Ok((stream, peer)) = accepted else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let Ok(permit) = Arc::clone(&self.tcp_slots).try_acquire_owned() else {
                self.ctx
                    .egress
                    .metrics
                    .connection_refused(&self.spec.name, "dns_tcp_connections");
                continue;
            };
            let server = Arc::clone(&self);
            let stop = stop.clone();
            self.ctx.tasks.spawn(async move {
                server.connection(stream, peer, stop).await;
                drop(permit);
            });
        }
    }

    /// One DNS-over-TCP connection: length-prefixed queries, answered in turn.
    async fn connection(
        self: Arc<Self>,
        mut stream: TcpStream,
        peer: SocketAddr,
        stop: CancellationToken,
    ) {
        let active = self
            .ctx
            .egress
            .metrics
            .connections_active
            .with_label_values(&[&self.spec.name]);
        active.inc();
        let local = stream
            .local_addr()
            .unwrap_or(SocketAddr::new(self.spec.address, self.spec.port));
        let mut buf = Vec::new();
        loop {
            let mut len = [0u8; 2];
            let read = tokio::select! {
                () = stop.cancelled() => break,
                () = self.ctx.drain.cancelled() => break,
                read = tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)) => read,
            };
            if !matches!(read, Ok(Ok(_))) {
                break;
            }
            buf.resize(usize::from(u16::from_be_bytes(len)), 0);
            let patience = self.ctx.limits.header_timeout;
            if !matches!(
                tokio::time::timeout(patience, stream.read_exact(&mut buf)).await,
                Ok(Ok(_))
            ) {
                break;
            }
            let meta = Meta::new(record::Transport::Tcp, peer, local, &buf);
            let answer = match self.handle(&buf, meta) {
                Handled::Send(answer) => answer,
                Handled::Drop => continue,
                Handled::Forward(pending) => self.forward(*pending).await,
            };
            let Ok(len) = u16::try_from(answer.len()) else {
                break;
            };
            let mut framed = Vec::with_capacity(answer.len() + 2);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(&answer);
            if stream.write_all(&framed).await.is_err() {
                break;
            }
        }
        active.dec();
    }

    /// Decides one message; what needs the name servers is left to [`Server::forward`].
    fn handle(&self, bytes: &[u8], meta: Meta) -> Handled {
        // A header is 12 bytes; a message with the response bit set is not a question.
        if bytes.len() < 12 || bytes[2] & 0x80 != 0 {
            self.dropped(&meta);
            return Handled::Drop;
        }
        let request = match Message::from_vec(bytes) {
            Ok(request) if request.message_type() == MessageType::Query => request,
            Ok(_) => {
                self.dropped(&meta);
                return Handled::Drop;
            }
            Err(_) => {
                let id = u16::from_be_bytes([bytes[0], bytes[1]]);
                let message = Message::error_msg(id, OpCode::Query, ResponseCode::FormErr);
                let reply = Reply {
                    message,
                    decided: Decided::Malformed,
                    rule: None,
                    detail: Some("malformed"),
                };
                return Handled::Send(self.finish(&meta, None, reply));
            }
        };
        let refuse = |detail, decided| {
            let mut message = answer::response_to(&request);
            message.set_response_code(ResponseCode::Refused);
            Reply {
                message,
                decided,
                rule: None,
                detail: Some(detail),
            }
        };
        if self.limiter.take(meta.peer.ip()).is_err() {
            let reply = refuse("rate_limited", Decided::RateLimited);
            return Handled::Send(self.finish(&meta, Some(&request), reply));
        }
        let audit_failing = self
            .ctx
            .egress
            .audit_gate
            .as_ref()
            .is_some_and(|sink| sink.failing_since().is_some());
        if audit_failing {
            let reply = refuse("audit_log_unavailable", Decided::Deny);
            return Handled::Send(self.finish(&meta, Some(&request), reply));
        }
        let policy = self.ctx.egress.store.current();
        let source = Source::from_addr(meta.peer);
        let asked = Asked {
            policy: &policy,
            settings: &self.settings,
            source: &source,
            local: meta.local.ip(),
        };
        match answer::answer(&asked, &request) {
            Outcome::Reply(reply) => Handled::Send(self.finish(&meta, Some(&request), reply)),
            Outcome::Forward {
                name,
                rtype,
                mut reply,
            } => match Arc::clone(&self.forwards).try_acquire_owned() {
                Ok(permit) => Handled::Forward(Box::new(Pending {
                    meta,
                    request,
                    name,
                    rtype,
                    reply,
                    _permit: permit,
                })),
                Err(_) => {
                    reply.message.set_response_code(ResponseCode::ServFail);
                    reply.detail = Some("forward_queue_full");
                    Handled::Send(self.finish(&meta, Some(&request), reply))
                }
            },
        }
    }

    /// Asks the name servers a question no rule decides, and answers with theirs.
    async fn forward(&self, pending: Pending) -> Vec<u8> {
        let Pending {
            meta,
            request,
            name,
            rtype,
            mut reply,
            ..
        } = pending;
        let resolver = &self.ctx.egress.resolver;
        let forwarded = tokio::time::timeout(FORWARD_TIMEOUT, resolver.forward(&name, rtype))
            .await
            .unwrap_or_else(|_| Forwarded::Failed("timeout".to_owned()));
        match forwarded {
            Forwarded::Records(records) => {
                reply.message.add_answers(records);
            }
            Forwarded::NotFound => {
                reply.message.set_response_code(ResponseCode::NXDomain);
            }
            Forwarded::Failed(_) => {
                reply.message.set_response_code(ResponseCode::ServFail);
                reply.detail.get_or_insert("upstream_failure");
            }
        }
        self.finish(&meta, Some(&request), reply)
    }

    /// Encodes `reply` for its transport (truncated, TC set, when it does not fit a
    /// UDP answer), and writes its audit line and metrics.
    fn finish(&self, meta: &Meta, request: Option<&Message>, reply: Reply) -> Vec<u8> {
        let limit = match meta.transport {
            record::Transport::Udp => request
                .map_or(UDP_MIN, |r| usize::from(r.max_payload()))
                .clamp(UDP_MIN, UDP_MAX),
            record::Transport::Tcp => usize::from(u16::MAX),
        };
        let mut bytes = reply.message.to_vec().unwrap_or_default();
        let mut truncated = false;
        if bytes.len() > limit {
            bytes = reply.message.truncate().to_vec().unwrap_or_default();
            truncated = true;
        }
        if bytes.is_empty() {
            let id = reply.message.id();
            let failed = Message::error_msg(id, OpCode::Query, ResponseCode::ServFail);
            bytes = failed.to_vec().unwrap_or_default();
        }
        record::write(
            &self.ctx,
            &self.spec.name,
            meta,
            request,
            &reply,
            &bytes,
            truncated,
        );
        bytes
    }

    fn dropped(&self, meta: &Meta) {
        let metrics = &self.ctx.egress.metrics.dns_queries;
        metrics.observe(
            &self.spec.name,
            "-",
            "dropped",
            "malformed",
            meta.started.elapsed(),
        );
    }

    /// The gateway address a client reaches: the listener's own, or for a listener on
    /// a wildcard address the one the kernel routes answers from.
    fn reached(&self, local: SocketAddr, peer: SocketAddr) -> SocketAddr {
        if !local.ip().is_unspecified() {
            return local;
        }
        let mut routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(ip) = routes.get(&peer.ip()) {
            return SocketAddr::new(*ip, local.port());
        }
        let Some(ip) = route_to(peer) else {
            return local;
        };
        if routes.len() >= crate::rate::MAX_KEYS {
            routes.clear();
        }
        routes.insert(peer.ip(), ip);
        SocketAddr::new(ip, local.port())
    }
}

/// The source address the kernel would use to reach `peer`: a connected UDP socket
/// sends nothing, but its local address is the route's.
fn route_to(peer: SocketAddr) -> Option<IpAddr> {
    let any: SocketAddr = match peer {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = std::net::UdpSocket::bind(any).ok()?;
    socket.connect(peer).ok()?;
    socket.local_addr().ok().map(|a| a.ip())
}
