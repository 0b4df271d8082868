//! Pooled upstream connections: HTTP/1.1 keep-alive connections lent to one request at a
//! time, and HTTP/2 connections shared by every request to the same key.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::header::HOST;
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use super::origination::ClientConfigs;
use super::{connect_tcp, Endpoints, Origination, Transport, UpstreamBody};
use crate::error::EgressError;

/// How long an unused pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per upstream address.
const POOL_MAX_IDLE_PER_ADDR: usize = 256;

/// What a pooled connection may be reused for: the same address, reached the same way.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    addr: SocketAddr,
    tls: Option<Origination>,
    h2: bool,
}

impl Key {
    fn new(addr: SocketAddr, transport: &Transport) -> Self {
        Key {
            addr,
            tls: transport.tls.clone(),
            h2: transport.h2,
        }
    }
}

struct Idle {
    sender: http1::SendRequest<UpstreamBody>,
    endpoints: Endpoints,
    since: Instant,
}

/// The connections of one key: HTTP/1.1 ones resting, and at most one HTTP/2 one.
#[derive(Default)]
struct Entry {
    idle: Vec<Idle>,
    shared: Option<(http2::SendRequest<UpstreamBody>, Endpoints)>,
}

impl Entry {
    fn purge(&mut self) {
        self.idle
            .retain(|i| !i.sender.is_closed() && i.since.elapsed() < POOL_IDLE_TIMEOUT);
        if self.shared.as_ref().is_some_and(|(s, _)| s.is_closed()) {
            self.shared = None;
        }
    }

    fn is_empty(&self) -> bool {
        self.idle.is_empty() && self.shared.is_none()
    }
}

/// A connection ready for a request.
enum Conn {
    Http1(http1::SendRequest<UpstreamBody>),
    Http2(http2::SendRequest<UpstreamBody>),
}

/// Pooled connections to upstreams, and the TLS configurations they were made with.
#[derive(Default)]
pub struct Pool {
    entries: Mutex<HashMap<Key, Entry>>,
    tls: ClientConfigs,
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
    key: Key,
    conn: Option<http1::SendRequest<UpstreamBody>>,
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
    /// Returns the connection to the pool for the next request. (An HTTP/2 connection
    /// never left it: its other streams go on.)
    pub fn release(self) {
        if let Some(sender) = self.conn {
            self.pool.put(
                self.key,
                Idle {
                    sender,
                    endpoints: self.endpoints,
                    since: Instant::now(),
                },
            );
        }
    }

    /// The connection's two ends.
    pub fn endpoints(&self) -> Endpoints {
        self.endpoints
    }
}

