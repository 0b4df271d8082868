//! Host patterns → rules: exact names and IP literals in hash maps, wildcards in a map
//! keyed by their suffix, so that a lookup costs one probe per label of the host.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use crate::wire::host::{normalize_name, parse_host, Host};

/// One entry of a rule's `hosts`, canonicalised.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// An exact name: ASCII (IDNA), lower case, no trailing dot.
    Name(String),
    /// `*.suffix`: any name below `suffix`, at any depth, but not `suffix` itself.
    Below(String),
    /// A lone `*`: any name, but never an IP literal.
    AnyName,
    /// An IP literal; matches only a destination that is that address.
    Ip(IpAddr),
    /// A CIDR (`203.0.113.0/24`); matches a destination that is an address inside it
    /// (an IP literal: a CONNECT to an address, a tcp forward to one). A name that
    /// resolves into it is not matched: rules decide on what the client asked for.
    Net(ipnet::IpNet),
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Name(name) => f.write_str(name),
            HostPattern::Below(suffix) => write!(f, "*.{suffix}"),
            HostPattern::AnyName => f.write_str("*"),
            HostPattern::Ip(ip) => write!(f, "{ip}"),
            HostPattern::Net(net) => write!(f, "{net}"),
        }
    }
}

/// Why a `hosts` entry is not a pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// `""`.
    #[error("empty host")]
    Empty,
    /// `*` anywhere but a leading `*.` or alone.
    #[error("{0:?} has a misplaced wildcard (only a leading \"*.\" or a lone \"*\")")]
    Wildcard(String),
    /// `example.com:443`.
    #[error("{0:?} contains a port (list destination ports in ports)")]
    Port(String),
    /// Not a DNS name after IDNA, or a label or the name too long.
    #[error("{0:?} is not a valid host name")]
    Invalid(String),
    /// A name that a resolver would read as a number (`127.1`, `0x7f.1`).
    #[error("{0:?} is neither a host name nor an IP address in standard form")]
    Numeric(String),
    /// A CIDR with bits set beyond its prefix.
    #[error("{0:?} has host bits set; the network is {1}")]
    HostBits(String, String),
}

/// Parses one `hosts` entry: case, a trailing dot and Unicode vs Punycode are
/// canonicalised, so that every spelling of a name is one pattern.
///
/// Fails on a misplaced wildcard, a port, or an invalid name.
pub fn parse_pattern(raw: &str) -> Result<HostPattern, PatternError> {
    if raw.is_empty() {
        return Err(PatternError::Empty);
    }
    if raw == "*" {
        return Ok(HostPattern::AnyName);
    }
    if let Some(suffix) = raw.strip_prefix("*.") {
        if suffix.contains('*') {
            return Err(PatternError::Wildcard(raw.to_owned()));
        }
        return match check_name(suffix, raw)? {
            Host::Name(name) => Ok(HostPattern::Below(name)),
            Host::Ip(_) => Err(PatternError::Invalid(raw.to_owned())),
        };
    }
    if raw.contains('*') {
        return Err(PatternError::Wildcard(raw.to_owned()));
    }
    if raw.contains('/') {
        let net: ipnet::IpNet = raw
            .parse()
            .map_err(|_| PatternError::Invalid(raw.to_owned()))?;
        // The address part must be the network's own (203.0.113.0/24, not .7/24): a
        // stray host bit usually means the author meant something else.
        if net.addr() != net.network() {
            return Err(PatternError::HostBits(
                raw.to_owned(),
                net.trunc().to_string(),
            ));
        }
        return Ok(if net.prefix_len() == net.max_prefix_len() {
            HostPattern::Ip(net.addr().to_canonical())
        } else {
            HostPattern::Net(net)
        });
    }
    match check_name(raw, raw)? {
        Host::Name(name) => Ok(HostPattern::Name(name)),
        Host::Ip(ip) => Ok(HostPattern::Ip(ip.to_canonical())),
    }
}

/// Canonicalises `name` (a whole entry, or the suffix of a wildcard `raw`).
fn check_name(name: &str, raw: &str) -> Result<Host, PatternError> {
    match parse_host(name) {
        // A policy spells addresses plainly: `127.1` in a rule would read as a name to
        // its author and as 127.0.0.1 to a resolver.
        Ok(Host::Ip(ip)) => {
            let plain = name
                .strip_prefix('[')
                .and_then(|n| n.strip_suffix(']'))
                .unwrap_or(name);
            return match plain.parse::<std::net::IpAddr>() {
                Ok(_) => Ok(Host::Ip(ip)),
                Err(_) => Err(PatternError::Numeric(raw.to_owned())),
            };
        }
        Err(crate::wire::host::HostError::MalformedIp(_)) if !name.contains(':') => {
            return Err(PatternError::Numeric(raw.to_owned()));
        }
        _ => {}
    }
    if let Some((_, port)) = name.rsplit_once(':') {
        if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PatternError::Port(raw.to_owned()));
        }
        return Err(PatternError::Invalid(raw.to_owned()));
    }
    let ascii = normalize_name(name).map_err(|_| PatternError::Invalid(raw.to_owned()))?;
    let labels_ok = ascii.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    });
    if !labels_ok || ascii.len() > 253 {
        return Err(PatternError::Invalid(raw.to_owned()));
    }
    // A name ending in a number is what a resolver reads as an IPv4 address; as a
    // pattern it would never match, since such destinations arrive as IP literals.
    let last = ascii.rsplit('.').next().unwrap_or_default();
    let hex = last
        .strip_prefix("0x")
        .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
    if hex || last.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PatternError::Numeric(raw.to_owned()));
    }
    Ok(Host::Name(ascii))
}

