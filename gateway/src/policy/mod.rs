//! Policy: the documents users write, compiled into an immutable matcher that decides
//! every request and connection.
//!
//! A [`Policy`] is compiled once and shared as an `Arc`; a reload builds a new one and
//! swaps it in whole (see [`store`]).

pub mod allocate;
pub mod compile;
pub mod document;
pub mod edit;
pub mod hosts;
mod names;
mod shape;
pub mod store;
#[cfg(test)]
mod tests;
mod values;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::source::Source;
use crate::wire::host::Host;

pub use compile::compile;
pub use document::{Action, Mode, OnDeny, Protocol, RatePer, RouteBy, UpstreamProtocol};
pub use hosts::HostPattern;
pub use names::NameDecision;
pub use store::{load_dir, PolicyStore, PolicyWatcher};

/// One policy document: its display name (a path) and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyFile {
    /// Where it came from, as printed in errors (`policies/a.yaml`).
    pub name: String,
    /// The YAML text, shared by every kept version that has it unchanged.
    pub text: Arc<str>,
}

/// One problem in a policy set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// The file's display name.
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Field path, e.g. `rules[3].ports[0]`; empty for the whole document.
    pub path: String,
    /// What is wrong, naming the value and the limit.
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in a policy set; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}

/// A compiled, immutable policy set.
#[derive(Debug)]
pub struct Policy {
    pub(crate) defaults: Defaults,
    pub(crate) listeners: Vec<Listener>,
    pub(crate) rules: Vec<Arc<Rule>>,
    pub(crate) hosts: hosts::HostMatcher,
    /// The addresses `auto_allocate` gave to TCP services.
    pub(crate) allocations: allocate::Allocations,
    /// The YAML documents it was compiled from, as (file name, text), for history and
    /// `GET /policy`.
    pub(crate) sources: Vec<PolicyFile>,
}

/// `defaults:` after validation, every value filled in.
#[derive(Debug, Clone)]
pub struct Defaults {
    /// What happens when no rule matches.
    pub mode: Mode,
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    /// HTTP request sent → response complete; `None` = no limit.
    pub request_timeout: Option<Duration>,
    /// Tunnels close after this long with no bytes either way.
    pub idle_timeout: Duration,
    /// May resolved addresses be private, loopback, link-local, ...?
    pub allow_private: bool,
}

/// A declared listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Unique name, what rules' `listeners` refer to.
    pub name: String,
    /// Address to bind.
    pub address: std::net::IpAddr,
    /// Port to bind.
    pub port: u16,
    /// How the destination is read.
    pub protocol: Protocol,
    /// Destination port when a request names none (http 80, tls 443).
    pub target_port: u16,
    /// `tcp` listeners: where every connection goes.
    pub forward_to: Option<(Host, u16)>,
    /// Inbound TLS termination.
    pub tls: Option<ListenerTls>,
    /// Connections start with a PROXY protocol header.
    pub proxy_protocol: bool,
    /// `connect` listeners: a tunnel's SNI must equal the CONNECT host.
    pub check_sni: bool,
    /// `tcp` listeners: where a connection goes.
    pub route_by: RouteBy,
    /// `dns` listeners: how queries are answered.
    pub dns: Option<DnsListener>,
}

/// A `dns` listener's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsListener {
    /// What allowed names resolve to; empty = the address the query reached.
    pub answer_with: Vec<std::net::IpAddr>,
    /// The TTL of every answer.
    pub ttl: Duration,
    /// The answer for a name no rule allows.
    pub on_deny: OnDeny,
    /// Search domains, canonical, the longest first.
    pub search_suffixes: Vec<String>,
    /// The range TCP services get their addresses from.
    pub auto_allocate: Option<ipnet::IpNet>,
}

/// A listener's inbound TLS; relative paths are relative to the policy directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    /// PEM certificate chain.
    pub cert: std::path::PathBuf,
    /// PEM private key.
    pub key: std::path::PathBuf,
    /// CA bundle client certificates must chain to; `None` = no client certificates.
    pub client_ca: Option<std::path::PathBuf>,
    /// Refuse clients without a certificate.
    pub require_client_cert: bool,
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Unique name; ROUTE_NAME in the audit line, shared with every record it decides.
    pub name: std::sync::Arc<str>,
    /// The host patterns it lists, canonical.
    pub hosts: Box<[HostPattern]>,
    /// Allow or deny.
    pub action: Action,
    /// Destination ports; `None` = any. Rules listing the same ports share one list.
    pub ports: Option<Arc<[u16]>>,
    /// Who may use it; empty = anyone.
    pub sources: Box<[SourceMatch]>,
    /// Which listeners it applies to; `None` = all. Shared like `ports`.
    pub listeners: Option<Arc<[String]>>,
    /// How allowed traffic is forwarded; rules with the same settings share one.
    pub route: Arc<Route>,
}

