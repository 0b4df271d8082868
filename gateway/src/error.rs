//! One error type for the request path, and the one place that says what each failure
//! means to the client and to the audit line: status code, Envoy response flag, details.
//!
//! Each variant names its side, as Envoy's flags do: the downstream client (DPE, DC),
//! policy (403), name resolution (DF), or the upstream (UF, UT, UC).

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;

use crate::audit::ResponseFlags;
use crate::guard::AddressClass;

/// Why a request or connection was not served by the upstream.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// The request itself is unusable (no Host, ambiguous destination, smuggling shape).
    #[error("bad request: {reason}")]
    BadRequest {
        /// Shown to the client and in the details, snake_case.
        reason: &'static str,
        /// A sentence for the client.
        message: String,
    },
    /// Policy refused the destination.
    #[error("egress to {destination} denied: {why}")]
    Denied {
        /// `host:port`.
        destination: String,
        /// The deny rule, or `None` when no rule allowed it and the mode denied.
        rule: Option<String>,
        /// A sentence: which rule, or that none allows it.
        why: String,
    },
    /// Every resolved address is private, loopback, link-local, ... and the rule does
    /// not allow that.
    #[error("egress to {destination} refused: it resolves to {addr}, a {} address", class.as_str())]
    AddressRefused {
        /// `host:port`.
        destination: String,
        /// The first refused address.
        addr: std::net::IpAddr,
        /// Its class.
        class: AddressClass,
    },
    /// The name did not resolve.
    #[error("cannot resolve {host}: {reason}")]
    Dns {
        /// The name.
        host: String,
        /// nxdomain, no_records, timeout, or the resolver's error.
        reason: String,
        /// The lookup ran out of the rule's connect timeout.
        timed_out: bool,
    },
    /// The audit log cannot be written and `audit.on_error` is `fail_closed`.
    #[error("the audit log cannot be written; nothing is let out until it can (audit.on_error: fail_closed)")]
    AuditUnavailable,
    /// No upstream connection could be made.
    #[error("connect to {addr} failed: {reason}")]
    Connect {
        /// The last address tried.
        addr: SocketAddr,
        /// refused, timeout, ...
        reason: String,
    },
    /// The connect timeout passed.
    #[error("connect to {addr} timed out after {}", humantime::format_duration(*timeout))]
    ConnectTimeout {
        /// The address tried last.
        addr: SocketAddr,
        /// The rule's connect_timeout.
        timeout: Duration,
    },
    /// TLS origination failed: the upstream's certificate does not verify, the handshake
    /// failed or timed out, or the rule's `ca_file` does not load.
    #[error("TLS to upstream {addr} failed: {reason}")]
    UpstreamTls {
        /// The upstream.
        addr: SocketAddr,
        /// `TLS_error:...`, as UPSTREAM_TRANSPORT_FAILURE_REASON prints it.
        reason: String,
        /// What failed, for the metrics.
        failure: TlsFailure,
    },
    /// The route's request_timeout passed before the response completed.
    #[error("upstream {addr} did not answer within {}", humantime::format_duration(*timeout))]
    UpstreamTimeout {
        /// The upstream.
        addr: SocketAddr,
        /// The rule's request_timeout.
        timeout: Duration,
    },
    /// The upstream closed or reset the connection before a response.
    #[error("upstream {addr} closed the connection: {reason}")]
    UpstreamReset {
        /// The upstream.
        addr: SocketAddr,
        /// What hyper saw.
        reason: String,
    },
    /// The upstream answered with something that is not HTTP.
    #[error("upstream {addr} sent an invalid response: {reason}")]
    UpstreamProtocol {
        /// The upstream.
        addr: SocketAddr,
        /// What hyper saw.
        reason: String,
    },
    /// The destination has no address to connect to.
    #[error("no address to connect to for {destination}")]
    NoAddress {
        /// `host:port`.
        destination: String,
    },
    /// The rule's `rate_limit` has no token left.
    #[error("rule {rule} lets out at most {per_second} requests a second; try again in {}s", retry_after.as_secs().max(1))]
    RateLimited {
        /// The rule.
        rule: String,
        /// Its rate.
        per_second: u32,
        /// When a token comes.
        retry_after: Duration,
    },
    /// The rule's `max_concurrent` are in flight.
    #[error("rule {rule} lets out at most {limit} requests at once")]
    TooManyConcurrent {
        /// The rule.
        rule: String,
        /// Its `max_concurrent`.
        limit: u32,
    },
}

/// Why TLS to an upstream failed: a bounded label of
/// `egress_tls_handshake_failures_total{side="origination"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// The upstream's certificate does not verify (issuer, name, validity...).
    CertificateVerifyFailed,
    /// The upstream sent an alert.
    AlertReceived,
    /// No application protocol both sides speak (ALPN).
    NoApplicationProtocol,
    /// Anything else the handshake met (not TLS, no shared cipher...).
    Handshake,
    /// The handshake did not finish within the connect timeout.
    Timeout,
    /// The destination is not a name TLS can verify.
    InvalidServerName,
    /// The rule's `ca_file` cannot be read or holds no usable certificate.
    CaFile,
}

