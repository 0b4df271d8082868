//! Allowlists from audit logs (`egressctl policy suggest`, `GET /policy/suggest`): each
//! line (formats `istio`, `envoy` and `json`) is read back ([`parse`]), lines tally
//! into one observation per destination host, and what the policy in force still
//! refuses becomes rules appended to that policy ([`render`]).
//!
//! Pure: no I/O. Which host and port the policy in force refuses is the caller's
//! question to answer (the gateway decides it, `egressctl` asks the gateway).

pub mod parse;
mod render;

pub use parse::parse_line;
pub use render::{build, candidates, Suggested, Suggestion};

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// What the gateway decided for one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Let out.
    Allowed,
    /// Refused by policy (`rbac_access_denied_matched_policy[...]`).
    Denied,
    /// Audit mode: forwarded, but enforcing would refuse it (`audit_would_deny[...]`).
    WouldDeny,
    /// Allowed by policy, refused by the address guard (`destination_address_refused`).
    Refused,
    /// The format does not say (`envoy`): the policy in force has to tell.
    Unknown,
}

/// One audit line, read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The destination host (authority, SNI or CONNECT host), lower case.
    pub host: String,
    /// The destination port.
    pub port: u16,
    /// The client's address, when the format has it.
    pub source: Option<IpAddr>,
    /// What was decided.
    pub outcome: Outcome,
    /// The upstream address connected to, when one was.
    pub upstream: Option<IpAddr>,
    /// START_TIME as printed (RFC 3339, so it sorts).
    pub time: String,
}

/// Every line seen for one host (or one `*.parent` when grouped).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    /// The host, or `*.parent` when siblings were folded.
    pub host: String,
    /// Destination ports seen.
    pub ports: BTreeSet<u16>,
    /// Client addresses seen.
    pub sources: BTreeSet<String>,
    /// Lines.
    pub count: u64,
    /// START_TIME of the first and last line.
    pub first: String,
    /// See `first`.
    pub last: String,
    /// Private, loopback or other special upstream addresses it resolved to.
    pub private: BTreeSet<String>,
    /// The hosts folded into a `*.parent` (empty otherwise).
    pub folded: Vec<String>,
}

/// The lines read so far.
#[derive(Debug, Default)]
pub struct Tally {
    hosts: BTreeMap<String, Observed>,
    /// Lines read.
    pub lines: u64,
    /// Lines that are not audit lines of a known format, or name no destination.
    pub unreadable: u64,
    /// Lines allowed when written.
    pub allowed: u64,
    /// Hosts the address guard refused, with counts: policy allowed them already.
    pub refused: BTreeMap<String, u64>,
    /// Lines before this START_TIME (RFC 3339, UTC) are left out.
    since: Option<String>,
    /// Lines left out for being older than `since`.
    pub older: u64,
}

impl Tally {
    /// A tally of the lines from `since` on (RFC 3339 in UTC, as the audit log prints
    /// START_TIME, so that times compare as text).
    pub fn since(since: Option<String>) -> Self {
        Self {
            since,
            ..Self::default()
        }
    }

    /// Reads one line.
    pub fn add_line(&mut self, line: &str) {
        let line = line.trim_end();
        if line.is_empty() {
            return;
        }
        self.lines += 1;
        match parse_line(line) {
            None => self.unreadable += 1,
            Some(seen) => self.add(seen),
        }
    }

