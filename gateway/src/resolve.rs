//! Name resolution: hickory-resolver with its TTL and negative caches, or a rule's
//! static endpoints. Names are looked up as absolute (`name.`), so search domains never
//! multiply queries or change what a name means.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::TokioResolver;

use crate::wire::host::Host;

/// Why a name did not resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// NXDOMAIN.
    #[error("nxdomain")]
    NotFound,
    /// The name exists but has no A/AAAA records.
    #[error("no_records")]
    NoRecords,
    /// Name servers did not answer in time or failed.
    #[error("{0}")]
    Failed(String),
    /// No answer within the time the lookup was given.
    #[error("timeout")]
    Timeout,
}

/// How long each query waits and how often it is tried (`dns.timeout`, `dns.attempts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Patience {
    /// One query's wait for an answer.
    pub timeout: Duration,
    /// Tries per name server.
    pub attempts: usize,
}

impl Default for Patience {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(2),
            attempts: 2,
        }
    }
}

/// Resolves destination names to addresses.
#[derive(Clone)]
pub struct Resolver {
    inner: TokioResolver,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

impl Resolver {
    /// A resolver asking `servers` (UDP, falling back to TCP for truncated answers), or
    /// the system's configuration (`/etc/resolv.conf`) when `servers` is empty, with the
    /// default [`Patience`].
    ///
    /// Fails when the system configuration cannot be read.
    pub fn new(servers: &[SocketAddr]) -> Result<Self, ResolveError> {
        Self::with_patience(servers, Patience::default())
    }

    /// [`Resolver::new`] with `patience`. Every lookup is also bounded by the rule's
    /// connect timeout where it is made.
    ///
    /// Fails when the system configuration cannot be read.
    pub fn with_patience(servers: &[SocketAddr], patience: Patience) -> Result<Self, ResolveError> {
        let (config, mut opts) = if servers.is_empty() {
            hickory_resolver::system_conf::read_system_conf().map_err(|e| {
                ResolveError::Failed(format!("reading the system resolver configuration: {e}"))
            })?
        } else {
            let mut config = ResolverConfig::new();
            for server in servers {
                config.add_name_server(NameServerConfig::new(*server, Protocol::Udp));
                config.add_name_server(NameServerConfig::new(*server, Protocol::Tcp));
            }
            (config, ResolverOpts::default())
        };
        opts.timeout = patience.timeout;
        opts.attempts = patience.attempts;
        opts.cache_size = 4096;
        opts.ndots = 0;
        // Hosts from /etc/hosts would let a local file, not DNS, decide where traffic
        // goes; the guard still applies, but the answer should be the public one.
        opts.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
        opts.negative_min_ttl = Some(Duration::from_secs(1));
        opts.negative_max_ttl = Some(Duration::from_secs(30));
        let mut builder =
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default());
        *builder.options_mut() = opts;
        Ok(Self {
            inner: builder.build(),
        })
    }

    /// The addresses of `host`: an IP literal is its own answer; a name is looked up
    /// (A and AAAA), answered from the cache while its TTL lasts.
    ///
    /// Fails with NXDOMAIN, no records, or a name-server failure.
    pub async fn resolve(&self, host: &Host) -> Result<Vec<IpAddr>, ResolveError> {
        let name = match host {
            Host::Ip(ip) => return Ok(vec![*ip]),
            Host::Name(name) => name,
        };
        let absolute = format!("{name}.");
        match self.inner.lookup_ip(absolute.as_str()).await {
            Ok(lookup) => {
                let addrs: Vec<IpAddr> = lookup.iter().collect();
                if addrs.is_empty() {
                    Err(ResolveError::NoRecords)
                } else {
                    Ok(addrs)
                }
            }
            Err(e) if e.is_nx_domain() => Err(ResolveError::NotFound),
            Err(e) if e.is_no_records_found() => Err(ResolveError::NoRecords),
            Err(e) => Err(ResolveError::Failed(e.to_string())),
        }
    }
}

/// The socket addresses of a destination: the rule's static endpoints (an endpoint with
/// port 0 takes the destination port) or the resolved addresses with `port`.
pub fn with_port(addrs: &[IpAddr], port: u16) -> Vec<SocketAddr> {
    addrs.iter().map(|ip| SocketAddr::new(*ip, port)).collect()
}