impl TlsFailure {
    /// Every failure, in declaration order.
    pub const ALL: [TlsFailure; 7] = [
        TlsFailure::CertificateVerifyFailed,
        TlsFailure::AlertReceived,
        TlsFailure::NoApplicationProtocol,
        TlsFailure::Handshake,
        TlsFailure::Timeout,
        TlsFailure::InvalidServerName,
        TlsFailure::CaFile,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsFailure::CertificateVerifyFailed => "certificate_verify_failed",
            TlsFailure::AlertReceived => "alert_received",
            TlsFailure::NoApplicationProtocol => "no_application_protocol",
            TlsFailure::Handshake => "handshake_failed",
            TlsFailure::Timeout => "handshake_timeout",
            TlsFailure::InvalidServerName => "invalid_server_name",
            TlsFailure::CaFile => "ca_file",
        }
    }
}

/// Why a request or connection was denied, as `egress_denials_total` counts it: a
/// deny rule matched, no rule allows it, or the address guard refused every address.
pub const DENIAL_REASONS: [&str; 3] = ["rule", "no_rule", "address_refused"];

impl EgressError {
    /// The reason of a denial (one of [`DENIAL_REASONS`]), or `None` for any other
    /// failure. A denied request is counted with `decision="deny"`, whatever the rule
    /// that matched said: a destination the guard refused was not let out.
    pub fn denial_reason(&self) -> Option<&'static str> {
        match self {
            EgressError::Denied { rule: Some(_), .. } => Some(DENIAL_REASONS[0]),
            EgressError::Denied { rule: None, .. } => Some(DENIAL_REASONS[1]),
            EgressError::AddressRefused { .. } => Some(DENIAL_REASONS[2]),
            _ => None,
        }
    }

    /// The reason of a bad request, for `egress_bad_requests_total`.
    pub fn bad_request_reason(&self) -> Option<&'static str> {
        match self {
            EgressError::BadRequest { reason, .. } => Some(reason),
            _ => None,
        }
    }

    /// The status code the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            EgressError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            EgressError::Denied { .. } | EgressError::AddressRefused { .. } => {
                StatusCode::FORBIDDEN
            }
            EgressError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            EgressError::UpstreamProtocol { .. } => StatusCode::BAD_GATEWAY,
            EgressError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            EgressError::Dns { .. }
            | EgressError::Connect { .. }
            | EgressError::ConnectTimeout { .. }
            | EgressError::UpstreamTls { .. }
            | EgressError::UpstreamReset { .. }
            | EgressError::NoAddress { .. }
            | EgressError::TooManyConcurrent { .. }
            | EgressError::AuditUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The Envoy response flag of the audit line.
    pub fn flags(&self) -> ResponseFlags {
        match self {
            EgressError::BadRequest { .. } => ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR,
            EgressError::Denied { .. } | EgressError::AddressRefused { .. } => ResponseFlags::NONE,
            EgressError::Dns { .. } => ResponseFlags::DNS_RESOLUTION_FAILED,
            EgressError::Connect { .. }
            | EgressError::ConnectTimeout { .. }
            | EgressError::UpstreamTls { .. } => ResponseFlags::UPSTREAM_CONNECTION_FAILURE,
            EgressError::UpstreamTimeout { .. } => ResponseFlags::UPSTREAM_REQUEST_TIMEOUT,
            EgressError::UpstreamReset { .. } => ResponseFlags::UPSTREAM_CONNECTION_TERMINATION,
            EgressError::UpstreamProtocol { .. } => ResponseFlags::UPSTREAM_PROTOCOL_ERROR,
            EgressError::TooManyConcurrent { .. } => ResponseFlags::UPSTREAM_OVERFLOW,
            EgressError::RateLimited { .. } => ResponseFlags::RATE_LIMITED,
            EgressError::NoAddress { .. } => ResponseFlags::NO_HEALTHY_UPSTREAM,
            EgressError::AuditUnavailable => ResponseFlags::OVERLOAD_MANAGER,
        }
    }

    /// RESPONSE_CODE_DETAILS: Envoy's words where Envoy has them, snake_case ours where
    /// not (listed in the README).
    pub fn details(&self) -> Cow<'static, str> {
        match self {
            EgressError::BadRequest { reason, .. } => Cow::Borrowed(reason),
            EgressError::Denied { rule, .. } => denial_details(rule.as_deref()),
            EgressError::AddressRefused { class, .. } => {
                format!("destination_address_refused{{{}}}", class.as_str()).into()
            }
            EgressError::Dns {
                timed_out: true, ..
            } => Cow::Borrowed("dns_resolution_timeout"),
            EgressError::Dns { .. } => Cow::Borrowed("dns_resolution_failure"),
            EgressError::Connect { .. } | EgressError::ConnectTimeout { .. } => {
                Cow::Borrowed("upstream_reset_before_response_started{connection_failure}")
            }
            EgressError::UpstreamTls { reason, .. } => {
                format!("upstream_reset_before_response_started{{connection_failure,{reason}}}")
                    .into()
            }
            EgressError::UpstreamTimeout { .. } => Cow::Borrowed("response_timeout"),
            EgressError::UpstreamReset { .. } => {
                Cow::Borrowed("upstream_reset_before_response_started{connection_termination}")
            }
            EgressError::UpstreamProtocol { .. } => {
                Cow::Borrowed("upstream_reset_before_response_started{protocol_error}")
            }
            EgressError::RateLimited { .. } => Cow::Borrowed("rate_limited"),
            EgressError::NoAddress { .. } => Cow::Borrowed("no_healthy_upstream"),
            EgressError::TooManyConcurrent { .. } => Cow::Borrowed("overflow{max_concurrent}"),
            EgressError::AuditUnavailable => Cow::Borrowed("audit_log_unavailable"),
        }
    }

    /// The `Retry-After` a refusal by a rate limit answers with, in whole seconds.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            EgressError::RateLimited { retry_after, .. } => {
                Some(retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0))
            }
            _ => None,
        }
    }

    /// UPSTREAM_TRANSPORT_FAILURE_REASON, for failures of the upstream transport.
    pub fn transport_failure(&self) -> Option<String> {
        match self {
            EgressError::Connect { reason, .. } => Some(reason.clone()),
            EgressError::ConnectTimeout { .. } => Some("connect_timeout".to_owned()),
            EgressError::UpstreamTls { reason, .. } => Some(reason.clone()),
            _ => None,
        }
    }

    /// The upstream address involved, when one was tried.
    pub fn upstream_addr(&self) -> Option<SocketAddr> {
        match self {
            EgressError::Connect { addr, .. }
            | EgressError::ConnectTimeout { addr, .. }
            | EgressError::UpstreamTls { addr, .. }
            | EgressError::UpstreamTimeout { addr, .. }
            | EgressError::UpstreamReset { addr, .. }
            | EgressError::UpstreamProtocol { addr, .. } => Some(*addr),
            _ => None,
        }
    }
}

