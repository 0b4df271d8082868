//! `POST /policy/check`: what a request to one destination would meet — the policy's
//! decision and why, then (unless asked not to) the name resolved and the address guard
//! applied, exactly as the egress path does, without counting anything.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use egress_admin::api::{CheckAnswer, CheckRequest};
use egress_admin::ControlError;

use crate::egress::{Destination, Egress};
use crate::error::{denial_details, EgressError};
use crate::policy::{Decision, HostPattern, Policy, Query, Verdict};
use crate::source::Source;
use crate::upstream::Transport;
use crate::wire::host::{parse_host, Host};

/// The answer to `request` on `policy` (at `version`), resolved and guarded by
/// `egress` unless the request says not to. A destination the guard refuses is a
/// denial, as it would be for a real request; a name that does not resolve keeps its
/// decision, with the details a real request's audit line would show.
///
/// Fails when the host, source or listener is not valid.
pub async fn check(
    egress: &Egress,
    policy: &Policy,
    version: u64,
    request: &CheckRequest,
) -> Result<CheckAnswer, ControlError> {
    let (mut answer, decision, host) = decide(policy, version, request)?;
    if !request.resolve || decision.verdict == Verdict::Deny {
        return Ok(answer);
    }
    let route = policy.route(&decision);
    let transport = Transport::for_route(&route, &host, egress.store.dir());
    let destination = Destination {
        port: transport.upstream_port(request.port),
        host,
    };
    match egress.addresses_uncounted(&route, &destination).await {
        Ok(addrs) => {
            answer.addresses = addrs.as_slice().iter().map(ToString::to_string).collect();
        }
        Err(refused @ EgressError::AddressRefused { .. }) => {
            answer.decision = "deny".to_owned();
            answer.why = format!("{}; {refused}", answer.why);
            answer.details = Some(refused.details().into_owned());
        }
        Err(other) => {
            answer.why = format!("{}; {other}", answer.why);
            answer.details = Some(other.details().into_owned());
        }
    }
    Ok(answer)
}

/// What `policy` alone decides for the destination `request` names: no lookup, no
/// guard (a suggestion asks the policy, not the network).
///
/// Fails when the host, source or listener is not valid.
pub fn policy_only(
    policy: &Policy,
    version: u64,
    request: &CheckRequest,
) -> Result<CheckAnswer, ControlError> {
    decide(policy, version, request).map(|(answer, _, _)| answer)
}

/// What `policy` (at `version`) decides for the destination a check names, and why.
fn decide(
    policy: &Policy,
    version: u64,
    request: &CheckRequest,
) -> Result<(CheckAnswer, Decision, Host), ControlError> {
    let host =
        parse_host(&request.host).map_err(|e| ControlError::BadRequest(format!("host: {e}")))?;
    let source = match request.source.as_deref() {
        None => Source::from_addr(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)),
        Some(id) if id.contains("://") => Source {
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            identity: Some(id.to_owned()),
        },
        Some(raw) => {
            let addr = raw
                .parse::<SocketAddr>()
                .or_else(|_| raw.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 0)))
                .map_err(|_| {
                    ControlError::BadRequest(format!(
                        "source {raw:?} is neither an IP address nor an identity (spiffe://...)"
                    ))
                })?;
            Source::from_addr(addr)
        }
    };
    let declared: Vec<&str> = policy.listeners().iter().map(|l| l.name.as_str()).collect();
    let listener = match request.listener.as_deref() {
        Some(name) if declared.contains(&name) => name,
        Some(name) => {
            return Err(ControlError::BadRequest(format!(
                "no listener named {name:?}; the policy declares: {}",
                if declared.is_empty() {
                    "none".to_owned()
                } else {
                    declared.join(", ")
                }
            )))
        }
        None => declared.first().copied().unwrap_or(""),
    };
    let query = Query {
        host: &host,
        port: request.port,
        listener,
        source: &source,
    };
    let decision = policy.decide(&query);
    let destination = format!("{host}:{}", request.port);
    let mode = format!("{:?}", policy.defaults().mode).to_lowercase();
    let why = match (&decision.rule, decision.verdict) {
        (Some(rule), verdict) => {
            let pattern = rule
                .hosts
                .iter()
                .find(|p| pattern_matches(p, &host))
                .map(ToString::to_string)
                .unwrap_or_default();
            let what = match verdict {
                Verdict::Allow => "allows it",
                Verdict::Deny => "denies it",
                Verdict::WouldDeny => {
                    "would deny it; audit mode forwards it and marks its audit line"
                }
            };
            format!("rule {} {what} (host pattern {pattern})", rule.name)
        }
        (None, verdict) => {
            let near: Vec<&str> = policy
                .rules()
                .iter()
                .filter(|r| r.hosts.iter().any(|p| pattern_matches(p, &host)))
                .map(|r| &*r.name)
                .collect();
            let hint = if near.is_empty() {
                String::new()
            } else {
                format!(
                    " (rule {} names the host but not this port, source or listener)",
                    near.join(", ")
                )
            };
            let outcome = match verdict {
                Verdict::Allow => "lets it out",
                Verdict::Deny => "refuses it",
                Verdict::WouldDeny => {
                    "would refuse it; audit mode forwards it and marks its audit line"
                }
            };
            format!(
                "no rule matches {destination} on listener {listener}{hint}; mode {mode} {outcome}"
            )
        }
    };
    let answer = CheckAnswer {
        decision: match decision.verdict {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::WouldDeny => "would_deny",
        }
        .to_owned(),
        rule: decision.rule.as_ref().map(|r| r.name.to_string()),
        why,
        destination,
        listener: listener.to_owned(),
        version,
        details: match decision.verdict {
            Verdict::Deny => {
                Some(denial_details(decision.rule.as_deref().map(|r| &*r.name)).into_owned())
            }
            _ => None,
        },
        addresses: Vec::new(),
    };
    Ok((answer, decision, host))
}

fn pattern_matches(pattern: &HostPattern, host: &Host) -> bool {
    match (pattern, host) {
        (HostPattern::Name(name), Host::Name(h)) => name == h,
        (HostPattern::Below(suffix), Host::Name(h)) => h
            .strip_suffix(suffix.as_str())
            .is_some_and(|rest| rest.ends_with('.')),
        (HostPattern::AnyName, Host::Name(_)) => true,
        (HostPattern::Ip(ip), Host::Ip(h)) => ip == &h.to_canonical(),
        (HostPattern::Net(net), Host::Ip(h)) => net.contains(&h.to_canonical()),
        _ => false,
    }
}
