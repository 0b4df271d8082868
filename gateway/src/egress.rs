//! decide → resolve → guard: the one sequence every listener calls before it connects
//! upstream, so a destination is judged the same way whichever protocol brought it.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::error::EgressError;
use crate::guard;
use crate::metrics::Metrics;
use crate::policy::store::PolicyStore;
use crate::policy::{Decision, Policy, Query, Route, Verdict};
use crate::resolve::{with_port, ResolveError, Resolver};
use crate::source::Source;
use crate::upstream::Pool;
use crate::wire::host::Host;

/// Where a request or connection wants to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The canonical host.
    pub host: Host,
    /// The port.
    pub port: u16,
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl Destination {
    /// UPSTREAM_CLUSTER as Istio names it: `outbound|PORT||HOST`.
    pub fn cluster_name(&self) -> String {
        match &self.host {
            Host::Name(name) => format!("outbound|{}||{}", self.port, name),
            Host::Ip(ip) => format!("outbound|{}||{}", self.port, ip),
        }
    }
}

/// What every listener needs to let traffic out.
#[derive(Debug)]
pub struct Egress {
    /// The policy in force.
    pub store: Arc<PolicyStore>,
    /// Name resolution.
    pub resolver: Resolver,
    /// Pooled upstream connections.
    pub pool: Arc<Pool>,
    /// Collectors.
    pub metrics: Metrics,
}

/// A decision with the policy snapshot it was made on.
#[derive(Debug, Clone)]
pub struct Judged {
    /// The snapshot: a request keeps the policy it started with.
    pub policy: Arc<Policy>,
    /// The decision.
    pub decision: Decision,
}

impl Judged {
    /// The deciding rule's name, if a rule decided.
    pub fn rule_name(&self) -> Option<&str> {
        self.decision.rule.as_deref().map(|r| r.name.as_str())
    }

    /// `allow`, `deny` or `would_deny`: the metric label.
    pub fn label(&self) -> &'static str {
        match self.decision.verdict {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::WouldDeny => "would_deny",
        }
    }

    /// The route of allowed traffic, or the denial to answer with.
    ///
    /// Fails with [`EgressError::Denied`] when the verdict is deny.
    pub fn route(&self, destination: &Destination) -> Result<Route, EgressError> {
        if self.decision.verdict == Verdict::Deny {
            let rule = self.rule_name().map(str::to_owned);
            let why = match &rule {
                Some(name) => format!("rule {name} denies it"),
                None => "no rule allows it".to_owned(),
            };
            return Err(EgressError::Denied {
                destination: destination.to_string(),
                rule,
                why,
            });
        }
        Ok(self.policy.route(&self.decision).into_owned())
    }
}

impl Egress {
    /// Decides `destination` for `source` on `listener` against the policy in force.
    pub fn decide(&self, destination: &Destination, listener: &str, source: &Source) -> Judged {
        let policy = self.store.current();
        let decision = policy.decide(&Query {
            host: &destination.host,
            port: destination.port,
            listener,
            source,
        });
        Judged { policy, decision }
    }

    /// The addresses allowed traffic may connect to: the route's static endpoints or the
    /// resolved addresses, less those the guard refuses. These exact addresses are what
    /// is connected to, so DNS cannot change between check and connect.
    ///
    /// Fails when resolution fails, or when the guard refuses every address.
    pub async fn addresses(
        &self,
        route: &Route,
        destination: &Destination,
    ) -> Result<Vec<SocketAddr>, EgressError> {
        let candidates = if route.endpoints.is_empty() {
            let ips = self
                .resolver
                .resolve(&destination.host)
                .await
                .map_err(|e| EgressError::Dns {
                    host: destination.host.to_string(),
                    reason: match e {
                        ResolveError::Failed(why) => why,
                        other => other.to_string(),
                    },
                })?;
            with_port(&ips, destination.port)
        } else {
            route
                .endpoints
                .iter()
                .map(|e| {
                    if e.port() == 0 {
                        SocketAddr::new(e.ip(), destination.port)
                    } else {
                        *e
                    }
                })
                .collect()
        };
        let mut refused = None;
        let allowed: Vec<SocketAddr> = candidates
            .into_iter()
            .filter(|addr| match guard::check(addr.ip(), route.allow_private) {
                Ok(()) => true,
                Err(class) => {
                    refused.get_or_insert((addr.ip(), class));
                    false
                }
            })
            .collect();
        match (allowed.is_empty(), refused) {
            (true, Some((addr, class))) => {
                self.metrics
                    .address_refused
                    .with_label_values(&[class.as_str()])
                    .inc();
                Err(EgressError::AddressRefused {
                    destination: destination.to_string(),
                    addr,
                    class,
                })
            }
            _ => Ok(allowed),
        }
    }
}
