//! What the translations build: one entry per host and port that may go out (or is
//! denied), with its settings, and the listeners; then merged into rules and rendered
//! as a policy document with a comment naming where each rule came from.

use std::collections::BTreeSet;

use crate::policy::document::{Action, DefaultsDoc, ListenerDoc, Mode, Protocol, RuleDoc};

use super::Report;

/// How a client speaks to the gateway for an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Traffic {
    /// Plain HTTP (HTTP, HTTP2, GRPC).
    Http,
    /// TLS, read by SNI (HTTPS, TLS).
    Tls,
    /// Opaque bytes (TCP, MONGO, MYSQL, ...).
    Tcp,
}

/// What a rule carries besides its hosts and ports.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Settings {
    pub(crate) request_timeout: Option<String>,
    pub(crate) connect_timeout: Option<String>,
    pub(crate) tls_origination: bool,
    pub(crate) ca_file: Option<String>,
    pub(crate) endpoints: Vec<String>,
    /// `None` = anyone.
    pub(crate) sources: Option<Vec<String>>,
}

/// One host on one port.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// An exact name, `*.suffix`, or an IP literal.
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) traffic: Traffic,
    /// Where the gateway connects (a VirtualService may move it, e.g. 80 → 443).
    pub(crate) upstream_port: u16,
    pub(crate) settings: Settings,
    pub(crate) deny: bool,
    /// The resource it came from (`ServiceEntry ns/name`), and the name rules take.
    pub(crate) origin: String,
    pub(crate) base_name: String,
}

/// A listener and the resource it came from.
#[derive(Debug, Clone)]
pub(crate) struct ListenerEntry {
    pub(crate) doc: ListenerDoc,
    pub(crate) origin: String,
    /// The Istio port it stands for.
    pub(crate) istio_port: u16,
}

/// Everything translated so far.
#[derive(Debug, Default)]
pub(crate) struct Model {
    pub(crate) entries: Vec<Entry>,
    pub(crate) listeners: Vec<ListenerEntry>,
}

/// The rendered document.
pub(crate) struct Rendered {
    pub(crate) text: String,
    pub(crate) rules: usize,
    pub(crate) listeners: usize,
}

/// Whether the host pattern `pattern` (Istio's: exact or `*.suffix`, or `*`) covers `host`.
pub(crate) fn covers(pattern: &str, host: &str) -> bool {
    let (pattern, host) = (pattern.to_ascii_lowercase(), host.to_ascii_lowercase());
    if pattern == "*" || pattern == host {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) if suffix.starts_with('.') => {
            host.ends_with(suffix)
                && host.len() > suffix.len()
                && (!host.starts_with('*') || host[1..].ends_with(suffix))
        }
        _ => false,
    }
}

/// The port a listener binds for an Istio port: privileged ports move up by 8000 (80 →
/// 8080, 443 → 8443), as istio-egressgateway's Service maps them to its container.
pub(crate) fn listener_port(istio_port: u16) -> u16 {
    if istio_port < 1024 {
        istio_port + 8000
    } else {
        istio_port
    }
}

/// Letters, digits, `-`, `_`, `.`; anything else becomes `-`.
pub(crate) fn sanitize(name: &str) -> String {
    let out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    if out.is_empty() {
        "imported".to_owned()
    } else {
        out
    }
}

impl Model {
    /// Adds a listener unless one on the same port exists; returns its name.
    pub(crate) fn add_listener(&mut self, mut entry: ListenerEntry) -> String {
        if let Some(existing) = self.listeners.iter().find(|l| l.doc.port == entry.doc.port) {
            return existing.doc.name.clone();
        }
        let base = sanitize(&entry.doc.name);
        let mut name = base.clone();
        let mut n = 2;
        while self.listeners.iter().any(|l| l.doc.name == name) {
            name = format!("{base}-{n}");
            n += 1;
        }
        entry.doc.name = name.clone();
        self.listeners.push(entry);
        name
    }

    /// Listeners for the traffic the entries carry when no Gateway declared any.
    fn default_listeners(&mut self, report: &mut Report) {
        if !self.listeners.is_empty() {
            return;
        }
        let used: Vec<Traffic> = self
            .entries
            .iter()
            .filter(|e| !e.deny)
            .map(|e| e.traffic)
            .collect();
        let wanted = [
            (Traffic::Http, "http", 8080, Protocol::Http),
            (Traffic::Tls, "tls", 8443, Protocol::Tls),
            (Traffic::Tcp, "connect", 3128, Protocol::Connect),
        ];
        for (traffic, name, port, protocol) in wanted {
            if !used.contains(&traffic) {
                continue;
            }
            self.add_listener(ListenerEntry {
                doc: listener_doc(name, port, protocol),
                origin: String::new(),
                istio_port: port,
            });
        }
        if !self.listeners.is_empty() {
            report.info(
                "",
                "listeners",
                "no Gateway in the input: listeners added for the protocols the ServiceEntries use (http 8080, tls 8443, connect 3128 for TCP)",
            );
        }
    }