impl Pool {
    /// An empty pool.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn put(&self, key: Key, idle: Idle) {
        if idle.sender.is_closed() {
            return;
        }
        let mut map = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = map.entry(key).or_default();
        if entry.idle.len() < POOL_MAX_IDLE_PER_ADDR {
            entry.idle.push(idle);
        }
    }

    fn share(&self, key: Key, sender: &http2::SendRequest<UpstreamBody>, endpoints: Endpoints) {
        let mut map = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(key).or_default().shared = Some((sender.clone(), endpoints));
    }

    fn take(&self, key: &Key) -> Option<(Conn, Endpoints)> {
        let mut map = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = map.get_mut(key)?;
        match &entry.shared {
            Some((sender, endpoints)) if !sender.is_closed() => {
                return Some((Conn::Http2(sender.clone()), *endpoints));
            }
            Some(_) => entry.shared = None,
            None => {}
        }
        while let Some(idle) = entry.idle.pop() {
            if !idle.sender.is_closed() && idle.since.elapsed() < POOL_IDLE_TIMEOUT {
                return Some((Conn::Http1(idle.sender), idle.endpoints));
            }
        }
        None
    }

    /// Drops idle connections that expired or were closed by the upstream.
    pub fn purge(&self) {
        let mut map = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, entry| {
            entry.purge();
            !entry.is_empty()
        });
    }

    /// Connections held now: idle HTTP/1.1 ones and shared HTTP/2 ones.
    pub fn idle_count(&self) -> usize {
        let map = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        map.values()
            .map(|e| e.idle.len() + usize::from(e.shared.is_some()))
            .sum()
    }

    /// Sends `request` (origin form, with a `Host` header) to one of `addrs` the way
    /// `transport` says, on a pooled connection when one is ready, else on a new one. A
    /// request that a stale pooled connection could not even send is sent again on a
    /// fresh connection; nothing is sent twice.
    ///
    /// Fails when no connection can be made, TLS fails, or the upstream fails before
    /// answering.
    pub async fn send(
        self: &Arc<Self>,
        addrs: &[SocketAddr],
        connect_timeout: Duration,
        transport: &Transport,
        mut request: Request<UpstreamBody>,
    ) -> Result<(Response<Incoming>, Lease), EgressError> {
        while let Some((key, (conn, endpoints))) = addrs.iter().find_map(|a| {
            let key = Key::new(*a, transport);
            self.take(&key).map(|taken| (key, taken))
        }) {
            match self
                .try_send(key, conn, endpoints, transport, request)
                .await
            {
                Ok(done) => return Ok(done),
                Err(Retry::Unsent(unsent)) => request = unsent,
                Err(Retry::Failed(e)) => return Err(e),
            }
        }
        let (conn, endpoints) = self.open(addrs, connect_timeout, transport).await?;
        let key = Key::new(endpoints.peer, transport);
        if let Conn::Http2(sender) = &conn {
            self.share(key.clone(), sender, endpoints);
        }
        match self
            .try_send(key, conn, endpoints, transport, request)
            .await
        {
            Ok(done) => Ok(done),
            Err(Retry::Unsent(_)) => Err(EgressError::UpstreamReset {
                addr: endpoints.peer,
                reason: "connection closed before the request was sent".to_owned(),
            }),
            Err(Retry::Failed(e)) => Err(e),
        }
    }

    async fn try_send(
        self: &Arc<Self>,
        key: Key,
        conn: Conn,
        endpoints: Endpoints,
        transport: &Transport,
        request: Request<UpstreamBody>,
    ) -> Result<(Response<Incoming>, Lease), Retry> {
        let peer = endpoints.peer;
        let lease = |conn| Lease {
            pool: Arc::clone(self),
            key,
            conn,
            endpoints,
        };
        match conn {
            Conn::Http1(mut sender) => {
                if sender.ready().await.is_err() {
                    return Err(Retry::Unsent(request));
                }
                match sender.try_send_request(as_http1(request)).await {
                    Ok(response) => Ok((response, lease(Some(sender)))),
                    Err(mut e) => match e.take_message() {
                        Some(unsent) => Err(Retry::Unsent(unsent)),
                        None => Err(Retry::Failed(upstream_error(peer, e.into_error()))),
                    },
                }
            }
            Conn::Http2(mut sender) => {
                if sender.ready().await.is_err() {
                    return Err(Retry::Unsent(request));
                }
                match sender
                    .try_send_request(as_http2(request, transport.scheme()))
                    .await
                {
                    Ok(response) => Ok((response, lease(None))),
                    Err(mut e) => match e.take_message() {
                        Some(unsent) => Err(Retry::Unsent(unsent)),
                        None => Err(Retry::Failed(upstream_error(peer, e.into_error()))),
                    },
                }
            }
        }
    }

    /// A new connection: TCP, TLS when the transport asks, then HTTP/1.1 or HTTP/2.
    async fn open(
        &self,
        addrs: &[SocketAddr],
        connect_timeout: Duration,
        transport: &Transport,
    ) -> Result<(Conn, Endpoints), EgressError> {
        let (stream, endpoints) = connect_tcp(addrs, connect_timeout).await?;
        let conn = match &transport.tls {
            None => handshake(stream, transport.h2, endpoints.peer).await?,
            Some(origination) => {
                let (stream, alpn_h2) = self
                    .tls
                    .connect(
                        stream,
                        endpoints.peer,
                        origination,
                        transport.h2,
                        connect_timeout,
                    )
                    .await?;
                handshake(stream, transport.h2 || alpn_h2, endpoints.peer).await?
            }
        };
        Ok((conn, endpoints))
    }
}

