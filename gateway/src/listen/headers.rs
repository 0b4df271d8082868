//! Header rules of the HTTP path: what never crosses the gateway (hop-by-hop headers,
//! the inside of the mesh), and what it adds (a request id).

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::Version;

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Headers that describe the inside of the mesh: addresses, workload metadata and
/// client certificates stay inside.
const INTERNAL: [&str; 8] = [
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-client-cert",
    "x-real-ip",
    "forwarded",
    "via",
];

pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Removes what describes the inside of the mesh: addresses, workload metadata
/// (`x-envoy-*`, e.g. Istio's peer metadata) and client certificates.
pub(super) fn strip_internal(headers: &mut HeaderMap) {
    for name in INTERNAL {
        headers.remove(name);
    }
    let envoy: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("x-envoy-"))
        .cloned()
        .collect();
    for name in envoy {
        headers.remove(name);
    }
}

/// Adds an `x-request-id` (a UUID v4) when the client sent none.
pub(super) fn ensure_request_id(headers: &mut HeaderMap) {
    let name = HeaderName::from_static("x-request-id");
    if !headers.contains_key(&name) {
        let id = uuid::Uuid::new_v4().hyphenated().to_string();
        if let Ok(value) = HeaderValue::from_str(&id) {
            headers.insert(name, value);
        }
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
