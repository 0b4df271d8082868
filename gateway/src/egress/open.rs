//! [`Egress::open`]: decide → limits → resolve → guard, the one sequence every listener
//! runs before it connects upstream, and the one place that notes its outcome on the
//! audit record. What it hands back carries [`Guarded`] addresses, the only kind an
//! upstream connection can be opened to.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use super::limits::Admitted;
use super::{Destination, Egress, Judged};
use crate::audit::Recorder;
use crate::connections::Entry;
use crate::error::EgressError;
use crate::policy::{Route, Verdict};
use crate::source::Source;
use crate::upstream::Transport;
use crate::wire::host::Host;

/// Addresses the address guard passed for one destination: never empty, and only
/// [`Egress`] builds them, so an upstream socket cannot be opened to an address that
/// skipped the guard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guarded(Vec<SocketAddr>);

impl Guarded {
    /// Wraps addresses the guard passed; private to the egress sequence.
    pub(super) fn new(addrs: Vec<SocketAddr>) -> Option<Self> {
        (!addrs.is_empty()).then_some(Guarded(addrs))
    }

    /// The addresses, in the order they are tried.
    pub fn as_slice(&self) -> &[SocketAddr] {
        &self.0
    }

    /// The first address: the one an error names when nothing was tried yet.
    pub fn first(&self) -> SocketAddr {
        self.0[0]
    }
}

/// What leaves the gateway, as the listener knows it.
#[derive(Debug, Clone, Copy)]
pub enum Leg<'a> {
    /// An HTTP request: the rule's transport (TLS origination, HTTP/2) decides the
    /// upstream port.
    Request,
    /// A tunnel (tls, tcp, connect): bytes relayed as they come.
    Tunnel {
        /// The tunnel's registry entry. The decision is registered on it, so that a
        /// policy swapped in later decides the tunnel again and revokes it if denied.
        entry: &'a Entry,
        /// An IP-literal destination needs a rule that lists it, even where the mode
        /// lets everything else out (CONNECT: name rules cannot see an address).
        literal_needs_rule: bool,
    },
}

/// Where the traffic goes, from whom, on which listener.
#[derive(Debug, Clone, Copy)]
pub struct Outbound<'a> {
    /// The destination the client named.
    pub destination: &'a Destination,
    /// The listener's name.
    pub listener: &'a str,
    /// The client.
    pub source: &'a Source,
    /// Request or tunnel.
    pub leg: Leg<'a>,
}

/// Traffic the policy, the rule's limits and the guard let out, ready to connect.
#[derive(Debug)]
pub struct Opened {
    /// The decision, with the policy it was made on.
    pub judged: Judged,
    /// Where to connect: the destination, on the port the transport asks for.
    pub upstream: Destination,
    /// How a request reaches the upstream ([`Transport::PLAIN`] for tunnels).
    pub transport: Transport,
    /// The addresses to try.
    pub addrs: Guarded,
    /// Counted by the rule's `max_concurrent` while it lives.
    pub admitted: Admitted,
}

impl Opened {
    /// The route of the rule that allowed it (or the defaults').
    pub fn route(&self) -> Cow<'_, Route> {
        self.judged.policy.route(&self.judged.decision)
    }
}

impl Egress {
    /// Decides `outbound`, applies the rule's limits, resolves and guards, and notes
    /// each step on `recorder`: the decision, the rule, the upstream cluster, and
    /// `audit_would_deny[RULE]` for traffic only audit mode lets out.
    ///
    /// Fails with the denial, a limit, a lookup failure or the guard's refusal; the
    /// caller writes it with the record (an HTTP reply, or a tunnel's line).
    pub async fn open(
        &self,
        outbound: Outbound<'_>,
        recorder: &mut Recorder,
    ) -> Result<Opened, EgressError> {
        let destination = outbound.destination;
        let judged = match outbound.leg {
            Leg::Request => self.decide(destination, outbound.listener, outbound.source),
            Leg::Tunnel { entry, .. } => self.decide_tunnel(outbound, entry),
        };
        recorder.set_decision(judged.label());
        recorder.record().route_name = judged.route_name();
        let route = judged.route(destination)?;
        if let Leg::Tunnel {
            literal_needs_rule: true,
            ..
        } = outbound.leg
        {
            if matches!(destination.host, Host::Ip(_))
                && judged.decision.verdict == Verdict::Allow
                && judged.decision.rule.is_none()
            {
                return Err(EgressError::Denied {
                    destination: destination.to_string(),
                    rule: None,
                    why: "a CONNECT to an IP address needs a rule that lists it".to_owned(),
                });
            }
        }
        let transport = match outbound.leg {
            Leg::Request => Transport::for_route(&route, &destination.host, self.store.dir()),
            Leg::Tunnel { .. } => Transport::PLAIN,
        };
        let upstream = Destination {
            host: destination.host.clone(),
            port: transport.upstream_port(destination.port),
        };
        recorder.record().upstream_cluster = Some(upstream.cluster_name());
        if judged.decision.verdict == Verdict::WouldDeny {
            let rule = judged.rule_name().unwrap_or("none");
            recorder.record().response_code_details =
                Some(format!("audit_would_deny[{rule}]").into());
        }
        let admitted = self.admit(&judged, &route, outbound.source)?;
        let addrs = self.addresses(&route, &upstream).await?;
        Ok(Opened {
            judged,
            upstream,
            transport,
            addrs,
            admitted,
        })
    }

    /// Decides a tunnel on the policy in force and registers its destination for
    /// re-decision. A policy swapped in between the two would miss the tunnel, so the
    /// decision is taken again until the snapshot it was made on is still in force.
    fn decide_tunnel(&self, outbound: Outbound<'_>, entry: &Entry) -> Judged {
        loop {
            let judged = self.decide(outbound.destination, outbound.listener, outbound.source);
            if judged.decision.verdict != Verdict::Deny {
                let rule = judged.rule_name().map(str::to_owned);
                entry.set_target(outbound.destination.clone(), rule);
            }
            if Arc::ptr_eq(&judged.policy, &self.store.current()) {
                return judged;
            }
        }
    }
}
