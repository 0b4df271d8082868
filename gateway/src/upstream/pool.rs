//! Pooled upstream connections: HTTP/1.1 keep-alive connections lent to one request at a
//! time, and HTTP/2 connections shared by every request to the same key.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};

use super::conn::{as_http1, as_http2, handshake, upstream_error, Conn};
use super::origination::ClientConfigs;
use super::{connect_tcp, Endpoints, Origination, Transport, UpstreamBody};
use crate::egress::Guarded;
use crate::error::EgressError;
use crate::metrics::ConnectMetrics;

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

/// Pooled connections to upstreams, and the TLS configurations they were made with.
pub struct Pool {
    entries: Mutex<HashMap<Key, Entry>>,
    tls: ClientConfigs,
    /// Where new connections are counted.
    connects: ConnectMetrics,
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
    /// An empty pool that counts the connections it opens in `connects`.
    pub fn new(connects: ConnectMetrics) -> Arc<Self> {
        Arc::new(Self {
            entries: Mutex::default(),
            tls: ClientConfigs::default(),
            connects,
        })
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

    fn unshare(&self, key: &Key) {
        let mut map = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = map.get_mut(key) {
            entry.shared = None;
        }
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

    /// Sends `request` (origin form, with a `Host` header) to one of `addrs` the way
    /// `transport` says, on a pooled connection when one is ready, else on a new one. A
    /// request that a stale pooled connection could not even send is sent again on a
    /// fresh connection; nothing is sent twice.
    ///
    /// Fails when no connection can be made, TLS fails, or the upstream fails before
    /// answering.
    pub async fn send(
        self: &Arc<Self>,
        addrs: &Guarded,
        connect_timeout: Duration,
        transport: &Transport,
        mut request: Request<UpstreamBody>,
    ) -> Result<(Response<Incoming>, Lease), EgressError> {
        while let Some((key, (conn, endpoints))) = addrs.as_slice().iter().find_map(|a| {
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
        // Boxed: opening (connect, TLS, handshake) is a large future, and every request's
        // future is as large as its largest branch, copied whole as hyper stores it.
        let (conn, endpoints) = Box::pin(self.open(addrs, connect_timeout, transport)).await?;
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
            key: key.clone(),
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
                // A shared connection that cannot take this request takes no other:
                // it leaves the pool, so the retry opens a fresh one.
                if sender.ready().await.is_err() {
                    self.unshare(&key);
                    return Err(Retry::Unsent(request));
                }
                match sender
                    .try_send_request(as_http2(request, transport.scheme()))
                    .await
                {
                    Ok(response) => Ok((response, lease(None))),
                    Err(mut e) => match e.take_message() {
                        Some(unsent) => {
                            self.unshare(&key);
                            Err(Retry::Unsent(unsent))
                        }
                        // A stream's own failure: the connection serves the others on.
                        None => Err(Retry::Failed(upstream_error(peer, e.into_error()))),
                    },
                }
            }
        }
    }

    /// A new connection: TCP, TLS when the transport asks, then HTTP/1.1 or HTTP/2.
    async fn open(
        &self,
        addrs: &Guarded,
        connect_timeout: Duration,
        transport: &Transport,
    ) -> Result<(Conn, Endpoints), EgressError> {
        let (stream, endpoints) = connect_tcp(addrs, connect_timeout, &self.connects).await?;
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
                    .await
                    .inspect_err(|e| {
                        if let EgressError::UpstreamTls { failure, .. } = e {
                            self.connects.tls_failed(*failure);
                        }
                    })?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
