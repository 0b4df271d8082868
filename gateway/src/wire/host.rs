//! Destination hosts as clients spell them: names (IDNA, case, trailing dot) and IP
//! literals in every spelling a resolver would accept, canonicalised so that no form
//! slips past a rule or the address guard.

use std::fmt;
use std::net::IpAddr;

/// A canonical destination host.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A DNS name: ASCII (IDNA), lower case, no trailing dot.
    Name(String),
    /// An IP literal, in canonical form whatever spelling the client used.
    Ip(IpAddr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
        }
    }
}

/// Why a host string is not a usable destination.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// Empty host.
    #[error("empty host")]
    Empty,
    /// Not a valid DNS name (after IDNA) nor an IP literal.
    #[error("{0:?} is not a valid host name")]
    InvalidName(String),
    /// Looks like an IP literal but is not one a resolver would read unambiguously.
    #[error("{0:?} is a malformed IP address")]
    MalformedIp(String),
    /// A port where one is not allowed, or a port that is not 1-65535.
    #[error("{0:?} has an invalid port")]
    InvalidPort(String),
}

/// Parses a host without a port: a name, an IPv4 literal in any spelling, or an IPv6
/// literal with or without brackets.
///
/// Fails when the string is neither a valid name nor an unambiguous IP literal.
pub fn parse_host(raw: &str) -> Result<Host, HostError> {
    if raw.is_empty() {
        return Err(HostError::Empty);
    }
    let inner = raw
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(raw);
    if let Ok(ip) = inner.parse::<IpAddr>() {
        return Ok(Host::Ip(ip));
    }
    normalize_name(raw).map(Host::Name)
}

/// Parses `host[:port]` as found in a `Host` header, an absolute URI's authority or a
/// CONNECT target.
///
/// Fails when the host fails [`parse_host`] or the port is not 1-65535.
pub fn parse_authority(raw: &str) -> Result<(Host, Option<u16>), HostError> {
    let (host, port) = match raw.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.ends_with(']') => (h, Some(p)),
        _ => (raw, None),
    };
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n != 0 && !p.starts_with('+') => Some(n),
            _ => return Err(HostError::InvalidPort(raw.to_owned())),
        },
    };
    Ok((parse_host(host)?, port))
}

/// Canonicalises a DNS name: IDNA to ASCII, lower case, no trailing dot.
///
/// Fails on names that IDNA rejects or that contain characters no host name has.
pub fn normalize_name(raw: &str) -> Result<String, HostError> {
    let trimmed = raw.strip_suffix('.').unwrap_or(raw);
    let ascii = idna::domain_to_ascii(trimmed)
        .map_err(|_| HostError::InvalidName(raw.to_owned()))?;
    if ascii.is_empty() {
        return Err(HostError::InvalidName(raw.to_owned()));
    }
    Ok(ascii)
}