/// `rbac_access_denied_matched_policy[RULE]`, `[none]` when the mode denied.
pub fn denial_details(rule: Option<&str>) -> Cow<'static, str> {
    match rule {
        // Most denials: no rule matched in deny mode.
        None => Cow::Borrowed("rbac_access_denied_matched_policy[none]"),
        Some(rule) => format!("rbac_access_denied_matched_policy[{rule}]").into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denial_is_403_without_flag_and_with_envoy_details() {
        let e = EgressError::Denied {
            destination: "evil.example:80".into(),
            rule: None,
            why: "no rule allows it".into(),
        };
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
        assert!(e.flags().is_empty());
        assert_eq!(e.details(), "rbac_access_denied_matched_policy[none]");
        assert_eq!(
            e.to_string(),
            "egress to evil.example:80 denied: no rule allows it"
        );
    }

    #[test]
    fn upstream_failures_map_to_envoy_flags() {
        let addr: SocketAddr = "203.0.113.7:80".parse().unwrap();
        let timeout = EgressError::UpstreamTimeout {
            addr,
            timeout: Duration::from_secs(3),
        };
        assert_eq!(timeout.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(timeout.flags(), ResponseFlags::UPSTREAM_REQUEST_TIMEOUT);
        assert_eq!(timeout.details(), "response_timeout");
        assert_eq!(
            timeout.to_string(),
            "upstream 203.0.113.7:80 did not answer within 3s"
        );
        let refused = EgressError::Connect {
            addr,
            reason: "connection refused".into(),
        };
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.flags(), ResponseFlags::UPSTREAM_CONNECTION_FAILURE);
        let tls = EgressError::UpstreamTls {
            addr,
            reason: "TLS_error:CERTIFICATE_VERIFY_FAILED:unknown_issuer".into(),
            failure: TlsFailure::CertificateVerifyFailed,
        };
        assert_eq!(tls.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(tls.flags(), ResponseFlags::UPSTREAM_CONNECTION_FAILURE);
        assert_eq!(
            tls.details(),
            "upstream_reset_before_response_started{connection_failure,TLS_error:CERTIFICATE_VERIFY_FAILED:unknown_issuer}"
        );
        assert_eq!(
            tls.transport_failure().as_deref(),
            Some("TLS_error:CERTIFICATE_VERIFY_FAILED:unknown_issuer")
        );
    }
}