/// Finds the rules whose host patterns match a host, grouped by specificity.
///
/// Rule indices are in document order within each group.
#[derive(Debug, Default)]
pub struct HostMatcher {
    names: HashMap<Box<str>, Vec<u32>>,
    /// `*.suffix` by suffix: a host probes each of its proper suffixes, longest first.
    below: HashMap<Box<str>, Vec<u32>>,
    any_name: Vec<u32>,
    ips: HashMap<IpAddr, Vec<u32>>,
    /// CIDRs, the longest prefix first (the most specific wins, as for names).
    nets: Vec<(ipnet::IpNet, Vec<u32>)>,
}

impl HostMatcher {
    /// Adds `rule` (its index in the policy) under `pattern`. Rules must be added in
    /// document order; adding a rule twice under one pattern keeps it once.
    pub fn insert(&mut self, pattern: &HostPattern, rule: u32) {
        let list = match pattern {
            HostPattern::Name(name) => self.names.entry(name.as_str().into()).or_default(),
            HostPattern::Below(suffix) => self.below.entry(suffix.as_str().into()).or_default(),
            HostPattern::AnyName => &mut self.any_name,
            HostPattern::Ip(ip) => self.ips.entry(ip.to_canonical()).or_default(),
            HostPattern::Net(net) => {
                let at = match self.nets.iter().position(|(n, _)| n == net) {
                    Some(at) => at,
                    None => {
                        // Kept ordered by prefix length, longest first.
                        let at = self
                            .nets
                            .iter()
                            .position(|(n, _)| n.prefix_len() < net.prefix_len())
                            .unwrap_or(self.nets.len());
                        self.nets.insert(at, (*net, Vec::new()));
                        at
                    }
                };
                &mut self.nets[at].1
            }
        };
        if list.last() != Some(&rule) {
            list.push(rule);
        }
    }

    /// The rules listing a lone `*`: the group that matches any name.
    pub fn any_name(&self) -> &[u32] {
        &self.any_name
    }

    /// The candidate rules for `host`, most specific group first: the exact name, then
    /// wildcards from the longest suffix to the shortest, then `*`. An IP literal's
    /// groups are the rules that list that address, then those whose CIDRs hold it,
    /// the longest prefix first. Empty groups are skipped.
    pub fn lookup<'a>(&'a self, host: &'a Host) -> Candidates<'a> {
        let stage = match host {
            Host::Name(name) => Stage::Name(name),
            Host::Ip(ip) => Stage::Ip(ip.to_canonical()),
        };
        Candidates {
            matcher: self,
            stage,
        }
    }
}

/// Iterator over candidate groups; see [`HostMatcher::lookup`]. Allocates nothing.
#[derive(Debug)]
pub struct Candidates<'a> {
    matcher: &'a HostMatcher,
    stage: Stage<'a>,
}

#[derive(Debug)]
enum Stage<'a> {
    Ip(IpAddr),
    /// CIDRs from this index on that may hold the address.
    Nets(IpAddr, usize),
    Name(&'a str),
    /// Wildcards: the suffixes of this (a name, or the rest after a probed suffix).
    Below(&'a str),
    AnyName,
    Done,
}

impl<'a> Iterator for Candidates<'a> {
    type Item = &'a [u32];

    fn next(&mut self) -> Option<&'a [u32]> {
        let m = self.matcher;
        loop {
            let group = match std::mem::replace(&mut self.stage, Stage::Done) {
                Stage::Done => return None,
                Stage::Ip(ip) => {
                    if !m.nets.is_empty() {
                        self.stage = Stage::Nets(ip, 0);
                    }
                    m.ips.get(&ip).map(Vec::as_slice)
                }
                Stage::Nets(ip, from) => {
                    let found = m.nets[from.min(m.nets.len())..]
                        .iter()
                        .position(|(net, _)| net.contains(&ip));
                    match found {
                        Some(i) => {
                            self.stage = Stage::Nets(ip, from + i + 1);
                            Some(m.nets[from + i].1.as_slice())
                        }
                        None => None,
                    }
                }
                Stage::Name(name) => {
                    self.stage = Stage::Below(name);
                    m.names.get(name).map(Vec::as_slice)
                }
                Stage::Below(rest) => match rest.split_once('.') {
                    Some((_, suffix)) if !m.below.is_empty() => {
                        self.stage = Stage::Below(suffix);
                        m.below.get(suffix).map(Vec::as_slice)
                    }
                    _ => {
                        self.stage = Stage::AnyName;
                        None
                    }
                },
                Stage::AnyName => Some(m.any_name.as_slice()),
            };
            if let Some(group) = group.filter(|g| !g.is_empty()) {
                return Some(group);
            }
        }
    }
}
