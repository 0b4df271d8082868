//! Policy: the documents users write, compiled into an immutable matcher that decides
//! every request and connection.
//!
//! A [`Policy`] is compiled once and shared as an `Arc`; a reload builds a new one and
//! swaps it in whole (see [`store`]).

pub mod compile;
pub mod document;
pub mod hosts;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::source::Source;
use crate::wire::host::Host;

pub use compile::{compile, load_dir, PolicyError, PolicyErrors, PolicyFile};
pub use document::{Action, Mode, Protocol};

/// A compiled, immutable policy set.
#[derive(Debug)]
pub struct Policy {
    pub(crate) defaults: Defaults,
    pub(crate) listeners: Vec<Listener>,
    pub(crate) rules: Vec<Arc<Rule>>,
    pub(crate) hosts: hosts::HostMatcher,
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
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Unique name; ROUTE_NAME in the audit line.
    pub name: String,
    /// Allow or deny.
    pub action: Action,
    /// Destination ports; `None` = any.
    pub ports: Option<Vec<u16>>,
    /// Who may use it; empty = anyone.
    pub sources: Vec<SourceMatch>,
    /// Which listeners it applies to; `None` = all.
    pub listeners: Option<Vec<String>>,
    /// How allowed traffic is forwarded.
    pub route: Route,
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    /// HTTP request sent → response complete; `None` = no limit.
    pub request_timeout: Option<Duration>,
    /// Tunnel idle timeout.
    pub idle_timeout: Duration,
    /// Static addresses instead of DNS (Istio resolution STATIC).
    pub endpoints: Vec<SocketAddr>,
    /// Speak TLS to the upstream (http listeners).
    pub tls_origination: bool,
    /// May resolved addresses be private?
    pub allow_private: bool,
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
    /// Decides one query. Cost grows with the host's labels, not the number of rules.
    pub fn decide(&self, query: &Query<'_>) -> Decision {
        let _ = query;
        Decision {
            verdict: match self.defaults.mode {
                Mode::Allow => Verdict::Allow,
                Mode::Deny => Verdict::Deny,
                Mode::Audit => Verdict::WouldDeny,
            },
            rule: None,
        }
    }

    /// The settings for traffic that `decision` lets out.
    pub fn route<'a>(&'a self, decision: &'a Decision) -> std::borrow::Cow<'a, Route> {
        match &decision.rule {
            Some(rule) => std::borrow::Cow::Borrowed(&rule.route),
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
