//! The only place that opens upstream sockets: TCP connect with the route's timeout to
//! addresses the guard has passed, TLS origination where the rule asks
//! ([`origination`]), and a pool of HTTP/1.1 keep-alive and HTTP/2 connections
//! ([`pool`]).
//!
//! The pool is keyed by the address connected to, not the name: a name is resolved and
//! guarded for every request, and only then can a pooled connection to that address be
//! reused, so DNS changes and policy changes take effect without draining the pool. Under
//! TLS origination the key also holds the server name and the trust it was verified
//! with, so a connection verified for one name is never lent to another.

mod conn;
mod origination;
mod pool;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use tokio::net::TcpStream;

use crate::egress::Guarded;
use crate::error::EgressError;
use crate::metrics::{ConnectFailure, ConnectMetrics};
use crate::policy::{Route, UpstreamProtocol};
use crate::wire::host::Host;

pub use pool::{Lease, Pool};

/// The body of a request sent upstream.
pub type UpstreamBody = BoxBody<Bytes, hyper::Error>;

/// How a request reaches its upstream: in clear text or under TLS, HTTP/1.1 or HTTP/2.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Transport {
    /// TLS origination, when the rule asks for it.
    pub tls: Option<Origination>,
    /// The rule asks for HTTP/2 (prior knowledge in clear text, ALPN `h2` only under
    /// TLS). Otherwise HTTP/1.1, or HTTP/2 when ALPN picks it under TLS.
    pub h2: bool,
}

/// TLS to the upstream: the name it must prove (and the SNI sent), and the extra CA
/// bundle trusted besides the web PKI roots.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origination {
    /// The destination host: a DNS name or an IP address (without brackets).
    pub server_name: String,
    /// The rule's `ca_file`, made absolute.
    pub ca_file: Option<PathBuf>,
}

impl Transport {
    /// Plain HTTP/1.1, what a rule asks for unless it says otherwise.
    pub const PLAIN: Transport = Transport {
        tls: None,
        h2: false,
    };

    /// The transport `route` asks for to reach `host`; a relative `ca_file` is taken
    /// from `policy_dir`.
    pub fn for_route(route: &Route, host: &Host, policy_dir: &Path) -> Self {
        let tls = route.tls_origination.then(|| Origination {
            server_name: match host {
                Host::Name(name) => name.clone(),
                Host::Ip(ip) => ip.to_string(),
            },
            ca_file: route.ca_file.as_ref().map(|f| policy_dir.join(f)),
        });
        Transport {
            tls,
            h2: route.upstream_protocol == UpstreamProtocol::H2,
        }
    }

    /// The upstream port for a request to `port`: under TLS origination a request to
    /// port 80 (the port of `http://host/` without one) goes to 443, as Istio's egress
    /// TLS origination does; any other port is kept.
    pub fn upstream_port(&self, port: u16) -> u16 {
        match (&self.tls, port) {
            (Some(_), 80) => 443,
            _ => port,
        }
    }

    /// `http` or `https`: the scheme of the upstream request.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

/// An upstream connection's two ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoints {
    /// The upstream address (UPSTREAM_HOST).
    pub peer: SocketAddr,
    /// Our side (UPSTREAM_LOCAL_ADDRESS).
    pub local: SocketAddr,
}

/// Opens a TCP connection to the first of `addrs` that accepts, each attempt bounded by
/// `timeout` and counted in `metrics`. Only guarded addresses can be passed: the
/// type is built by the egress sequence alone.
///
/// Fails with the last address's error: refused, unreachable, or timed out.
#[expect(
    clippy::disallowed_methods,
    reason = "the one place that connects upstream, to addresses the guard passed"
)]
pub async fn connect_tcp(
    addrs: &Guarded,
    timeout: Duration,
    metrics: &ConnectMetrics,
) -> Result<(TcpStream, Endpoints), EgressError> {
    let mut last = None;
    for &addr in addrs.as_slice() {
        let started = std::time::Instant::now();
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                metrics.connected(started.elapsed());
                // Small writes (request heads, TLS records) must not wait for ACKs.
                let _ = stream.set_nodelay(true);
                let local = stream.local_addr().unwrap_or(addr);
                return Ok((stream, Endpoints { peer: addr, local }));
            }
            Ok(Err(e)) => {
                metrics.failed(ConnectFailure::of_io(&e));
                last = Some(EgressError::Connect {
                    addr,
                    reason: io_reason(&e),
                })
            }
            Err(_) => {
                metrics.failed(ConnectFailure::Timeout);
                last = Some(EgressError::ConnectTimeout { addr, timeout });
            }
        }
    }
    // Guarded addresses are never empty, so some attempt failed.
    Err(last.unwrap_or(EgressError::NoAddress {
        destination: addrs.first().to_string(),
    }))
}

pub(crate) fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::ConnectionRefused => "connection_refused".to_owned(),
        ErrorKind::ConnectionReset => "connection_reset".to_owned(),
        ErrorKind::TimedOut => "connect_timeout".to_owned(),
        ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => "unreachable".to_owned(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;

    #[test]
    fn origination_moves_port_80_to_443_and_keeps_others() {
        let mut route = Policy::empty().default_route();
        let host = Host::Name("api.example.com".into());
        let plain = Transport::for_route(&route, &host, Path::new("/p"));
        assert_eq!(plain, Transport::PLAIN);
        assert_eq!(plain.upstream_port(80), 80);
        route.tls_origination = true;
        route.ca_file = Some("ca.pem".into());
        let tls = Transport::for_route(&route, &host, Path::new("/p"));
        assert_eq!(tls.upstream_port(80), 443);
        assert_eq!(tls.upstream_port(8443), 8443);
        assert_eq!(tls.scheme(), "https");
        let origination = tls.tls.unwrap();
        assert_eq!(origination.server_name, "api.example.com");
        assert_eq!(origination.ca_file, Some(PathBuf::from("/p/ca.pem")));
    }

    #[test]
    fn an_ip_destination_is_verified_as_an_ip() {
        let mut route = Policy::empty().default_route();
        route.tls_origination = true;
        route.upstream_protocol = UpstreamProtocol::H2;
        let t = Transport::for_route(&route, &Host::Ip("::1".parse().unwrap()), Path::new("/"));
        assert_eq!(t.tls.unwrap().server_name, "::1");
        assert!(t.h2);
    }
}
