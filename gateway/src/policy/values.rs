//! Single values of a policy document as users write them (durations, addresses,
//! sources) parsed and checked, each error naming the value; and serde errors turned
//! into policy errors.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::{PolicyError, SourceMatch};

/// A serde_yaml error as a policy error: its line, the field path it names (the
/// unknown field itself for an unknown field), and its message without the location.
pub(super) fn serde_error(file: &str, e: &serde_yaml::Error) -> PolicyError {
    let text = e.to_string();
    let text = text.split(" at line ").next().unwrap_or(&text);
    let (mut path, message) = match text.split_once(": ") {
        Some((path, rest)) if !path.contains(' ') => (path.to_owned(), rest.to_owned()),
        _ => (String::new(), text.to_owned()),
    };
    if let Some(field) = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next())
    {
        path = if path.is_empty() {
            field.to_owned()
        } else {
            format!("{path}.{field}")
        };
    }
    PolicyError {
        file: file.to_owned(),
        line: e.location().map(|l| l.line()),
        path,
        message: message.replace("expected i64", "expected a number"),
    }
}

/// `500ms`, `3s`, `1h`, `1m30s`.
pub(super) fn parse_duration(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw)
        .map_err(|_| format!("{raw:?} is not a duration (e.g. 500ms, 3s, 1m30s, 1h)"))
}

pub(super) fn parse_ip(raw: &str) -> Option<IpAddr> {
    let inner = raw
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(raw);
    inner.parse().ok()
}

/// `ip:port`, or `ip` alone (port 0: the destination port).
pub(super) fn parse_endpoint(raw: &str) -> Option<SocketAddr> {
    if let Ok(addr) = raw.parse::<SocketAddr>() {
        return (addr.port() != 0).then_some(addr);
    }
    parse_ip(raw).map(|ip| SocketAddr::new(ip, 0))
}

/// A CIDR, an address (a /32 or /128), or a `spiffe://` identity, exact or ending in `/*`.
pub(super) fn parse_source(raw: &str) -> Result<SourceMatch, String> {
    if let Some(rest) = raw.strip_prefix("spiffe://") {
        let body = rest.strip_suffix("/*").unwrap_or(rest);
        let domain = body.split('/').next().unwrap_or_default();
        if domain.is_empty() || body.contains('*') || body.ends_with('/') || raw.contains(' ') {
            return Err(format!(
                "{raw:?} is not a spiffe:// identity (exact, or ending in \"/*\")"
            ));
        }
        return Ok(SourceMatch::Identity(raw.to_owned()));
    }
    if let Ok(net) = raw.parse::<ipnet::IpNet>() {
        return Ok(SourceMatch::Net(net.trunc()));
    }
    if let Some(ip) = parse_ip(raw) {
        return Ok(SourceMatch::Net(ipnet::IpNet::from(ip)));
    }
    Err(format!(
        "{raw:?} is not a CIDR, an IP address or a spiffe:// identity"
    ))
}

pub(super) fn dedup<T: PartialEq>(items: Vec<T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(items.len());
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

/// A rule's or listener's name: it appears in audit lines and admin URLs, so it is kept
/// to characters that need no quoting there.
pub(super) fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid name (1-253 of a-z A-Z 0-9 - _ .)"
        ))
    }
}