    /// Counts one line read back.
    pub fn add(&mut self, seen: Seen) {
        if self
            .since
            .as_deref()
            .is_some_and(|since| seen.time.as_str() < since)
        {
            self.older += 1;
            return;
        }
        match seen.outcome {
            Outcome::Allowed => {
                self.allowed += 1;
                return;
            }
            Outcome::Refused => {
                *self.refused.entry(seen.host).or_default() += 1;
                return;
            }
            Outcome::Denied | Outcome::WouldDeny | Outcome::Unknown => {}
        }
        let o = self
            .hosts
            .entry(seen.host.clone())
            .or_insert_with(|| Observed {
                host: seen.host.clone(),
                ports: BTreeSet::new(),
                sources: BTreeSet::new(),
                count: 0,
                first: seen.time.clone(),
                last: seen.time.clone(),
                private: BTreeSet::new(),
                folded: Vec::new(),
            });
        o.ports.insert(seen.port);
        if let Some(s) = seen.source {
            o.sources.insert(s.to_string());
        }
        o.count += 1;
        if seen.time < o.first {
            o.first = seen.time.clone();
        }
        if seen.time > o.last {
            o.last = seen.time;
        }
        if let Some(ip) = seen.upstream.filter(|ip| is_special(*ip)) {
            o.private.insert(ip.to_string());
        }
    }

    /// The observations with at least `min_count` lines, by host; with
    /// `group_wildcards`, two or more names under one parent (of two labels or more)
    /// fold into `*.parent`.
    pub fn observed(&self, min_count: u64, group_wildcards: bool) -> Vec<Observed> {
        let kept: Vec<Observed> = self
            .hosts
            .values()
            .filter(|o| o.count >= min_count)
            .cloned()
            .collect();
        if !group_wildcards {
            return kept;
        }
        let mut by_parent: BTreeMap<String, Vec<Observed>> = BTreeMap::new();
        let mut out = Vec::new();
        for o in kept {
            match parent(&o.host) {
                Some(p) => by_parent.entry(p.to_owned()).or_default().push(o),
                None => out.push(o),
            }
        }
        for (parent, group) in by_parent {
            if group.len() < 2 {
                out.extend(group);
                continue;
            }
            let mut folded = group[0].clone();
            folded.host = format!("*.{parent}");
            folded.folded = vec![group[0].host.clone()];
            for o in &group[1..] {
                folded.ports.extend(&o.ports);
                folded.sources.extend(o.sources.iter().cloned());
                folded.private.extend(o.private.iter().cloned());
                folded.count += o.count;
                folded.first = folded.first.clone().min(o.first.clone());
                folded.last = folded.last.clone().max(o.last.clone());
                folded.folded.push(o.host.clone());
            }
            out.push(folded);
        }
        out.sort_by(|a, b| a.host.cmp(&b.host));
        out
    }
}

/// The parent of a name with three labels or more (`a.example.com` → `example.com`);
/// never of an address or a wildcard.
fn parent(host: &str) -> Option<&str> {
    if host.parse::<IpAddr>().is_ok() || host.starts_with('*') {
        return None;
    }
    let (_, rest) = host.split_once('.')?;
    rest.contains('.').then_some(rest)
}

/// Loopback, private, link-local, CGNAT, unspecified: what the address guard refuses
/// unless a rule says `allow_private`.
pub fn is_special(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse::tests::{DENIED_HTTP, WOULD_TLS};
    use super::*;

    #[test]
    fn tallies_by_host_and_folds_siblings_only_when_asked() {
        let mut t = Tally::default();
        t.add_line(DENIED_HTTP);
        t.add_line(DENIED_HTTP);
        t.add_line(WOULD_TLS);
        t.add_line("garbage");
        assert_eq!((t.lines, t.unreadable), (4, 1));
        let plain = t.observed(1, false);
        assert_eq!(plain.len(), 2);
        assert_eq!(plain[0].count, 2);
        assert!(plain[1].private.contains("10.1.2.3"), "{plain:?}");
        assert_eq!(
            t.observed(2, false).len(),
            1,
            "min count drops the single line"
        );
        let grouped = t.observed(1, true);
        assert_eq!(grouped.len(), 1);
        assert_eq!(grouped[0].host, "*.example.com");
        assert_eq!(grouped[0].folded.len(), 2);
        assert_eq!(grouped[0].ports, BTreeSet::from([80, 443]));
    }
}