/// A `sources` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceMatch {
    /// A CIDR (a bare address is a /32 or /128).
    Net(ipnet::IpNet),
    /// An identity, exact (`spiffe://td/ns/a/sa/b`) or by prefix (`spiffe://td/ns/a/*`).
    Identity(String),
}

/// How allowed traffic is forwarded: the rule's settings over the defaults.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    /// HTTP request sent → response complete; `None` = no limit.
    pub request_timeout: Option<Duration>,
    /// Tunnel idle timeout.
    pub idle_timeout: Duration,
    /// Static addresses instead of DNS (Istio resolution STATIC). Port 0 stands for the
    /// destination port (an entry written as a bare `ip`); see [`Route::endpoint_addrs`].
    pub endpoints: Vec<SocketAddr>,
    /// Speak TLS to the upstream (http listeners).
    pub tls_origination: bool,
    /// May resolved addresses be private?
    pub allow_private: bool,
    /// HTTP version spoken upstream.
    pub upstream_protocol: UpstreamProtocol,
    /// Extra CA bundle for the upstream's certificate.
    pub ca_file: Option<std::path::PathBuf>,
    /// Requests and tunnels a second.
    pub rate_limit: Option<RateLimit>,
    /// Requests and tunnels in flight at once.
    pub max_concurrent: Option<u32>,
}

/// A rule's token bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateLimit {
    /// Tokens a second.
    pub per_second: u32,
    /// Tokens saved up at most.
    pub burst: u32,
    /// One bucket for the rule, or one per client address.
    pub per: RatePer,
}

/// What is being asked: one destination, from one source, on one listener.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    /// Canonical destination host.
    pub host: &'a Host,
    /// Destination port.
    pub port: u16,
    /// Listener name.
    pub listener: &'a str,
    /// Who asks.
    pub source: &'a Source,
}

/// The outcome of [`Policy::decide`].
#[derive(Debug, Clone)]
pub struct Decision {
    /// Allowed, denied, or forwarded in audit mode although it would be denied.
    pub verdict: Verdict,
    /// The rule that decided; `None` when the mode did.
    pub rule: Option<Arc<Rule>>,
}

/// Allowed or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Forward it.
    Allow,
    /// Refuse it.
    Deny,
    /// Audit mode: forward it, but mark it as what enforcement would deny.
    WouldDeny,
}

impl Policy {
    /// A policy with no listeners and no rules, in deny mode: what an empty policy
    /// directory compiles to.
    pub fn empty() -> Self {
        Self {
            defaults: Defaults::default(),
            listeners: Vec::new(),
            rules: Vec::new(),
            hosts: hosts::HostMatcher::default(),
            allocations: allocate::Allocations::default(),
            sources: Vec::new(),
        }
    }

    /// Decides one query. Cost grows with the host's labels, not the number of rules.
    ///
    /// The most specific group of host patterns with a rule that also matches the port,
    /// listener and source decides; within it deny wins, else the first allowing rule in
    /// document order. No such rule: the mode decides. Audit mode never refuses: what
    /// would be denied (by a rule or by default) is [`Verdict::WouldDeny`].
    ///
    /// An IP-literal destination is matched only by rules that list that address: not
    /// by `*.suffix` patterns, and not by a lone `*` either, which means "any name" —
    /// so `*` never opens every address to a client that skips DNS.
    pub fn decide(&self, query: &Query<'_>) -> Decision {
        for group in self.hosts.lookup(query.host) {
            let mut allowing = None;
            for &index in group {
                let Some(rule) = self.rules.get(index as usize) else {
                    continue;
                };
                if !rule.applies(query) {
                    continue;
                }
                match rule.action {
                    Action::Deny => return self.denied(Some(rule)),
                    Action::Allow => {
                        allowing.get_or_insert(rule);
                    }
                }
            }
            if let Some(rule) = allowing {
                return Decision {
                    verdict: Verdict::Allow,
                    rule: Some(Arc::clone(rule)),
                };
            }
        }
        match self.defaults.mode {
            Mode::Allow => Decision {
                verdict: Verdict::Allow,
                rule: None,
            },
            Mode::Deny | Mode::Audit => self.denied(None),
        }
    }

