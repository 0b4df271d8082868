//! decide → resolve → guard: the one sequence every listener calls before it connects
//! upstream, so a destination is judged the same way whichever protocol brought it.

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

pub mod limits;
mod open;

pub use open::{Guarded, Leg, Opened, Outbound};

use crate::error::EgressError;
use crate::guard;
use crate::metrics::{LookupResult, Metrics};
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
        use fmt::Write;
        // Sized up front: one allocation per request, not a grown one.
        let host_len = match &self.host {
            Host::Name(name) => name.len(),
            Host::Ip(_) => "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".len(),
        };
        let mut name = String::with_capacity("outbound|65535||".len() + host_len);
        // Writing into a String cannot fail.
        let _ = match &self.host {
            Host::Name(host) => write!(name, "outbound|{}||{host}", self.port),
            Host::Ip(ip) => write!(name, "outbound|{}||{ip}", self.port),
        };
        name
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
    /// With `audit.on_error: fail_closed`, the audit writer: while it cannot write,
    /// nothing is let out (503 `OM` `audit_log_unavailable`).
    pub audit_gate: Option<Arc<crate::audit::AuditSink>>,
    /// The state of rules' `rate_limit` and `max_concurrent`.
    pub rule_limits: limits::RuleLimits,
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
        self.decision.rule.as_deref().map(|r| &*r.name)
    }

    /// The deciding rule's name for the audit record (shared, not copied).
    pub fn route_name(&self) -> Option<Arc<str>> {
        self.decision.rule.as_ref().map(|r| Arc::clone(&r.name))
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
    pub fn route(&self, destination: &Destination) -> Result<Cow<'_, Route>, EgressError> {
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
        Ok(self.policy.route(&self.decision))
    }
}

impl Egress {
    /// Applies the deciding rule's `rate_limit` and `max_concurrent` to one request or
    /// tunnel from `source`; hold what it returns while the work is in flight. Traffic
    /// no rule decided (allow and audit modes) has no limit.
    ///
    /// Fails with 429 `RL` when the bucket is empty, 503 `UO` at `max_concurrent`.
    pub fn admit(
        &self,
        judged: &Judged,
        route: &Route,
        source: &Source,
    ) -> Result<limits::Admitted, EgressError> {
        let Some(rule) = &judged.decision.rule else {
            return Ok(limits::Admitted::none());
        };
        let refused = match self.rule_limits.admit(&rule.name, route, source.addr.ip()) {
            Ok(admitted) => return Ok(admitted),
            Err(refused) => refused,
        };
        let (kind, error) = match refused {
            limits::Limited::Rate(retry_after) => (
                "rate_limit",
                EgressError::RateLimited {
                    rule: rule.name.to_string(),
                    per_second: route.rate_limit.map_or(0, |l| l.per_second),
                    retry_after,
                },
            ),
            limits::Limited::Concurrency(limit) => (
                "max_concurrent",
                EgressError::TooManyConcurrent {
                    rule: rule.name.to_string(),
                    limit,
                },
            ),
        };
        self.metrics
            .rule_limited
            .with_label_values(&[&rule.name, kind])
            .inc();
        Err(error)
    }

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
    /// is connected to, so DNS cannot change between check and connect. The lookup and
    /// a refusal are counted in the metrics.
    ///
    /// Fails when resolution fails, or when the guard refuses every address.
    pub async fn addresses(
        &self,
        route: &Route,
        destination: &Destination,
    ) -> Result<Guarded, EgressError> {
        self.guarded(route, destination, true).await
    }

    /// [`Egress::addresses`] without counting anything: what a check of the policy
    /// shows a real request would meet.
    ///
    /// Fails as [`Egress::addresses`].
    pub async fn addresses_uncounted(
        &self,
        route: &Route,
        destination: &Destination,
    ) -> Result<Guarded, EgressError> {
        self.guarded(route, destination, false).await
    }

