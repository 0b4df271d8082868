//! Name resolution: hickory-resolver with its TTL and negative caches, or a rule's
//! static endpoints. Names are looked up as absolute (`name.`), so search domains never
//! multiply queries or change what a name means.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

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
    /// Positive answers until their TTL runs out, in front of hickory's own cache, so
    /// that a cache hit can be counted (hickory does not say which answers were cached).
    answers: Arc<Mutex<Answers>>,
}

/// Name → (addresses, valid until).
type Answers = HashMap<String, (Arc<[IpAddr]>, Instant)>;

/// The most names the answer cache holds.
const CACHED_NAMES: usize = 4096;

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
            answers: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// The addresses of `host`: an IP literal is its own answer; a name is looked up
    /// (A and AAAA), answered from the cache while its TTL lasts.
    ///
    /// Fails with NXDOMAIN, no records, or a name-server failure.
    pub async fn resolve(&self, host: &Host) -> Result<Vec<IpAddr>, ResolveError> {
        self.lookup(host).await.map(|(addrs, _)| addrs)
    }

    /// [`Resolver::resolve`], also saying whether the answer came from the cache.
    ///
    /// Fails as [`Resolver::resolve`].
    pub async fn lookup(&self, host: &Host) -> Result<(Vec<IpAddr>, bool), ResolveError> {
        let name = match host {
            Host::Ip(ip) => return Ok((vec![*ip], false)),
            Host::Name(name) => name,
        };
        if let Some(addrs) = self.cached(name) {
            return Ok((addrs, true));
        }
        let absolute = format!("{name}.");
        match self.inner.lookup_ip(absolute.as_str()).await {
            Ok(lookup) => {
                let addrs: Vec<IpAddr> = lookup.iter().collect();
                if addrs.is_empty() {
                    Err(ResolveError::NoRecords)
                } else {
                    self.remember(name, &addrs, lookup.valid_until());
                    Ok((addrs, false))
                }
            }
            Err(e) if e.is_nx_domain() => Err(ResolveError::NotFound),
            Err(e) if e.is_no_records_found() => Err(ResolveError::NoRecords),
            Err(e) => Err(ResolveError::Failed(e.to_string())),
        }
    }
}

/// What the name servers said to a forwarded question.
#[derive(Debug, Clone)]
pub enum Forwarded {
    /// The records (possibly none: the name exists without this type).
    Records(Vec<hickory_resolver::proto::rr::Record>),
    /// NXDOMAIN.
    NotFound,
    /// No answer, or a failure: answered SERVFAIL.
    Failed(String),
}

impl Resolver {
    /// Asks the name servers `name` (canonical, no trailing dot) of type `rtype`, for a
    /// `dns` listener that forwards what no rule decides; answers are cached by TTL.
    pub async fn forward(
        &self,
        name: &str,
        rtype: hickory_resolver::proto::rr::RecordType,
    ) -> Forwarded {
        let absolute = format!("{name}.");
        match self.inner.lookup(absolute.as_str(), rtype).await {
            Ok(lookup) => Forwarded::Records(lookup.records().to_vec()),
            Err(e) if e.is_nx_domain() => Forwarded::NotFound,
            Err(e) if e.is_no_records_found() => Forwarded::Records(Vec::new()),
            Err(e) => Forwarded::Failed(e.to_string()),
        }
    }
}

impl Resolver {
    fn cached(&self, name: &str) -> Option<Vec<IpAddr>> {
        let answers = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
        let (addrs, until) = answers.get(name)?;
        (Instant::now() < *until).then(|| addrs.to_vec())
    }

    fn remember(&self, name: &str, addrs: &[IpAddr], until: Instant) {
        let mut answers = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
        if answers.len() >= CACHED_NAMES {
            let now = Instant::now();
            answers.retain(|_, (_, until)| *until > now);
            if answers.len() >= CACHED_NAMES {
                answers.clear();
            }
        }
        answers.insert(name.to_owned(), (Arc::from(addrs), until));
    }
}

/// The socket addresses of a destination: the rule's static endpoints (an endpoint with
/// port 0 takes the destination port) or the resolved addresses with `port`.
pub fn with_port(addrs: &[IpAddr], port: u16) -> Vec<SocketAddr> {
    addrs.iter().map(|ip| SocketAddr::new(*ip, port)).collect()
}
