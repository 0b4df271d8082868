//! Policy documents → a compiled [`Policy`](super::Policy), with every error reported
//! as `file:line: field.path: message`.
//!
//! Each file is parsed on its own, so a syntax error in one still lets the others be
//! checked; then the documents merge (lists concatenate, names are unique across files,
//! `defaults` appears at most once) and every value is validated, collecting all errors.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::document::{DefaultsDoc, Document, LineIndex, ListenerDoc, Protocol, RouteBy, RuleDoc};
use super::hosts::{parse_pattern, HostMatcher};
use super::values::{
    check_name, dedup, parse_duration, parse_endpoint, parse_ip, parse_source, serde_error,
};
use super::{Defaults, Listener, ListenerTls, Policy, Route, Rule};
use super::{PolicyError, PolicyErrors, PolicyFile};
use crate::wire::host::parse_authority;

mod dns;
mod limits;

// Also reachable here, where the policy is compiled.
pub use super::store::load_dir;

/// Compiles a set of documents that merge into one policy. No documents, or documents
/// without content, give the empty policy (deny mode).
///
/// Fails with every error found when any document is invalid.
pub fn compile(files: &[PolicyFile]) -> Result<Policy, PolicyErrors> {
    let mut cx = Compiler::default();
    let docs: Vec<Parsed<'_>> = files.iter().filter_map(|file| cx.parse(file)).collect();
    let defaults = cx.defaults(&docs);
    let listeners = cx.listeners(&docs);
    let (rules, hosts) = cx.rules(&docs, &defaults);
    let (allocations, too_small) = dns::allocations(&listeners, &rules);
    for (listener, message) in too_small {
        cx.too_small(&docs, &listener, message);
    }
    if !cx.errors.is_empty() {
        let order: HashMap<&str, usize> = files
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.as_str(), i))
            .collect();
        cx.errors
            .sort_by_key(|e| (order.get(e.file.as_str()).copied(), e.line));
        return Err(PolicyErrors(cx.errors));
    }
    Ok(Policy {
        defaults,
        listeners,
        rules,
        hosts,
        allocations,
        sources: files.to_vec(),
    })
}

/// A document that parsed, with what errors need to point into it.
struct Parsed<'a> {
    file: &'a str,
    doc: Document,
    text: &'a str,
    /// Built on the first error only: for a 100k-rule file the index is tens of MiB
    /// that a valid set never needs.
    lines: std::cell::OnceCell<LineIndex>,
}

impl Parsed<'_> {
    fn lines(&self) -> &LineIndex {
        self.lines.get_or_init(|| LineIndex::new(self.text))
    }
}

#[derive(Default)]
struct Compiler {
    errors: Vec<PolicyError>,
    /// One copy of each distinct route, port list and listener list: a policy of 100k
    /// rules has a handful of each.
    shared: Shared,
}

#[derive(Default)]
struct Shared {
    routes: HashMap<Route, Arc<Route>>,
    ports: HashMap<Vec<u16>, Arc<[u16]>>,
    listeners: HashMap<Vec<String>, Arc<[String]>>,
}

/// The shared copy of `value`, made on first use.
fn share<K, V>(map: &mut HashMap<K, Arc<V>>, key: K) -> Arc<V>
where
    K: std::hash::Hash + Eq + Clone,
    V: ?Sized,
    Arc<V>: From<K>,
{
    if let Some(shared) = map.get(&key) {
        return Arc::clone(shared);
    }
    let value = Arc::from(key.clone());
    map.insert(key, Arc::clone(&value));
    value
}

impl Compiler {
    fn error(&mut self, at: &Parsed<'_>, path: String, message: String) {
        self.errors.push(PolicyError {
            file: at.file.to_owned(),
            line: at.lines().line(&path),
            path,
            message,
        });
    }