    async fn guarded(
        &self,
        route: &Route,
        destination: &Destination,
        count: bool,
    ) -> Result<Guarded, EgressError> {
        // Every path out passes here before it connects: with fail_closed, no traffic
        // leaves while its audit line could not be written.
        if self
            .audit_gate
            .as_ref()
            .is_some_and(|sink| sink.failing_since().is_some())
        {
            return Err(EgressError::AuditUnavailable);
        }
        let candidates = if route.endpoints.is_empty() {
            let ips = self
                .resolve(&destination.host, route.connect_timeout, count)
                .await
                .map_err(|e| EgressError::Dns {
                    host: destination.host.to_string(),
                    timed_out: e == ResolveError::Timeout,
                    reason: match e {
                        ResolveError::Failed(why) => why,
                        other => other.to_string(),
                    },
                })?;
            with_port(&ips, destination.port)
        } else {
            route.endpoint_addrs(destination.port).collect()
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
        if let Some(guarded) = Guarded::new(allowed) {
            return Ok(guarded);
        }
        match refused {
            None => Err(EgressError::NoAddress {
                destination: destination.to_string(),
            }),
            Some((addr, class)) => {
                if count {
                    self.metrics
                        .address_refused
                        .with_label_values(&[class.as_str()])
                        .inc();
                }
                Err(EgressError::AddressRefused {
                    destination: destination.to_string(),
                    addr,
                    class,
                })
            }
        }
    }

    /// Resolves `host`; with `count`, the lookup of a name is counted by its result and
    /// duration.
    /// Looks `host` up, never for longer than `limit` (the rule's connect timeout),
    /// whatever the name servers do (drop queries, or nothing listens).
    async fn resolve(
        &self,
        host: &Host,
        limit: std::time::Duration,
        count: bool,
    ) -> Result<Vec<IpAddr>, ResolveError> {
        let started = Instant::now();
        let resolved = match tokio::time::timeout(limit, self.resolver.lookup(host)).await {
            Ok(Ok((addrs, cached))) => {
                if cached && count {
                    self.metrics.dns.cache_hit();
                }
                Ok(addrs)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ResolveError::Timeout),
        };
        if count && matches!(host, Host::Name(_)) {
            let result = match &resolved {
                Ok(_) => LookupResult::Ok,
                Err(ResolveError::NotFound) => LookupResult::NxDomain,
                Err(ResolveError::NoRecords) => LookupResult::NoRecords,
                Err(ResolveError::Failed(_)) => LookupResult::Error,
                Err(ResolveError::Timeout) => LookupResult::Timeout,
            };
            self.metrics.dns.observe(result, started.elapsed());
        }
        resolved
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::policy::Policy;

    fn egress() -> Egress {
        let metrics = Metrics::new(prometheus::Registry::new()).unwrap();
        Egress {
            store: PolicyStore::from_policy(Policy::empty()),
            resolver: Resolver::new(&["127.0.0.1:9".parse().unwrap()]).unwrap(),
            pool: Pool::new(metrics.upstream.clone()),
            metrics,
            audit_gate: None,
            rule_limits: limits::RuleLimits::default(),
        }
    }

    fn route(endpoints: &[&str], allow_private: bool) -> Route {
        let mut route = Policy::empty().default_route();
        route.endpoints = endpoints.iter().map(|e| e.parse().unwrap()).collect();
        route.allow_private = allow_private;
        route
    }

    fn destination() -> Destination {
        Destination {
            host: Host::Name("api.example.com".into()),
            port: 443,
        }
    }

    #[tokio::test]
    async fn mixed_answers_keep_only_what_the_guard_passes() {
        let addrs = egress()
            .addresses(
                &route(&["10.0.0.1:0", "8.8.8.8:0", "169.254.169.254:0"], false),
                &destination(),
            )
            .await
            .unwrap();
        assert_eq!(addrs.as_slice(), ["8.8.8.8:443".parse().unwrap()]);
    }

    #[tokio::test]
    async fn nothing_left_is_refused_with_the_first_class_and_counted() {
        let egress = egress();
        let err = egress
            .addresses(
                &route(&["169.254.169.254:80", "10.0.0.1:80"], false),
                &destination(),
            )
            .await
            .unwrap_err();
        match err {
            EgressError::AddressRefused { addr, class, .. } => {
                assert_eq!(addr, IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)));
                assert_eq!(class.as_str(), "link_local");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert!(egress
            .metrics
            .render()
            .contains("egress_address_refused_total{class=\"link_local\"} 1"));
    }

    #[tokio::test]
    async fn allow_private_lets_private_through_but_never_unspecified() {
        let egress = egress();
        let addrs = egress
            .addresses(&route(&["10.0.0.1:80", "0.0.0.0:80"], true), &destination())
            .await
            .unwrap();
        assert_eq!(addrs.as_slice(), ["10.0.0.1:80".parse().unwrap()]);
    }
}
