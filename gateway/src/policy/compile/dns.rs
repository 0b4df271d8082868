//! The settings of `dns` listeners and of `tcp` listeners routed by destination address,
//! and the addresses `auto_allocate` gives to TCP services.

use std::time::Duration;

use super::{Compiler, Parsed};
use crate::policy::allocate::{self, Allocations};
use crate::policy::document::{ListenerDoc, Protocol, RouteBy};
use crate::policy::values::{parse_duration, parse_ip};
use crate::policy::{Action, DnsListener, HostPattern, Listener, Rule};
use crate::wire::host::normalize_name;

/// The TTL of answers when a listener sets none: what Istio's DNS proxy uses.
const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// The longest TTL a DNS answer can carry (RFC 2181: 2^31 - 1 seconds).
const MAX_TTL: u64 = (1 << 31) - 1;

impl Compiler {
    /// Reports that the `auto_allocate` of listener `name` cannot serve its hosts.
    pub(super) fn too_small(&mut self, docs: &[Parsed<'_>], name: &str, message: String) {
        for at in docs {
            if let Some(i) = at.doc.listeners.iter().position(|l| l.name == name) {
                self.error(at, format!("listeners[{i}].auto_allocate"), message);
                return;
            }
        }
    }

    /// `route_by`, which only `tcp` listeners take.
    pub(super) fn route_by(&mut self, at: &Parsed<'_>, path: &str, doc: &ListenerDoc) -> RouteBy {
        match doc.route_by {
            Some(route_by) if doc.protocol == Protocol::Tcp => route_by,
            Some(_) => {
                let message = "route_by is only for tcp listeners".to_owned();
                self.error(at, format!("{path}.route_by"), message);
                RouteBy::ForwardTo
            }
            None => RouteBy::ForwardTo,
        }
    }

    /// The DNS settings of a `dns` listener (`Some(None)` for any other listener);
    /// `None` when they are invalid, each error reported.
    pub(super) fn dns_listener(
        &mut self,
        at: &Parsed<'_>,
        path: &str,
        doc: &ListenerDoc,
    ) -> Option<Option<DnsListener>> {
        let fields = [
            ("answer_with", doc.answer_with.is_some()),
            ("ttl", doc.ttl.is_some()),
            ("on_deny", doc.on_deny.is_some()),
            ("search_suffixes", doc.search_suffixes.is_some()),
            ("auto_allocate", doc.auto_allocate.is_some()),
        ];
        if doc.protocol != Protocol::Dns {
            let mut ok = true;
            for (field, _) in fields.iter().filter(|(_, set)| *set) {
                let message = format!("{field} is only for dns listeners");
                self.error(at, format!("{path}.{field}"), message);
                ok = false;
            }
            return ok.then_some(None);
        }
        let before = self.errors.len();
        for (field, set) in [
            ("tls", doc.tls.is_some()),
            ("proxy_protocol", doc.proxy_protocol == Some(true)),
            ("target_port", doc.target_port.is_some()),
        ] {
            if set {
                let message = format!("{field} is not for dns listeners");
                self.error(at, format!("{path}.{field}"), message);
            }
        }
        let mut answer_with = Vec::new();
        for (i, raw) in doc.answer_with.iter().flatten().enumerate() {
            match parse_ip(raw) {
                Some(ip) if !ip.is_unspecified() => answer_with.push(ip.to_canonical()),
                _ => {
                    let message = format!("{raw:?} is not an address to answer with");
                    self.error(at, format!("{path}.answer_with[{i}]"), message);
                }
            }
        }
        let ttl = match &doc.ttl {
            None => DEFAULT_TTL,
            Some(raw) => match parse_duration(raw) {
                Ok(ttl) if ttl.as_secs() <= MAX_TTL && ttl.subsec_nanos() == 0 => ttl,
                Ok(_) => {
                    let message = format!("{raw:?} is not a TTL (whole seconds, at most 68 years)");
                    self.error(at, format!("{path}.ttl"), message);
                    DEFAULT_TTL
                }
                Err(message) => {
                    self.error(at, format!("{path}.ttl"), message);
                    DEFAULT_TTL
                }
            },
        };
        let mut search_suffixes = Vec::new();
        for (i, raw) in doc.search_suffixes.iter().flatten().enumerate() {
            match normalize_name(raw) {
                Ok(name) if !raw.contains('*') => search_suffixes.push(name),
                _ => {
                    let message = format!("{raw:?} is not a search domain (a DNS name)");
                    self.error(at, format!("{path}.search_suffixes[{i}]"), message);
                }
            }
        }
        // The longest first: `ns1.svc.cluster.local` is stripped before `cluster.local`.
        search_suffixes.sort_by_key(|s| std::cmp::Reverse(s.len()));
        search_suffixes.dedup();
        let auto_allocate = doc.auto_allocate.as_ref().and_then(|raw| {
            let invalid = |message: String| (format!("{path}.auto_allocate"), message);
            let checked = match raw.parse::<ipnet::IpNet>() {
                Err(_) => Err(invalid(format!("{raw:?} is not a CIDR"))),
                Ok(net) if net.addr() != net.network() => Err(invalid(format!(
                    "{raw:?} has host bits set; the network is {}",
                    net.trunc()
                ))),
                Ok(net) => Ok(net),
            };
            checked
                .map_err(|(path, message)| self.error(at, path, message))
                .ok()
        });
        (self.errors.len() == before).then_some(Some(DnsListener {
            answer_with,
            ttl,
            on_deny: doc.on_deny.unwrap_or_default(),
            search_suffixes,
            auto_allocate,
        }))
    }
}

/// The addresses of every TCP service, from each `dns` listener's `auto_allocate`
/// range: the exact hosts of allow rules with `ports` that name a `tcp` listener routed
/// by destination address, or (naming no listener) list its port.
///
/// Also returns, for each range too small for its hosts, its listener's name and why.
pub(super) fn allocations(
    listeners: &[Listener],
    rules: &[std::sync::Arc<Rule>],
) -> (Allocations, Vec<(String, String)>) {
    let routed: Vec<&Listener> = listeners
        .iter()
        .filter(|l| l.protocol == Protocol::Tcp && l.route_by == RouteBy::DestinationAddress)
        .collect();
    let mut hosts: Vec<&str> = Vec::new();
    for rule in rules.iter().filter(|r| r.action == Action::Allow) {
        let Some(ports) = &rule.ports else {
            continue;
        };
        // A rule is served by a routed listener that it names, or that listens on one of
        // its ports: traffic redirected to a capture port keeps its original port.
        let served = routed.iter().any(|l| match &rule.listeners {
            Some(names) => names.contains(&l.name),
            None => ports.contains(&l.port),
        });
        if !served {
            continue;
        }
        for pattern in &rule.hosts {
            if let HostPattern::Name(name) = pattern {
                hosts.push(name);
            }
        }
    }
    hosts.sort_unstable();
    hosts.dedup();
    let mut out = Allocations::default();
    let mut errors = Vec::new();
    for listener in listeners {
        let Some(range) = listener.dns.as_ref().and_then(|d| d.auto_allocate) else {
            continue;
        };
        if let Err(e) = out.allocate(range, &hosts) {
            let allocate::TooSmall { usable, needed } = e;
            let message = format!(
                "{range} has {usable} addresses to allocate, and {needed} TCP services need one"
            );
            errors.push((listener.name.clone(), message));
        }
    }
    (out, errors)
}