    fn parse<'a>(&mut self, file: &'a PolicyFile) -> Option<Parsed<'a>> {
        match serde_yaml::from_str::<Option<Document>>(&file.text) {
            Ok(doc) => Some(Parsed {
                file: &file.name,
                doc: doc.unwrap_or_default(),
                text: &file.text,
                lines: std::cell::OnceCell::new(),
            }),
            Err(e) => {
                // serde stops at the first error; every other one is found part by part,
                // and what is left is compiled too, so bad values come in the same answer.
                let shaped = super::shape::shape(&file.text).filter(|s| !s.errors.is_empty());
                let Some(shaped) = shaped else {
                    self.errors.push(serde_error(&file.name, &e));
                    return None;
                };
                let lines = LineIndex::new(&file.text);
                for (path, message) in shaped.errors {
                    self.errors.push(PolicyError {
                        file: file.name.clone(),
                        line: lines.line(&path),
                        path,
                        message,
                    });
                }
                shaped.rest.map(|doc| Parsed {
                    file: &file.name,
                    doc,
                    text: &file.text,
                    lines: lines.into(),
                })
            }
        }
    }

    fn defaults(&mut self, docs: &[Parsed<'_>]) -> Defaults {
        let mut out = Defaults::default();
        let mut first: Option<(&Parsed<'_>, &DefaultsDoc)> = None;
        for at in docs {
            let Some(doc) = &at.doc.defaults else {
                continue;
            };
            if let Some((prev, _)) = first {
                let place = place(prev, "defaults");
                let message = format!("defaults already given in {place}; a set has one");
                self.error(at, "defaults".into(), message);
                continue;
            }
            first = Some((at, doc));
            out.mode = doc.mode.unwrap_or_default();
            out.allow_private = doc.allow_private.unwrap_or(false);
            if let Some(t) = self.timeout(at, "defaults", "connect_timeout", &doc.connect_timeout) {
                out.connect_timeout = t;
            }
            out.request_timeout = self.request_timeout(at, "defaults", &doc.request_timeout, None);
            if let Some(t) = self.timeout(at, "defaults", "idle_timeout", &doc.idle_timeout) {
                out.idle_timeout = t;
            }
        }
        out
    }

    /// `request_timeout`, where `0s` means none; `fallback` when absent or invalid.
    fn request_timeout(
        &mut self,
        at: &Parsed<'_>,
        parent: &str,
        raw: &Option<String>,
        fallback: Option<Duration>,
    ) -> Option<Duration> {
        let Some(raw) = raw else {
            return fallback;
        };
        match parse_duration(raw) {
            Ok(t) => (!t.is_zero()).then_some(t),
            Err(m) => {
                self.error(at, format!("{parent}.request_timeout"), m);
                fallback
            }
        }
    }

    /// A timeout that must be more than zero.
    fn timeout(
        &mut self,
        at: &Parsed<'_>,
        parent: &str,
        field: &str,
        raw: &Option<String>,
    ) -> Option<Duration> {
        let raw = raw.as_ref()?;
        let path = format!("{parent}.{field}");
        match parse_duration(raw) {
            Ok(t) if t.is_zero() => {
                let message = format!("{raw:?} is not a valid {field} (more than 0)");
                self.error(at, path, message);
                None
            }
            Ok(t) => Some(t),
            Err(m) => {
                self.error(at, path, m);
                None
            }
        }
    }

    fn port(&mut self, at: &Parsed<'_>, path: String, value: i64) -> Option<u16> {
        match u16::try_from(value) {
            Ok(port) if port != 0 => Some(port),
            _ => {
                self.error(at, path, format!("{value} is not a port (1-65535)"));
                None
            }
        }
    }

    fn name(&mut self, at: &Parsed<'_>, path: String, name: &str) {
        if let Err(message) = check_name(name) {
            self.error(at, path, message);
        }
    }

    fn listeners(&mut self, docs: &[Parsed<'_>]) -> Vec<Listener> {
        // Where a name or an address was first declared: (document, listener) indices,
        // turned into `file:line` only for a message, so that a valid set never builds
        // a line index.
        let first = |d: usize, i: usize| place(&docs[d], &format!("listeners[{i}].name"));
        let mut out: Vec<Listener> = Vec::new();
        let mut seen: HashMap<&str, (usize, usize)> = HashMap::new();
        let mut bound: Vec<(IpAddr, u16, &str, (usize, usize))> = Vec::new();
        for (d, at) in docs.iter().enumerate() {
            for (i, doc) in at.doc.listeners.iter().enumerate() {
                let path = format!("listeners[{i}]");
                self.name(at, format!("{path}.name"), &doc.name);
                if let Some(&(pd, pi)) = seen.get(doc.name.as_str()) {
                    let message = format!(
                        "listener name {:?} already used in {}",
                        doc.name,
                        first(pd, pi)
                    );
                    self.error(at, format!("{path}.name"), message);
                } else {
                    seen.insert(&doc.name, (d, i));
                }
                let Some(listener) = self.listener(at, &path, doc) else {
                    continue;
                };
                let clash = bound.iter().find(|(ip, port, _, _)| {
                    *port == listener.port
                        && (*ip == listener.address
                            || ip.is_unspecified()
                            || listener.address.is_unspecified())
                });
                if let Some(&(ip, port, name, (pd, pi))) = clash {
                    let message = format!(
                        "{} port {} overlaps listener {name:?} on {ip} port {port} ({})",
                        listener.address,
                        listener.port,
                        first(pd, pi)
                    );
                    self.error(at, format!("{path}.port"), message);
                }
                bound.push((listener.address, listener.port, &doc.name, (d, i)));
                out.push(listener);
            }
        }
        out
    }

    fn listener(&mut self, at: &Parsed<'_>, path: &str, doc: &ListenerDoc) -> Option<Listener> {
        let port = self.port(at, format!("{path}.port"), doc.port);
        let address = match &doc.address {
            None => Some(IpAddr::from([0, 0, 0, 0])),
            Some(raw) => match parse_ip(raw) {
                Some(ip) => Some(ip),
                None => {
                    let message = format!("{raw:?} is not an IP address");
                    self.error(at, format!("{path}.address"), message);
                    None
                }
            },
        };
        let route_by = self.route_by(at, path, doc);
        let forward_to = match (&doc.forward_to, doc.protocol) {
            (None, Protocol::Tcp) if route_by == RouteBy::DestinationAddress => None,
            (Some(_), Protocol::Tcp) if route_by == RouteBy::DestinationAddress => {
                let message =
                    "a listener routed by destination_address has no forward_to".to_owned();
                self.error(at, format!("{path}.forward_to"), message);
                None
            }
            (None, Protocol::Tcp) => {
                let message = format!("tcp listener {:?} needs forward_to (host:port)", doc.name);
                self.error(at, path.to_owned(), message);
                None
            }
            (None, _) => None,
            (Some(_), protocol) if protocol != Protocol::Tcp => {
                let message = "forward_to is only for tcp listeners".to_owned();
                self.error(at, format!("{path}.forward_to"), message);
                None
            }
            (Some(raw), _) => match parse_authority(raw) {
                Ok((host, Some(port))) if !raw.contains('*') => Some((host, port)),
                _ => {
                    let message = format!("{raw:?} is not a destination (host:port)");
                    self.error(at, format!("{path}.forward_to"), message);
                    None
                }
            },
        };
        let target_port = match doc.target_port {
            Some(value) => self.port(at, format!("{path}.target_port"), value),
            None => Some(match doc.protocol {
                Protocol::Http | Protocol::Connect => 80,
                Protocol::Tls => 443,
                Protocol::Dns => 53,
                Protocol::Tcp => forward_to.as_ref().map_or(0, |(_, port)| *port),
            }),
        };
        let tls = doc.tls.as_ref().and_then(|tls| {
            if doc.protocol == Protocol::Tls {
                let message =
                    "a tls listener passes TLS through by SNI; it cannot also terminate it";
                self.error(at, format!("{path}.tls"), message.to_owned());
                return None;
            }
            let require = tls.require_client_cert.unwrap_or(false);
            if require && tls.client_ca.is_none() {
                let message = "require_client_cert needs client_ca".to_owned();
                self.error(at, format!("{path}.tls.require_client_cert"), message);
                return None;
            }
            Some(ListenerTls {
                cert: tls.cert.clone().into(),
                key: tls.key.clone().into(),
                client_ca: tls.client_ca.clone().map(Into::into),
                require_client_cert: require,
            })
        });
        let check_sni = doc.check_sni.unwrap_or(false);
        if check_sni && doc.protocol != Protocol::Connect {
            let message = "check_sni is only for connect listeners".to_owned();
            self.error(at, format!("{path}.check_sni"), message);
        }
        let dns = self.dns_listener(at, path, doc);
        Some(Listener {
            name: doc.name.clone(),
            address: address?,
            port: port?,
            protocol: doc.protocol,
            target_port: target_port?,
            forward_to,
            tls,
            proxy_protocol: doc.proxy_protocol.unwrap_or(false),
            check_sni,
            route_by,
            dns: dns?,
        })
    }

    fn rules(&mut self, docs: &[Parsed<'_>], defaults: &Defaults) -> (Vec<Arc<Rule>>, HostMatcher) {
        // Rules name listeners as written, valid or not, so that one bad listener
        // does not also fail every rule that names it.
        let declared: Vec<&str> = docs
            .iter()
            .flat_map(|at| at.doc.listeners.iter().map(|l| l.name.as_str()))
            .collect();
        let mut rules = Vec::new();
        let mut hosts = HostMatcher::default();
        // (document, rule) of each name's first use: a place is only made for a message.
        let mut seen: HashMap<&str, (usize, usize)> = HashMap::new();
        for (d, at) in docs.iter().enumerate() {
            for (i, doc) in at.doc.rules.iter().enumerate() {
                let path = format!("rules[{i}]");
                self.name(at, format!("{path}.name"), &doc.name);
                if let Some(&(pd, pi)) = seen.get(doc.name.as_str()) {
                    let prev = place(&docs[pd], &format!("rules[{pi}].name"));
                    let message = format!("rule name {:?} already used in {prev}", doc.name);
                    self.error(at, format!("{path}.name"), message);
                } else {
                    seen.insert(&doc.name, (d, i));
                }
                let Some(rule) = self.rule(at, &path, doc, defaults, &declared) else {
                    continue;
                };
                let index = u32::try_from(rules.len()).unwrap_or(u32::MAX);
                for pattern in &rule.hosts {
                    hosts.insert(pattern, index);
                }
                rules.push(Arc::new(rule));
            }
        }
        (rules, hosts)
    }

    fn rule(
        &mut self,
        at: &Parsed<'_>,
        path: &str,
        doc: &RuleDoc,
        defaults: &Defaults,
        declared: &[&str],
    ) -> Option<Rule> {
        let before = self.errors.len();
        let mut hosts = Vec::new();
        if doc.hosts.is_empty() {
            self.error(at, format!("{path}.hosts"), "empty hosts list".into());
        }
        for (j, raw) in doc.hosts.iter().enumerate() {
            match parse_pattern(raw) {
                Ok(p) if !hosts.contains(&p) => hosts.push(p),
                Ok(_) => {}
                Err(e) => self.error(at, format!("{path}.hosts[{j}]"), e.to_string()),
            }
        }
        let ports = self.list(at, path, "ports", doc.ports.as_deref(), |cx, p, v| {
            cx.port(at, p, *v)
        });
        let sources = self.list(at, path, "sources", doc.sources.as_deref(), |cx, p, raw| {
            let source = parse_source(raw);
            if let Err(m) = &source {
                cx.error(at, p, m.clone());
            }
            source.ok()
        });
        let listeners = self.list(
            at,
            path,
            "listeners",
            doc.listeners.as_deref(),
            |cx, p, n| {
                if !declared.contains(&n.as_str()) {
                    let known = match declared {
                        [] => "none are declared".to_owned(),
                        names => format!("declared: {}", names.join(", ")),
                    };
                    cx.error(at, p, format!("{n:?} is not a declared listener ({known})"));
                }
                Some(n.clone())
            },
        );
        let mut endpoints = Vec::new();
        for (j, raw) in doc.endpoints.iter().flatten().enumerate() {
            match parse_endpoint(raw) {
                Some(addr) => endpoints.push(addr),
                None => {
                    let message = format!("{raw:?} is not an endpoint (ip:port or ip)");
                    self.error(at, format!("{path}.endpoints[{j}]"), message);
                }
            }
        }
        let connect = self.timeout(at, path, "connect_timeout", &doc.connect_timeout);
        let idle = self.timeout(at, path, "idle_timeout", &doc.idle_timeout);
        let request_timeout =
            self.request_timeout(at, path, &doc.request_timeout, defaults.request_timeout);
        let (rate_limit, max_concurrent) = self.limits(at, path, doc);
        if self.errors.len() > before {
            return None;
        }
        let shared = &mut self.shared;
        let route = Route {
            connect_timeout: connect.unwrap_or(defaults.connect_timeout),
            request_timeout,
            idle_timeout: idle.unwrap_or(defaults.idle_timeout),
            endpoints,
            tls_origination: doc.tls_origination.unwrap_or(false),
            allow_private: doc.allow_private.unwrap_or(defaults.allow_private),
            upstream_protocol: doc.upstream_protocol.unwrap_or_default(),
            ca_file: doc.ca_file.clone().map(Into::into),
            rate_limit,
            max_concurrent,
        };
        Some(Rule {
            name: doc.name.as_str().into(),
            hosts: hosts.into_boxed_slice(),
            action: doc.action,
            ports: ports.map(|p| share(&mut shared.ports, dedup(p))),
            sources: sources.unwrap_or_default().into_boxed_slice(),
            listeners: listeners.map(|l| share(&mut shared.listeners, dedup(l))),
            route: share(&mut shared.routes, route),
        })
    }

    /// An optional list that, when present, may not be empty (omitting it means "any").
    fn list<T, U>(
        &mut self,
        at: &Parsed<'_>,
        parent: &str,
        field: &str,
        items: Option<&[T]>,
        mut item: impl FnMut(&mut Self, String, &T) -> Option<U>,
    ) -> Option<Vec<U>> {
        let items = items?;
        if items.is_empty() {
            let message = format!("empty {field} list (omit {field} to match any)");
            self.error(at, format!("{parent}.{field}"), message);
        }
        let out = items
            .iter()
            .enumerate()
            .filter_map(|(j, v)| item(self, format!("{parent}.{field}[{j}]"), v))
            .collect();
        Some(out)
    }
}

/// `file:line` of `path` in a document, for messages that point to another place.
fn place(at: &Parsed<'_>, path: &str) -> String {
    match at.lines().line(path) {
        Some(line) => format!("{}:{line}", at.file),
        None => at.file.to_owned(),
    }
}
