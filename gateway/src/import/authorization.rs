//! AuthorizationPolicy on the egress gateway → who may use which rules: an ALLOW policy
//! keeps only the host and port it names, for the sources it names (SPIFFE ids, CIDRs);
//! a DENY policy becomes deny rules as specific as the rules they override.
//!
//! A condition the policy cannot express (JWT claims, paths, methods, `when`, negations)
//! makes the import deny more: the ALLOW clause that needs it is left out, the DENY
//! clause applies without it.

use super::model::{covers, Entry, Model};
use super::yaml::Obj;
use super::{Report, Resource};

/// One `to.operation`: hosts and ports, `None` = any.
#[derive(Debug, Clone, Default)]
struct Operation {
    hosts: Option<Vec<String>>,
    ports: Option<Vec<u16>>,
}

/// One rule of a policy.
#[derive(Debug, Clone, Default)]
struct Clause {
    /// `None` = anyone.
    sources: Option<Vec<String>>,
    /// Empty = any destination.
    to: Vec<Operation>,
    /// Conditions that could not be expressed, for the report.
    unsupported: Vec<String>,
    path: String,
}

impl Clause {
    fn covers(&self, e: &Entry) -> bool {
        self.to.is_empty()
            || self.to.iter().any(|op| {
                op.hosts
                    .as_ref()
                    .is_none_or(|hs| hs.iter().any(|h| covers(h, &e.host)))
                    && op.ports.as_ref().is_none_or(|ps| ps.contains(&e.port))
            })
    }
}

pub(super) fn translate(policies: &[&Resource], model: &mut Model, report: &mut Report) {
    let mut allow: Vec<(String, Clause)> = Vec::new();
    let mut any_allow = false;
    for r in policies {
        let id = r.id();
        let mut spec = Obj::new(Some(&r.spec), "spec");
        let action = spec
            .str("action")
            .unwrap_or_else(|| "ALLOW".to_owned())
            .to_ascii_uppercase();
        for key in ["selector", "targetRef", "targetRefs"] {
            spec.note(
                key,
                report,
                &id,
                "taken to select the egress gateway: this gateway is it",
            );
        }
        spec.drop(
            "provider",
            report,
            &id,
            "external authorization is not supported",
        );
        let clauses: Vec<Clause> = spec
            .list("rules")
            .into_iter()
            .map(|rule| clause(rule, &id, report))
            .collect();
        spec.finish(report, &id);
        match action.as_str() {
            "ALLOW" => {
                any_allow = true;
                for c in clauses {
                    if c.unsupported.is_empty() {
                        allow.push((id.clone(), c));
                    } else {
                        report.dropped(&id, &c.path, &format!("needs {}, which the policy cannot express: this ALLOW rule is left out, so what only it allows is denied", c.unsupported.join(", ")));
                    }
                }
            }
            "DENY" => {
                for c in clauses {
                    if !c.unsupported.is_empty() {
                        report.dropped(&id, &c.path, &format!("{} cannot be expressed: this DENY rule applies without it (denies more)", c.unsupported.join(", ")));
                    }
                    deny(&c, r, model);
                }
            }
            "AUDIT" => report.info(
                &id,
                "spec.action",
                "AUDIT only logs: every request has its audit line already",
            ),
            other => report.dropped(
                &id,
                "spec.action",
                &format!("{other}: external authorization is not supported; not translated"),
            ),
        }
    }
    if any_allow {
        restrict(&allow, model, report);
    }
}

/// Keeps the allowing entries some ALLOW clause covers, with that clause's sources.
fn restrict(allow: &[(String, Clause)], model: &mut Model, report: &mut Report) {
    let mut kept = Vec::new();
    for mut e in std::mem::take(&mut model.entries) {
        if e.deny {
            kept.push(e);
            continue;
        }
        let matching: Vec<&(String, Clause)> = allow.iter().filter(|(_, c)| c.covers(&e)).collect();
        if matching.is_empty() {
            report.info(
                &e.origin,
                "",
                &format!(
                    "{}:{} is denied: no AuthorizationPolicy ALLOW rule covers it",
                    e.host, e.port
                ),
            );
            continue;
        }
        if matching.iter().all(|(_, c)| c.sources.is_some()) {
            let mut sources: Vec<String> = matching
                .iter()
                .flat_map(|(_, c)| c.sources.clone().unwrap_or_default())
                .collect();
            sources.sort();
            sources.dedup();
            e.settings.sources = Some(sources);
        }
        kept.push(e);
    }
    model.entries = kept;
}