    /// Merges entries into rules and renders the document.
    pub(crate) fn render(mut self, report: &mut Report) -> Rendered {
        self.default_listeners(report);
        self.listeners.retain(|l| {
            let orphan = l.doc.protocol == Protocol::Tcp && l.doc.forward_to.is_none();
            if orphan {
                report.dropped(
                    &l.origin,
                    "spec.servers",
                    &format!("TCP port {}: no VirtualService tcp route names its destination, which a tcp listener needs (forward_to)", l.istio_port),
                );
            }
            !orphan
        });
        let rules = self.rules();
        let mut text = String::from(
            "# Imported from Istio resources (egressctl import istio).\n\
             # mode deny is Istio's outboundTrafficPolicy REGISTRY_ONLY: only what is listed goes out.\n",
        );
        let defaults = DefaultsDoc {
            mode: Some(Mode::Deny),
            ..DefaultsDoc::default()
        };
        push_section(&mut text, "defaults", &serialize(&defaults));
        if !self.listeners.is_empty() {
            text.push_str("listeners:\n");
            for l in &self.listeners {
                let comment = if l.origin.is_empty() {
                    String::new()
                } else {
                    format!("from {}, port {}", l.origin, l.istio_port)
                };
                push_item(&mut text, &comment, &serialize(&vec![&l.doc]));
            }
        }
        if !rules.is_empty() {
            text.push_str("rules:\n");
            for (origin, rule) in &rules {
                push_item(
                    &mut text,
                    &format!("from {origin}"),
                    &serialize(&vec![rule]),
                );
            }
        }
        Rendered {
            text,
            rules: rules.len(),
            listeners: self.listeners.len(),
        }
    }

    /// Entries with the same origin, action and settings merge: first the ports of one
    /// host, then the hosts with the same ports.
    fn rules(&self) -> Vec<(String, RuleDoc)> {
        type Key = (String, String, bool, Settings);
        let mut by_host: Vec<(Key, String, BTreeSet<u16>)> = Vec::new();
        for e in &self.entries {
            let key = (
                e.origin.clone(),
                e.base_name.clone(),
                e.deny,
                e.settings.clone(),
            );
            let host = e.host.to_ascii_lowercase();
            match by_host.iter_mut().find(|(k, h, _)| *k == key && *h == host) {
                Some((_, _, ports)) => {
                    ports.insert(e.port);
                }
                None => by_host.push((key, host, BTreeSet::from([e.port]))),
            }
        }
        let mut groups: Vec<(Key, BTreeSet<u16>, Vec<String>)> = Vec::new();
        for (key, host, ports) in by_host {
            match groups.iter_mut().find(|(k, p, _)| *k == key && *p == ports) {
                Some((_, _, hosts)) => hosts.push(host),
                None => groups.push((key, ports, vec![host])),
            }
        }
        let mut names: Vec<String> = Vec::new();
        let mut out = Vec::new();
        for ((origin, base, deny, settings), ports, hosts) in groups {
            let base = sanitize(&base);
            // Port 0 stands for any port (a DENY policy without ports).
            let any_port = ports.contains(&0);
            let ports: Vec<i64> = ports.into_iter().map(i64::from).collect();
            let mut name = base.clone();
            if names.contains(&name) {
                let joined: Vec<String> = ports
                    .iter()
                    .map(|p| {
                        if *p == 0 {
                            "any".to_owned()
                        } else {
                            p.to_string()
                        }
                    })
                    .collect();
                name = format!("{base}-{}", joined.join("-"));
                if deny {
                    name = format!("{name}-deny");
                }
            }
            let stem = name.clone();
            let mut n = 2;
            while names.contains(&name) {
                name = format!("{stem}-{n}");
                n += 1;
            }
            names.push(name.clone());
            let ports = (!any_port).then_some(ports);
            out.push((origin, rule_doc(name, hosts, ports, deny, settings)));
        }
        out
    }
}

fn rule_doc(
    name: String,
    hosts: Vec<String>,
    ports: Option<Vec<i64>>,
    deny: bool,
    s: Settings,
) -> RuleDoc {
    RuleDoc {
        name,
        hosts,
        ports,
        action: if deny { Action::Deny } else { Action::Allow },
        sources: s.sources,
        listeners: None,
        request_timeout: s.request_timeout,
        connect_timeout: s.connect_timeout,
        idle_timeout: None,
        endpoints: (!s.endpoints.is_empty()).then_some(s.endpoints),
        tls_origination: s.tls_origination.then_some(true),
        allow_private: None,
        upstream_protocol: None,
        ca_file: s.ca_file,
        rate_limit: None,
        max_concurrent: None,
    }
}

/// A listener of `protocol` on `port`, with the target port Istio's clients mean.
pub(crate) fn listener_doc(name: &str, port: u16, protocol: Protocol) -> ListenerDoc {
    ListenerDoc {
        name: name.to_owned(),
        port: i64::from(port),
        protocol,
        address: None,
        target_port: None,
        forward_to: None,
        tls: None,
        proxy_protocol: None,
        check_sni: None,
        answer_with: None,
        ttl: None,
        on_deny: None,
        search_suffixes: None,
        auto_allocate: None,
        route_by: None,
    }
}

fn serialize<T: serde::Serialize>(value: &T) -> String {
    // These types always serialize; an empty string would only lose a section.
    serde_yaml::to_string(value).unwrap_or_default()
}

fn push_section(text: &mut String, key: &str, body: &str) {
    text.push_str(key);
    text.push_str(":\n");
    for line in body.lines() {
        text.push_str("  ");
        text.push_str(line);
        text.push('\n');
    }
}

fn push_item(text: &mut String, comment: &str, body: &str) {
    if !comment.is_empty() {
        text.push_str(&format!("  # {comment}\n"));
    }
    for line in body.lines() {
        text.push_str("  ");
        text.push_str(line);
        text.push('\n');
    }
}
