//! The target of a `CONNECT host:port` request (RFC 9110 §9.3.6): authority form, with
//! a port always, since a tunnel has no default port to fall back on.

use super::host::{parse_authority, Host, HostError};

/// Why a CONNECT target is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectTargetError {
    /// The request target is not in authority form (`CONNECT /path`, `CONNECT http://..`).
    #[error("the CONNECT target {0:?} is not host:port")]
    NotAuthority(String),
    /// `CONNECT host` without a port.
    #[error("the CONNECT target {0:?} has no port")]
    MissingPort(String),
    /// The host or port is invalid.
    #[error("the CONNECT target is invalid: {0}")]
    Host(#[from] HostError),
}

/// Parses a CONNECT request target: `host:port`, `[v6]:port`, an IPv4 literal in any
/// spelling (canonicalised, so that the caller can refuse or match it).
///
/// Fails when the target is empty, carries a scheme, path or user info, names no port,
/// or its host or port is invalid.
pub fn parse_target(target: &str) -> Result<(Host, u16), ConnectTargetError> {
    if target.contains('/') || target.is_empty() {
        return Err(ConnectTargetError::NotAuthority(target.to_owned()));
    }
    match parse_authority(target)? {
        (host, Some(port)) => Ok((host, port)),
        (_, None) => Err(ConnectTargetError::MissingPort(target.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use super::*;

    #[test]
    fn names_and_literals_with_ports() {
        assert_eq!(
            parse_target("API.Example.com.:443"),
            Ok((Host::Name("api.example.com".into()), 443))
        );
        assert_eq!(
            parse_target("0x7f.1:8443"),
            Ok((Host::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)), 8443))
        );
        assert_eq!(
            parse_target("[::1]:22"),
            Ok((Host::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)), 22))
        );
    }

    #[test]
    fn targets_without_a_port_or_not_in_authority_form_are_refused() {
        for target in ["api.example.com", "[::1]", "api.example.com:", ""] {
            assert!(parse_target(target).is_err(), "{target:?}");
        }
        assert!(matches!(
            parse_target("api.example.com"),
            Err(ConnectTargetError::MissingPort(_))
        ));
        for target in [
            "http://api.example.com:443",
            "/path",
            "api.example.com:443/x",
        ] {
            assert!(
                matches!(
                    parse_target(target),
                    Err(ConnectTargetError::NotAuthority(_))
                ),
                "{target:?}"
            );
        }
        for target in [
            "user@api.example.com:443",
            "api.example.com:0",
            "api.example.com:65536",
            "api.example.com:+443",
            "::1:443",
            "bad host:443",
            "1.2.3.999:443",
        ] {
            assert!(
                matches!(parse_target(target), Err(ConnectTargetError::Host(_))),
                "{target:?}: {:?}",
                parse_target(target)
            );
        }
    }
}