    fn denied(&self, rule: Option<&Arc<Rule>>) -> Decision {
        Decision {
            verdict: match self.defaults.mode {
                Mode::Audit => Verdict::WouldDeny,
                Mode::Deny | Mode::Allow => Verdict::Deny,
            },
            rule: rule.cloned(),
        }
    }

    /// The listener named `name`.
    pub fn listener(&self, name: &str) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.name == name)
    }

    /// The rule named `name`.
    pub fn rule(&self, name: &str) -> Option<&Arc<Rule>> {
        self.rules.iter().find(|r| *r.name == *name)
    }

    /// The settings for traffic that `decision` lets out.
    pub fn route<'a>(&'a self, decision: &'a Decision) -> std::borrow::Cow<'a, Route> {
        match &decision.rule {
            Some(rule) => std::borrow::Cow::Borrowed(&*rule.route),
            None => std::borrow::Cow::Owned(self.default_route()),
        }
    }

    /// The route of traffic no rule matched (allow and audit modes).
    pub fn default_route(&self) -> Route {
        Route {
            connect_timeout: self.defaults.connect_timeout,
            request_timeout: self.defaults.request_timeout,
            idle_timeout: self.defaults.idle_timeout,
            endpoints: Vec::new(),
            tls_origination: false,
            allow_private: self.defaults.allow_private,
            upstream_protocol: UpstreamProtocol::Http1,
            ca_file: None,
            rate_limit: None,
            max_concurrent: None,
        }
    }

    /// The defaults in force.
    pub fn defaults(&self) -> &Defaults {
        &self.defaults
    }

    /// The declared listeners.
    pub fn listeners(&self) -> &[Listener] {
        &self.listeners
    }

    /// The rules, in document order.
    pub fn rules(&self) -> &[Arc<Rule>] {
        &self.rules
    }

    /// The documents this policy was compiled from.
    pub fn sources(&self) -> &[PolicyFile] {
        &self.sources
    }
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            mode: Mode::Deny,
            connect_timeout: Duration::from_secs(5),
            request_timeout: None,
            idle_timeout: Duration::from_secs(3600),
            allow_private: false,
        }
    }
}

impl Rule {
    /// Whether the query's port, listener and source are ones this rule covers (its
    /// hosts are matched by the [`hosts::HostMatcher`]).
    pub fn applies(&self, query: &Query<'_>) -> bool {
        self.ports.as_ref().is_none_or(|p| p.contains(&query.port))
            && self
                .listeners
                .as_ref()
                .is_none_or(|l| l.iter().any(|name| name == query.listener))
            && (self.sources.is_empty() || self.sources.iter().any(|s| s.matches(query.source)))
    }
}

impl SourceMatch {
    /// Whether `source` is one this entry names. An IPv4-mapped IPv6 peer address (a
    /// dual-stack listener) matches as the IPv4 address it carries.
    pub fn matches(&self, source: &Source) -> bool {
        match self {
            SourceMatch::Net(net) => net.contains(&source.addr.ip().to_canonical()),
            SourceMatch::Identity(pattern) => {
                let Some(identity) = &source.identity else {
                    return false;
                };
                match pattern.strip_suffix('*') {
                    // Validation guarantees the prefix ends in `/`.
                    Some(prefix) => identity.starts_with(prefix),
                    None => identity == pattern,
                }
            }
        }
    }
}

impl std::fmt::Display for SourceMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceMatch::Net(net) => write!(f, "{net}"),
            SourceMatch::Identity(id) => f.write_str(id),
        }
    }
}

impl Route {
    /// The static endpoints for a destination on `port`: entries written without a port
    /// take the destination's.
    pub fn endpoint_addrs(&self, port: u16) -> impl Iterator<Item = SocketAddr> + '_ {
        self.endpoints.iter().map(move |e| match e.port() {
            0 => SocketAddr::new(e.ip(), port),
            _ => *e,
        })
    }
}
