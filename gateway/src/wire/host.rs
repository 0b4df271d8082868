//! Destination hosts as clients spell them: names (IDNA, case, trailing dot) and IP
//! literals in every spelling a resolver would accept, canonicalised so that no form
//! slips past a rule or the address guard.
//!
//! The order follows the WHATWG URL host parser: map the whole string through UTS 46
//! first (so full-width digits and dots become ASCII), then, if the last label is
//! numeric, the host must be an IPv4 address in one of the `inet_aton` spellings
//! (`127.1`, `0x7f.1`, `0177.0.0.1`, `2130706433`) or it is refused as malformed. A
//! host that a resolver might read as an address is never handed to DNS as a name.

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use idna::uts46::{AsciiDenyList, DnsLength, Hyphens, Uts46};

/// The longest DNS name, in ASCII, without the trailing dot (RFC 1035 §2.3.4).
const MAX_NAME_LEN: usize = 253;
/// The longest DNS label (RFC 1035 §2.3.4).
const MAX_LABEL_LEN: usize = 63;

/// A canonical destination host.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A DNS name: ASCII (IDNA), lower case, no trailing dot.
    Name(String),
    /// An IP literal, in canonical form whatever spelling the client used.
    Ip(IpAddr),
}

impl Host {
    /// The address, when the host is an IP literal.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Host::Ip(ip) => Some(*ip),
            Host::Name(_) => None,
        }
    }

    /// The canonical name, when the host is a DNS name.
    pub fn name(&self) -> Option<&str> {
        match self {
            Host::Name(name) => Some(name),
            Host::Ip(_) => None,
        }
    }
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
/// Fails when the string is empty, is neither a valid name nor an IP literal, or looks
/// like an IP literal (brackets, a colon, a numeric last label) without being one.
/// Zone ids (`fe80::1%eth0`) are refused.
pub fn parse_host(raw: &str) -> Result<Host, HostError> {
    if raw.is_empty() {
        return Err(HostError::Empty);
    }
    if let Some(rest) = raw.strip_prefix('[') {
        let inner = rest
            .strip_suffix(']')
            .ok_or_else(|| HostError::MalformedIp(raw.to_owned()))?;
        return parse_ipv6(inner, raw);
    }
    if raw.contains(':') {
        return parse_ipv6(raw, raw);
    }
    canonicalise(raw)
}

/// Parses `host[:port]` as found in a `Host` header, an absolute URI's authority or a
/// CONNECT target. An IPv6 host must be in brackets: `[::1]:443`.
///
/// Fails when the host fails [`parse_host`], carries user info (`user@host`), is a bare
/// IPv6 address, or the port is empty, not all digits, or not 1-65535.
pub fn parse_authority(raw: &str) -> Result<(Host, Option<u16>), HostError> {
    if raw.is_empty() {
        return Err(HostError::Empty);
    }
    if raw.contains('@') {
        return Err(HostError::InvalidName(raw.to_owned()));
    }
    let (host, port) = if raw.starts_with('[') {
        let close = raw
            .find(']')
            .ok_or_else(|| HostError::MalformedIp(raw.to_owned()))?;
        let (host, rest) = raw.split_at(close + 1);
        match rest.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if rest.is_empty() => (host, None),
            None => return Err(HostError::InvalidPort(raw.to_owned())),
        }
    } else {
        match raw.split_once(':') {
            // More than one colon outside brackets: a bare IPv6 address, which is
            // ambiguous next to a port.
            Some((_, port)) if port.contains(':') => {
                return Err(HostError::MalformedIp(raw.to_owned()));
            }
            Some((host, port)) => (host, Some(port)),
            None => (raw, None),
        }
    };
    let port = port.map(|p| parse_port(p, raw)).transpose()?;
    if host.is_empty() {
        return Err(HostError::Empty);
    }
    Ok((parse_host(host)?, port))
}

/// Canonicalises a DNS name: IDNA to ASCII, lower case, no trailing dot.
///
/// Fails on names that IDNA rejects, that contain characters no host name has, whose
/// labels are empty or longer than 63 bytes, that are longer than 253 bytes, or that
/// are IP literals in any spelling (an address is not a name).
pub fn normalize_name(raw: &str) -> Result<String, HostError> {
    match canonicalise(raw)? {
        Host::Name(name) => Ok(name),
        Host::Ip(_) => Err(HostError::InvalidName(raw.to_owned())),
    }
}

