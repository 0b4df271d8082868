//! Reading audit lines back, for `egressctl policy suggest`: each line (formats `istio`,
//! `envoy` and `json`) becomes what was asked for and what was decided, and lines
//! tally into one observation per destination host.
//!
//! Pure: no I/O. Which observations the policy in force still refuses is for the
//! caller to ask the gateway.

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
}

impl Tally {
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

/// Reads one line of the `istio`, `envoy` or `json` format.
pub fn parse_line(line: &str) -> Option<Seen> {
    if line.starts_with('{') {
        return parse_json(line);
    }
    let t = tokens(line);
    match t.len() {
        22 => Some(seen_from(Fields {
            time: t[0],
            request: t[1],
            details: [t[4], t[5]],
            authority: t[14],
            upstream: t[15],
            cluster: t[16],
            source: t[19],
            sni: t[20],
        })?),
        13 => Some(seen_from(Fields {
            time: t[0],
            request: t[1],
            details: ["", ""],
            authority: t[11],
            upstream: t[12],
            cluster: "-",
            source: "-",
            sni: "-",
        })?),
        _ => None,
    }
}

/// The fields a line is judged by, `-` where unset.
struct Fields<'a> {
    time: &'a str,
    request: &'a str,
    details: [&'a str; 2],
    authority: &'a str,
    upstream: &'a str,
    cluster: &'a str,
    source: &'a str,
    sni: &'a str,
}

fn seen_from(f: Fields<'_>) -> Option<Seen> {
    let set = |s: &str| (!s.is_empty() && s != "-").then(|| s.to_owned());
    let (cluster_port, cluster_host) = match f.cluster.strip_prefix("outbound|") {
        Some(rest) => {
            let (port, host) = rest.split_once("||")?;
            (port.parse::<u16>().ok(), set(host))
        }
        None => (None, None),
    };
    let (auth_host, auth_port) = match set(f.authority) {
        Some(a) => split_authority(&a),
        None => (None, None),
    };
    let sni = set(f.sni);
    let host = auth_host.or(sni.clone()).or(cluster_host)?;
    let tunnel = f.request == "- - -";
    let port = auth_port.or(cluster_port).or(if sni.is_some() {
        Some(443)
    } else if tunnel {
        None
    } else {
        Some(80)
    })?;
    let outcome = if f.details == ["", ""] {
        Outcome::Unknown
    } else if f.details.iter().any(|d| d.starts_with("audit_would_deny")) {
        Outcome::WouldDeny
    } else if f
        .details
        .iter()
        .any(|d| d.starts_with("rbac_access_denied"))
    {
        Outcome::Denied
    } else if f
        .details
        .iter()
        .any(|d| d.starts_with("destination_address_refused"))
    {
        Outcome::Refused
    } else {
        Outcome::Allowed
    };
    Some(Seen {
        host: host.trim_end_matches('.').to_ascii_lowercase(),
        port,
        source: set(f.source).and_then(|s| addr_ip(&s)),
        outcome,
        upstream: set(f.upstream).and_then(|s| addr_ip(&s)),
        time: f.time.to_owned(),
    })
}

fn parse_json(line: &str) -> Option<Seen> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let s = |k: &str| v.get(k).and_then(serde_json::Value::as_str).unwrap_or("-");
    let request = if s("method") == "-" { "- - -" } else { "" };
    let details = [
        s("response_code_details"),
        s("connection_termination_details"),
    ];
    seen_from(Fields {
        time: s("start_time"),
        request,
        details,
        authority: s("authority"),
        upstream: s("upstream_host"),
        cluster: s("upstream_cluster"),
        source: s("downstream_remote_address"),
        sni: s("requested_server_name"),
    })
}

/// `host`, `host:port`, `[v6]:port`.
fn split_authority(a: &str) -> (Option<String>, Option<u16>) {
    if let Some(rest) = a.strip_prefix('[') {
        let (ip, port) = rest.split_once(']').unwrap_or((rest, ""));
        return (
            Some(ip.to_owned()),
            port.strip_prefix(':').and_then(|p| p.parse().ok()),
        );
    }
    match a.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (Some(h.to_owned()), p.parse().ok()),
        _ => (Some(a.to_owned()), None),
    }
}

fn addr_ip(s: &str) -> Option<IpAddr> {
    s.parse::<std::net::SocketAddr>()
        .map(|a| a.ip())
        .or_else(|_| s.parse::<IpAddr>())
        .ok()
}

/// Splits a text line into fields: `[...]` and `"..."` are one field each (values never
/// hold a `"`: the gateway escapes it).
fn tokens(line: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = line;
    loop {
        rest = rest.trim_start_matches(' ');
        if rest.is_empty() {
            return out;
        }
        let (close, skip) = match rest.as_bytes()[0] {
            b'[' => (']', 1),
            b'"' => ('"', 1),
            _ => (' ', 0),
        };
        let body = &rest[skip..];
        let end = body.find(close).unwrap_or(body.len());
        out.push(&body[..end]);
        rest = body.get(end + 1..).unwrap_or("");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DENIED_HTTP: &str = r#"[2026-11-24T11:46:23.596Z] "GET / HTTP/1.1" 403 - rbac_access_denied_matched_policy[none] - "-" 0 19 0 - "-" "curl/8" "-" "api.example.com" "-" - - 127.0.0.1:8080 127.0.0.1:50000 - -"#;
    const WOULD_TLS: &str = r#"[2026-11-24T11:46:24.000Z] "- - -" 0 - audit_would_deny[none] - "-" 10 20 5 - "-" "-" "-" "-" "10.1.2.3:443" outbound|443||secure.example.com 10.0.0.1:4000 10.0.0.1:8443 10.0.0.9:50001 secure.example.com -"#;
    const ENVOY: &str = r#"[2026-11-24T11:46:25.000Z] "GET /x HTTP/1.1" 200 - 0 2 1 1 "-" "curl" "-" "b.example.com:8080" "203.0.113.9:8080""#;

    #[test]
    fn reads_the_three_formats() {
        let d = parse_line(DENIED_HTTP).unwrap();
        assert_eq!(
            (d.host.as_str(), d.port, d.outcome),
            ("api.example.com", 80, Outcome::Denied)
        );
        assert_eq!(d.source, Some("127.0.0.1".parse().unwrap()));
        let w = parse_line(WOULD_TLS).unwrap();
        assert_eq!(
            (w.host.as_str(), w.port, w.outcome),
            ("secure.example.com", 443, Outcome::WouldDeny)
        );
        let e = parse_line(ENVOY).unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.outcome),
            ("b.example.com", 8080, Outcome::Unknown)
        );
        let json = r#"{"start_time":"2026-11-24T11:46:26.000Z","method":"GET","response_code_details":"audit_would_deny[none]","connection_termination_details":null,"authority":"c.example.com","upstream_host":"127.0.0.1:80","upstream_cluster":"outbound|80||c.example.com","downstream_remote_address":"10.0.0.5:1234","requested_server_name":null}"#;
        let j = parse_line(json).unwrap();
        assert_eq!(
            (j.host.as_str(), j.port, j.outcome),
            ("c.example.com", 80, Outcome::WouldDeny)
        );
        assert_eq!(parse_line("not an audit line"), None);
    }

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