enum Retry {
    Unsent(Request<UpstreamBody>),
    Failed(EgressError),
}

async fn handshake<T>(io: T, h2: bool, peer: SocketAddr) -> Result<Conn, EgressError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    if h2 {
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake::<_, UpstreamBody>(io)
            .await
            .map_err(|e| upstream_error(peer, e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream HTTP/2 connection ended");
            }
        });
        Ok(Conn::Http2(sender))
    } else {
        let (sender, conn) = http1::Builder::new()
            .handshake::<_, UpstreamBody>(io)
            .await
            .map_err(|e| upstream_error(peer, e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(Conn::Http1(sender))
    }
}

/// HTTP/1.1 form: origin-form target and a `Host` header.
fn as_http1(mut request: Request<UpstreamBody>) -> Request<UpstreamBody> {
    if let Some(authority) = request.uri().authority().cloned() {
        if !request.headers().contains_key(HOST) {
            if let Ok(value) = authority.as_str().parse() {
                request.headers_mut().insert(HOST, value);
            }
        }
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .unwrap_or_else(|_| Uri::from_static("/"));
        *request.uri_mut() = path;
    }
    *request.version_mut() = Version::HTTP_11;
    request
}

/// HTTP/2 form: `:scheme` and `:authority` from the `Host` header, which HTTP/2 carries
/// as a pseudo-header instead.
fn as_http2(mut request: Request<UpstreamBody>, scheme: &str) -> Request<UpstreamBody> {
    if let Some(host) = request.headers_mut().remove(HOST) {
        let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
        let absolute = format!(
            "{scheme}://{}{path}",
            String::from_utf8_lossy(host.as_bytes())
        );
        if let Ok(uri) = absolute.parse() {
            *request.uri_mut() = uri;
        }
    }
    *request.version_mut() = Version::HTTP_2;
    request
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

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Empty};

    fn request(uri: &str, host: Option<&str>) -> Request<UpstreamBody> {
        let mut builder = Request::builder().uri(uri);
        if let Some(host) = host {
            builder = builder.header(HOST, host);
        }
        builder
            .body(Empty::new().map_err(|never| match never {}).boxed())
            .unwrap()
    }

    #[test]
    fn requests_switch_forms_both_ways() {
        let h2 = as_http2(request("/a?b=1", Some("api.example.com:8443")), "https");
        assert_eq!(h2.uri().to_string(), "https://api.example.com:8443/a?b=1");
        assert!(h2.headers().get(HOST).is_none());
        assert_eq!(h2.version(), Version::HTTP_2);
        let h1 = as_http1(h2);
        assert_eq!(h1.uri().to_string(), "/a?b=1");
        assert_eq!(h1.headers()[HOST], "api.example.com:8443");
        assert_eq!(h1.version(), Version::HTTP_11);
    }

    #[test]
    fn keys_tell_transports_apart() {
        let addr: SocketAddr = "127.0.0.1:443".parse().unwrap();
        let tls = |name: &str| Transport {
            tls: Some(Origination {
                server_name: name.to_owned(),
                ca_file: None,
            }),
            h2: false,
        };
        assert_ne!(
            Key::new(addr, &tls("a.example")),
            Key::new(addr, &tls("b.example"))
        );
        assert_ne!(
            Key::new(addr, &tls("a.example")),
            Key::new(addr, &Transport::PLAIN)
        );
        let h2 = Transport {
            h2: true,
            ..Transport::PLAIN
        };
        assert_ne!(Key::new(addr, &h2), Key::new(addr, &Transport::PLAIN));
    }
}