/// A name or an IPv4 literal, after UTS 46 mapping.
fn canonicalise(raw: &str) -> Result<Host, HostError> {
    if raw.is_empty() {
        return Err(HostError::Empty);
    }
    let invalid = || HostError::InvalidName(raw.to_owned());
    // The URL deny list refuses the characters that would change how an authority
    // parses (`%#/:<>?@[\]^|`), spaces and controls; `Hyphens::Allow` keeps real
    // names such as `r3---sn-abc.example` that strict checking would refuse.
    let mapped: Cow<'_, str> = Uts46::new()
        .to_ascii(
            raw.as_bytes(),
            AsciiDenyList::URL,
            Hyphens::Allow,
            DnsLength::Ignore,
        )
        .map_err(|_| invalid())?;
    let name = mapped.strip_suffix('.').unwrap_or(&mapped);
    if name.is_empty() {
        return Err(invalid());
    }
    let last = name.rsplit('.').next().unwrap_or(name);
    if last.bytes().next().is_some_and(|b| b.is_ascii_digit()) {
        // No top-level domain starts with a digit, and every IPv4 spelling ends with
        // a number: such a host is an address or nothing.
        return parse_ipv4(name)
            .map(|ip| Host::Ip(IpAddr::V4(ip)))
            .ok_or_else(|| HostError::MalformedIp(raw.to_owned()));
    }
    if name.len() > MAX_NAME_LEN || !name.split('.').all(is_label) {
        return Err(invalid());
    }
    Ok(Host::Name(name.to_ascii_lowercase()))
}

/// A DNS label as the gateway accepts it: 1-63 letters, digits, `-` or `_` (service
/// labels such as `_dmarc` are real).
fn is_label(label: &str) -> bool {
    (1..=MAX_LABEL_LEN).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// An IPv6 literal without brackets; `raw` is what the error names.
fn parse_ipv6(inner: &str, raw: &str) -> Result<Host, HostError> {
    // `Ipv6Addr` refuses zone ids (`%eth0`, `%25eth0`) and anything else but the
    // RFC 4291 text forms, which is what we want: a zone names an interface of this
    // machine, never a destination.
    inner
        .parse::<Ipv6Addr>()
        .map(|ip| Host::Ip(IpAddr::V6(ip)))
        .map_err(|_| HostError::MalformedIp(raw.to_owned()))
}

/// A port: digits only, 1-65535; `raw` is what the error names.
fn parse_port(port: &str, raw: &str) -> Result<u16, HostError> {
    let invalid = || HostError::InvalidPort(raw.to_owned());
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    match port.parse::<u16>() {
        Ok(n) if n != 0 => Ok(n),
        _ => Err(invalid()),
    }
}

/// IPv4 in the `inet_aton` / WHATWG forms: one to four parts, each decimal, `0x` hex
/// or leading-zero octal; every part but the last is one byte, the last fills the
/// remaining bytes. `None` for anything else, overflow included.
fn parse_ipv4(name: &str) -> Option<Ipv4Addr> {
    let mut parts = [0u32; 4];
    let mut count = 0;
    for part in name.split('.') {
        let slot = parts.get_mut(count)?;
        *slot = parse_ipv4_number(part)?;
        count += 1;
    }
    let (last, init) = parts[..count].split_last()?;
    if init.iter().any(|&p| p > 0xff) {
        return None;
    }
    let last_bits = 8 * (4 - init.len() as u32);
    if last_bits < 32 && *last >> last_bits != 0 {
        return None;
    }
    let head = init
        .iter()
        .enumerate()
        .fold(0u32, |acc, (i, &p)| acc | p << (24 - 8 * i as u32));
    Some(Ipv4Addr::from(head | last))
}

/// One part of an IPv4 literal. Refuses what resolvers disagree on: an empty part, a
/// bare `0x`, `8` or `9` in an octal part, or a value over 32 bits.
fn parse_ipv4_number(part: &str) -> Option<u32> {
    let (digits, radix) =
        if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
            (hex, 16)
        } else if let Some(octal) = part.strip_prefix('0').filter(|rest| !rest.is_empty()) {
            (octal, 8)
        } else {
            (part, 10)
        };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    // `from_str_radix` checks overflow; leading zeros (`0x00000001`) are fine.
    u32::from_str_radix(digits, radix).ok()
}

#[cfg(test)]
mod tests;
