//! Listeners: bind the declared ports and accept, one task per connection, until the
//! gateway drains. Each protocol's connection handling lives in its own module.

mod activity;
pub mod admission;
pub mod certificates;
pub mod connect;
mod context;
pub mod dns;
pub mod downstream;
mod framing;
#[doc(hidden)]
pub mod fuzzing;
mod headers;
pub mod http;
mod http_body;
mod http_conn;
mod preface;
pub mod proxy;
mod reply;
pub mod tcp;
pub mod tls;
pub mod tls_in;
mod tunnel;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::policy::{Listener, Protocol};
use crate::source::Source;

pub use context::{Accepted, Context};
pub use downstream::Downstream;
use tls_in::TlsTerminator;

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
}

/// The accept queue asked of the kernel when `limits.backlog` is not set and
/// `net.core.somaxconn` cannot be read: a burst of new connections waits there rather
/// than being refused.
const BACKLOG: u32 = 4096;

/// The accept queue every listening socket asks for: `limits.backlog`, else the
/// system's `net.core.somaxconn` (what the kernel would cap it to anyway).
pub fn backlog(configured: Option<u32>) -> u32 {
    configured.unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(BACKLOG)
    })
}

/// Where a declared listener binds: its own address, the bootstrap `bind_address` (same
/// port), or (tests) an ephemeral port on `override_ip`.
pub fn bind_addr(
    spec: &Listener,
    bind_address: Option<IpAddr>,
    override_ip: Option<IpAddr>,
) -> SocketAddr {
    // A listener routed by destination address keeps its port under a test override:
    // the rules it serves name that port.
    let routed = spec.route_by == crate::policy::RouteBy::DestinationAddress;
    match (override_ip, bind_address) {
        (Some(_), _) if routed => SocketAddr::new(spec.address, spec.port),
        (Some(ip), _) => SocketAddr::new(ip, 0),
        (None, Some(ip)) => SocketAddr::new(ip, spec.port),
        (None, None) => SocketAddr::new(spec.address, spec.port),
    }
}

/// Who serves the connections of a TCP listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// HTTP/1.1 and HTTP/2: `http` listeners, and `connect` ones (CONNECT and
    /// absolute-form requests).
    Http,
    /// TLS passthrough by SNI.
    Tls,
    /// Plain TCP.
    Tcp,
}

/// A declared listener's sockets, bound and not yet accepting.
#[derive(Debug)]
pub enum Bound {
    /// One TCP socket, and who serves its connections: every protocol but DNS.
    Stream(TcpListener, Served),
    /// UDP and TCP on one port.
    Dns(dns::Sockets),
}

impl Bound {
    /// The address bound.
    ///
    /// Fails as `getsockname` does.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            Bound::Stream(listener, _) => listener.local_addr(),
            Bound::Dns(sockets) => sockets.local_addr(),
        }
    }
}

/// Binds a declared listener at `addr` with SO_REUSEPORT, so that a new gateway process
/// (an upgrade, a restart) can bind the same port before the old one stops accepting,
/// and a changed listener can bind anew before its old socket closes.
///
/// Fails when the address cannot be bound.
pub fn bind(spec: &Listener, addr: SocketAddr, backlog: u32) -> Result<Bound, ListenError> {
    let bound = match spec.protocol {
        Protocol::Dns => dns::bind(addr, backlog).map(Bound::Dns),
        Protocol::Http | Protocol::Connect => stream(addr, backlog, Served::Http),
        Protocol::Tls => stream(addr, backlog, Served::Tls),
        Protocol::Tcp => stream(addr, backlog, Served::Tcp),
    };
    bound.map_err(|source| ListenError::Bind {
        name: spec.name.clone(),
        addr,
        source,
    })
}

fn stream(addr: SocketAddr, backlog: u32, served: Served) -> std::io::Result<Bound> {
    reuseport_listener(addr, backlog).map(|listener| Bound::Stream(listener, served))
}

