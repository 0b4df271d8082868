//! Label values known up front, each exported at 0 from start-up: the reasons the
//! code names where it refuses or fails, so that the label sets stay bounded.

/// Why a request or connection was refused before a decision: the labels of
/// `egress_bad_requests_total`, each at 0 from start-up. The HTTP listener's
/// `BadRequest` reasons, what hyper refused, the TLS listener's ClientHello refusals
/// and the PROXY header's; anything else is counted as `other`.
pub const BAD_REQUEST_REASONS: &[&str] = &[
    "missing_host_header",
    "duplicate_host_header",
    "invalid_host",
    "ambiguous_host",
    "invalid_path",
    "unsupported_scheme",
    "origin_form_on_proxy",
    "connect_not_supported",
    "invalid_connect_target",
    "transfer_encoding_with_content_length",
    "unsupported_transfer_encoding",
    "invalid_request_body",
    "http1.codec_error",
    "http1.headers_too_large",
    "http1.uri_too_long",
    "request_header_timeout",
    "tls_client_hello_timeout",
    "tls_not_tls",
    "tls_malformed_client_hello",
    "tls_client_hello_too_large",
    "tls_invalid_sni",
    "proxy_protocol_invalid",
    "proxy_protocol_timeout",
    "other",
];

/// Why an inbound TLS handshake failed (the audit line's details): the
/// `side="inbound"` reasons of `egress_tls_handshake_failures_total`.
pub const TLS_INBOUND_FAILURES: [&str; 5] = [
    "tls_certificate_unavailable",
    "tls_handshake_timeout",
    "client_certificate_required",
    "client_certificate_refused",
    "tls_handshake_failed",
];
