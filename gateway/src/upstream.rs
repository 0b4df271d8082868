//! The only place that opens upstream sockets: TCP connect with the route's timeout to
//! addresses the guard has passed, and a pool of HTTP/1.1 keep-alive connections.
//!
//! The pool is keyed by the address connected to, not the name: a name is resolved and
//! guarded for every request, and only then can a pooled connection to that address be
//! reused, so DNS changes and policy changes take effect without draining the pool.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::error::EgressError;

/// The body of a request sent upstream.
pub type UpstreamBody = BoxBody<Bytes, hyper::Error>;

/// How long an unused pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per upstream address.
const POOL_MAX_IDLE_PER_ADDR: usize = 256;

/// An upstream connection's two ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoints {
    /// The upstream address (UPSTREAM_HOST).
    pub peer: SocketAddr,
    /// Our side (UPSTREAM_LOCAL_ADDRESS).
    pub local: SocketAddr,
}

/// Opens a TCP connection to the first of `addrs` that accepts, each attempt bounded by
/// `timeout`.
///
/// Fails with the last address's error: refused, unreachable, or timed out.
#[expect(
    clippy::disallowed_methods,
    reason = "the one place that connects upstream; callers pass guarded addresses only"
)]
pub async fn connect_tcp(
    addrs: &[SocketAddr],
    timeout: Duration,
) -> Result<(TcpStream, Endpoints), EgressError> {
    let mut last = None;
    for &addr in addrs {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                // Small writes (request heads, TLS records) must not wait for ACKs.
                let _ = stream.set_nodelay(true);
                let local = stream.local_addr().unwrap_or(addr);
                return Ok((stream, Endpoints { peer: addr, local }));
            }
            Ok(Err(e)) => {
                last = Some(EgressError::Connect {
                    addr,
                    reason: io_reason(&e),
                })
            }
            Err(_) => last = Some(EgressError::ConnectTimeout { addr, timeout }),
        }
    }
    Err(last.unwrap_or(EgressError::Overflow(
        "no upstream address to connect to".to_owned(),
    )))
}

fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::ConnectionRefused => "connection_refused".to_owned(),
        ErrorKind::ConnectionReset => "connection_reset".to_owned(),
        ErrorKind::TimedOut => "connect_timeout".to_owned(),
        ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => "unreachable".to_owned(),
        _ => e.to_string(),
    }
}

struct Idle {
    sender: http1::SendRequest<UpstreamBody>,
    endpoints: Endpoints,
    since: Instant,
}

/// Pooled HTTP/1.1 connections to upstreams.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<HashMap<SocketAddr, Vec<Idle>>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").finish_non_exhaustive()
    }
}

/// A connection lent for one request; give it back with [`Lease::release`] once the
/// response body has been read to its end.
pub struct Lease {
    pool: Arc<Pool>,
    sender: http1::SendRequest<UpstreamBody>,
    endpoints: Endpoints,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// Returns the connection to the pool for the next request.
    pub fn release(self) {
        self.pool.put(Idle {
            sender: self.sender,
            endpoints: self.endpoints,
            since: Instant::now(),
        });
    }
}

impl Pool {
    /// An empty pool.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn put(&self, idle: Idle) {
        if idle.sender.is_closed() {
            return;
        }
        let mut map = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let list = map.entry(idle.endpoints.peer).or_default();
        if list.len() < POOL_MAX_IDLE_PER_ADDR {
            list.push(idle);
        }
    }

    fn take(&self, addr: SocketAddr) -> Option<Idle> {
        let mut map = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let list = map.get_mut(&addr)?;
        while let Some(idle) = list.pop() {
            if !idle.sender.is_closed() && idle.since.elapsed() < POOL_IDLE_TIMEOUT {
                return Some(idle);
            }
        }
        None
    }

    /// Drops idle connections that expired or were closed by the upstream.
    pub fn purge(&self) {
        let mut map = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, list| {
            list.retain(|i| !i.sender.is_closed() && i.since.elapsed() < POOL_IDLE_TIMEOUT);
            !list.is_empty()
        });
    }

    /// Idle connections held now.
    pub fn idle_count(&self) -> usize {
        let map = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        map.values().map(Vec::len).sum()
    }

    /// Sends `request` to one of `addrs`, on a pooled connection when one is idle, else
    /// on a new one. A request that a stale pooled connection could not even send is
    /// sent again on a fresh connection; nothing is sent twice.
    ///
    /// Fails when no connection can be made, or the upstream fails before answering.
    pub async fn send(
        self: &Arc<Self>,
        addrs: &[SocketAddr],
        connect_timeout: Duration,
        mut request: Request<UpstreamBody>,
    ) -> Result<(Response<Incoming>, Lease), EgressError> {
        while let Some(mut idle) = addrs.iter().find_map(|a| self.take(*a)) {
            if idle.sender.ready().await.is_err() {
                continue;
            }
            match idle.sender.try_send_request(request).await {
                Ok(response) => return Ok((response, self.lease(idle.sender, idle.endpoints))),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(upstream_error(idle.endpoints.peer, e.into_error())),
                },
            }
        }
        let (stream, endpoints) = connect_tcp(addrs, connect_timeout).await?;
        let (mut sender, conn) = http1::Builder::new()
            .handshake::<_, UpstreamBody>(TokioIo::new(stream))
            .await
            .map_err(|e| upstream_error(endpoints.peer, e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        match sender.send_request(request).await {
            Ok(response) => Ok((response, self.lease(sender, endpoints))),
            Err(e) => Err(upstream_error(endpoints.peer, e)),
        }
    }

    fn lease(
        self: &Arc<Self>,
        sender: http1::SendRequest<UpstreamBody>,
        endpoints: Endpoints,
    ) -> Lease {
        Lease {
            pool: Arc::clone(self),
            sender,
            endpoints,
        }
    }
}

impl Lease {
    /// The connection's two ends.
    pub fn endpoints(&self) -> Endpoints {
        self.endpoints
    }
}

fn upstream_error(addr: SocketAddr, e: hyper::Error) -> EgressError {
    if e.is_parse() || e.is_parse_status() {
        EgressError::UpstreamProtocol {
            addr,
            reason: e.to_string(),
        }
    } else {
        EgressError::UpstreamReset {
            addr,
            reason: e.to_string(),
        }
    }
}