/// A listening socket on `addr` with SO_REUSEADDR and SO_REUSEPORT, which takes every
/// new connection of the port from the sockets bound before it ([`steer_to_newest`]).
///
/// Fails when the address cannot be bound.
pub fn reuseport_listener(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(backlog)?;
    if let Err(error) = steer_to_newest(&listener) {
        tracing::debug!(%addr, %error, "cannot steer new connections to the newest socket");
    }
    Ok(listener)
}

/// Makes the kernel hand new connections of the port to the socket that joined its
/// SO_REUSEPORT group last. Without this, the kernel spreads connections over the old
/// process's socket and the new one, and those still queued in the old socket when it
/// closes are reset. The classic BPF program returns index 1: while an old socket
/// (index 0) and this one (index 1) share the port, every connection comes here; once
/// this socket is alone, index 1 is out of range and the kernel falls back to its own
/// choice, which is then this socket.
#[cfg(target_os = "linux")]
fn steer_to_newest(socket: &impl std::os::fd::AsFd) -> nix::Result<()> {
    use nix::libc::{sock_filter, sock_fprog, BPF_K, BPF_RET};
    let mut program = [sock_filter {
        code: (BPF_RET | BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: 1,
    }];
    let fprog = sock_fprog {
        len: 1,
        filter: program.as_mut_ptr(),
    };
    nix::sys::socket::setsockopt(
        socket,
        nix::sys::socket::sockopt::AttachReusePortCbpf,
        &fprog,
    )
}

#[cfg(not(target_os = "linux"))]
fn steer_to_newest<T>(_: &T) -> std::io::Result<()> {
    Ok(())
}

/// Accepts connections on `listener` until `stop` is cancelled or the gateway drains;
/// then takes what is already queued on the socket before closing it, so that a
/// connection the kernel accepted is served rather than reset.
pub fn spawn(
    ctx: Arc<Context>,
    spec: Listener,
    bound: Bound,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    match bound {
        Bound::Stream(listener, served) => {
            tokio::spawn(accept_loop(ctx, Arc::new(spec), listener, served, stop))
        }
        Bound::Dns(sockets) => dns::spawn(ctx, Arc::new(spec), sockets, stop),
    }
}

async fn accept_loop(
    ctx: Arc<Context>,
    spec: Arc<Listener>,
    listener: TcpListener,
    served: Served,
    stop: CancellationToken,
) {
    let name: Arc<str> = Arc::from(spec.name.as_str());
    let tls = spec.tls.as_ref().map(|tls| {
        let alpn: &[&[u8]] = match spec.protocol {
            Protocol::Http => &[b"h2", b"http/1.1"],
            Protocol::Connect => &[b"http/1.1"],
            _ => &[],
        };
        Arc::new(TlsTerminator::new(
            &spec.name,
            tls,
            ctx.egress.store.dir(),
            alpn,
        ))
    });
    if let Some(tls) = &tls {
        ctx.certificates.track(tls);
        // Loaded now so a missing certificate is in the log at start; connections are
        // refused (with an audit line) until it loads.
        let _ = tls.load().await;
    }
    let active = ctx
        .egress
        .metrics
        .connections_active
        .with_label_values(&[&spec.name]);
    // A listener bound to one address gives every connection that local address; only a
    // wildcard one needs to ask the kernel per connection (as nginx does).
    let bound = listener
        .local_addr()
        .ok()
        .filter(|addr| !addr.ip().is_unspecified());
    let admission = admission::Admission::new(
        ctx.limits.max_connections,
        ctx.limits.max_connections_per_source,
        ctx.limits.max_connections_per_identity,
    );
    for reason in [
        admission::Refused::Listener,
        admission::Refused::Source,
        admission::Refused::Identity,
    ] {
        ctx.egress
            .metrics
            .connection_refused_at_zero(&spec.name, reason.as_str());
    }
    let dispatch = |stream: tokio::net::TcpStream, peer: SocketAddr| {
        let _ = stream.set_nodelay(true);
        let ctx_for_task = Arc::clone(&ctx);
        let name = Arc::clone(&name);
        let spec = Arc::clone(&spec);
        let active = active.clone();
        let tls = tls.clone();
        let admission = Arc::clone(&admission);
        ctx.tasks.clone().spawn(async move {
            active.inc();
            let conn = Conn {
                listener: name,
                spec,
                served,
                tls,
                peer,
                bound,
            };
            serve(ctx_for_task, conn, admission, stream).await;
            active.dec();
        });
    };
    let accept_failures = egress_admin::throttle::Throttle::new(Duration::from_secs(1));
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            () = ctx.drain.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => dispatch(stream, peer),
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning, and
                // say so once a second with how many more failed.
                if let Some(suppressed) = accept_failures.allow() {
                    tracing::warn!(listener = %spec.name, error = %e, suppressed, "accept failed");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // The accept queue: connections the kernel completed before the socket closes.
    let mut queued = 0usize;
    while let Some(Ok((stream, peer))) = futures_util::FutureExt::now_or_never(listener.accept()) {
        dispatch(stream, peer);
        queued += 1;
    }
    if queued > 0 {
        tracing::debug!(listener = %spec.name, queued, "served the connections queued when the listener closed");
    }
}

/// Where a connection came in, as the accept loop knows it.
struct Conn {
    listener: Arc<str>,
    spec: Arc<Listener>,
    served: Served,
    tls: Option<Arc<TlsTerminator>>,
    peer: SocketAddr,
    bound: Option<SocketAddr>,
}

/// One accepted connection: the PROXY header if the listener expects one, the
/// connection limits, the TLS handshake if it terminates TLS (the client certificate's
/// identity joins the source), then the listener's protocol.
async fn serve(
    ctx: Arc<Context>,
    conn: Conn,
    admission: Arc<admission::Admission>,
    mut stream: tokio::net::TcpStream,
) {
    let Conn {
        listener,
        spec,
        served,
        tls,
        peer,
        bound,
    } = conn;
    let local = bound.unwrap_or_else(|| {
        stream
            .local_addr()
            .unwrap_or(SocketAddr::new(spec.address, spec.port))
    });
    let mut source = Source::from_addr(peer);
    if spec.proxy_protocol {
        match proxy::read_header(&mut stream, ctx.limits.header_timeout).await {
            Ok(Some(client)) => source.addr = client,
            Ok(None) => {}
            Err(e) => {
                proxy::refuse(&ctx, &listener, peer, local, &e);
                return;
            }
        }
    }
    // Held for the connection's life: dropping it lets the next connection in.
    let _admitted = match admission.admit(source.addr.ip()) {
        Ok(admitted) => admitted,
        Err(why) => {
            admission::refuse(&ctx, &spec, stream, source.addr, local, why).await;
            return;
        }
    };
    // The identity's admission is held for the connection's life, like `_admitted`.
    let (io, _identity_admitted) = match tls {
        None => (Downstream::Plain(stream), None),
        Some(tls) => match tls.accept(stream, ctx.limits.header_timeout).await {
            Ok(terminated) => {
                source.identity = terminated.identity;
                let admitted = match source.identity.as_deref() {
                    Some(identity) => match admission.admit_identity(identity) {
                        Ok(admitted) => admitted,
                        Err(_) => {
                            admission::refuse_identity(&ctx, &spec, &source, local);
                            return;
                        }
                    },
                    None => None,
                };
                (Downstream::Tls(Box::new(terminated.stream)), admitted)
            }
            Err(e) => {
                tls_in::refuse(&ctx, &listener, &source, local, &e);
                return;
            }
        },
    };
    let accepted = Accepted {
        listener,
        spec,
        source,
        local,
    };
    match served {
        Served::Http => http_conn::serve_connection(ctx, accepted, io).await,
        Served::Tls => tls::serve_connection(ctx, accepted, io).await,
        Served::Tcp => tcp::serve_connection(ctx, accepted, io).await,
    }
}
