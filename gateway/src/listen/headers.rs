//! Header rules of the HTTP path: what never crosses the gateway (hop-by-hop headers,
//! the inside of the mesh), and what it adds (a request id).

use std::borrow::Cow;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Version};

use crate::wire::host::Host;

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1).
fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Headers that describe the inside of the mesh: addresses, workload metadata
/// (`x-envoy-*`, e.g. Istio's peer metadata) and client certificates stay inside.
fn is_internal(name: &str) -> bool {
    matches!(
        name,
        "x-forwarded-for"
            | "x-forwarded-host"
            | "x-forwarded-proto"
            | "x-forwarded-port"
            | "x-forwarded-client-cert"
            | "x-real-ip"
            | "forwarded"
            | "via"
    ) || name.starts_with("x-envoy-")
}

/// Removes hop-by-hop headers (and those `Connection` names), and with `internal`
/// everything that describes the inside of the mesh.
///
/// One pass over the headers present (a handful) rather than a lookup per name we
/// refuse (seventeen); nothing is allocated unless something is removed.
pub(super) fn strip(headers: &mut HeaderMap, internal: bool) {
    let mut doomed: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(http::header::CONNECTION) {
        let Ok(value) = value.to_str() else { continue };
        for token in value.split(',') {
            if let Ok(name) = HeaderName::from_bytes(token.trim().as_bytes()) {
                doomed.push(name);
            }
        }
    }
    for name in headers.keys() {
        let text = name.as_str();
        if is_hop_by_hop(text) || (internal && is_internal(text)) {
            doomed.push(name.clone());
        }
    }
    for name in doomed {
        headers.remove(name);
    }
}

/// Adds an `x-request-id` (a UUID v4) when the client sent none.
pub(super) fn ensure_request_id(headers: &mut HeaderMap) {
    let name = HeaderName::from_static("x-request-id");
    if !headers.contains_key(&name) {
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
        if let Ok(value) = HeaderValue::from_str(id) {
            headers.insert(name, value);
        }
    }
}

/// REQ(:METHOD) for the audit record: the standard methods without an allocation.
pub(super) fn method_text(method: &Method) -> Cow<'static, str> {
    const STANDARD: [&str; 9] = [
        "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE",
    ];
    let text = method.as_str();
    match STANDARD.iter().find(|m| **m == text) {
        Some(standard) => Cow::Borrowed(standard),
        None => Cow::Owned(text.to_owned()),
    }
}

/// PROTOCOL as the audit line prints it.
pub(super) fn protocol_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// Whether a Host header's value is exactly `host` (a name, lower case as canonical
/// names are) with `:port` when given. IP literals are always written anew.
pub(super) fn host_header_is(value: &[u8], host: &Host, port: Option<u16>) -> bool {
    let Host::Name(name) = host else {
        return false;
    };
    let Some(rest) = value.strip_prefix(name.as_bytes()) else {
        return false;
    };
    match port {
        None => rest.is_empty(),
        Some(port) => rest
            .strip_prefix(b":")
            .is_some_and(|digits| digits == itoa::Buffer::new().format(port).as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_header_is_kept_only_when_it_is_exactly_the_upstream() {
        let name = Host::Name("api.example.com".into());
        assert!(host_header_is(b"api.example.com", &name, None));
        assert!(host_header_is(b"api.example.com:8080", &name, Some(8080)));
        assert!(!host_header_is(b"api.example.com:8081", &name, Some(8080)));
        assert!(!host_header_is(b"api.example.com:80800", &name, Some(8080)));
        assert!(!host_header_is(b"api.example.com", &name, Some(8080)));
        assert!(!host_header_is(b"api.example.com:8080", &name, None));
        assert!(!host_header_is(b"API.example.com", &name, None));
        assert!(!host_header_is(b"api.example.com.", &name, None));
        assert!(!host_header_is(b"api.example.co", &name, None));
        let ip = Host::Ip("127.0.0.1".parse().unwrap());
        assert!(!host_header_is(b"127.0.0.1", &ip, None));
    }
}