/// Deny rules for a DENY clause: its own hosts, and each allowing entry it covers (a
/// more specific allow would win over a wildcard deny otherwise).
fn deny(c: &Clause, r: &Resource, model: &mut Model) {
    let mut add: Vec<(String, u16)> = Vec::new();
    let ops = if c.to.is_empty() {
        vec![Operation::default()]
    } else {
        c.to.clone()
    };
    for op in &ops {
        let ports: Vec<u16> = op.ports.clone().unwrap_or_else(|| vec![0]);
        for host in op.hosts.clone().unwrap_or_else(|| vec!["*".to_owned()]) {
            for p in &ports {
                add.push((host.clone(), *p));
            }
        }
    }
    for e in model.entries.iter().filter(|e| !e.deny && c.covers(e)) {
        add.push((e.host.clone(), e.port));
    }
    for (host, port) in add {
        model.entries.push(Entry {
            host,
            port,
            traffic: super::model::Traffic::Tcp,
            upstream_port: port,
            settings: super::model::Settings {
                sources: c.sources.clone(),
                ..Default::default()
            },
            deny: true,
            origin: r.id(),
            base_name: format!("{}-deny", r.name),
        });
    }
}

fn clause(mut rule: Obj<'_>, id: &str, report: &mut Report) -> Clause {
    let mut c = Clause {
        path: rule.path_of(""),
        ..Clause::default()
    };
    c.path.pop();
    let froms = rule.list("from");
    if !froms.is_empty() {
        let mut sources = Vec::new();
        for mut from in froms {
            let mut source = from.obj("source");
            let mut kinds = 0;
            let principals = source.strs("principals");
            let namespaces = source.strs("namespaces");
            let mut blocks = source.strs("ipBlocks");
            blocks.extend(source.strs("remoteIpBlocks"));
            for (list, map) in [
                (&principals, principal as fn(&str) -> Option<String>),
                (&namespaces, namespace),
                (&blocks, |b: &str| Some(b.to_owned())),
            ] {
                if list.is_empty() {
                    continue;
                }
                kinds += 1;
                for item in list.iter() {
                    match map(item) {
                        Some(s) => sources.push(s),
                        None => c.unsupported.push(format!("the principal {item:?}")),
                    }
                }
            }
            if kinds > 1 {
                c.unsupported.push(
                    "principals, namespaces and ipBlocks together (all must match)".to_owned(),
                );
            }
            if !namespaces.is_empty() {
                report.info(
                    id,
                    &source.path_of("namespaces"),
                    "namespaces become spiffe://cluster.local/ns/NS/* (trust domain cluster.local)",
                );
            }
            for key in ["requestPrincipals", "notRequestPrincipals"] {
                if source.has(key) {
                    c.unsupported.push(format!("{key} (JWT)"));
                }
                source.get(key);
            }
            for key in [
                "notPrincipals",
                "notNamespaces",
                "notIpBlocks",
                "notRemoteIpBlocks",
            ] {
                if source.has(key) {
                    c.unsupported.push(key.to_owned());
                }
                source.get(key);
            }
            source.finish(report, id);
            from.finish(report, id);
        }
        c.sources = Some(sources);
    }
    for mut to in rule.list("to") {
        let mut op = to.obj("operation");
        let hosts = op.strs("hosts");
        let ports: Vec<u16> = op
            .strs("ports")
            .iter()
            .filter_map(|p| p.parse().ok())
            .collect();
        for key in [
            "methods",
            "paths",
            "notHosts",
            "notPorts",
            "notMethods",
            "notPaths",
        ] {
            if op.has(key) {
                c.unsupported.push(key.to_owned());
            }
            op.get(key);
        }
        op.finish(report, id);
        to.finish(report, id);
        c.to.push(Operation {
            hosts: (!hosts.is_empty()).then_some(hosts),
            ports: (!ports.is_empty()).then_some(ports),
        });
    }
    if rule.has("when") {
        c.unsupported.push("when conditions".to_owned());
    }
    rule.get("when");
    rule.finish(report, id);
    c
}

/// `cluster.local/ns/a/sa/b` → `spiffe://cluster.local/ns/a/sa/b`; a trailing `*`
/// only after a `/` (the policy's identity prefixes).
fn principal(p: &str) -> Option<String> {
    let id = format!("spiffe://{}", p.trim_start_matches("spiffe://"));
    match id.strip_suffix('*') {
        Some(prefix) if prefix.ends_with('/') && !prefix[..prefix.len() - 1].contains('*') => {
            Some(id)
        }
        Some(_) => None,
        None if id.contains('*') => None,
        None => Some(id),
    }
}

fn namespace(ns: &str) -> Option<String> {
    (!ns.contains('*') && !ns.is_empty()).then(|| format!("spiffe://cluster.local/ns/{ns}/*"))
}
