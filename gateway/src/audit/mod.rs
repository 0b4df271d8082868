//! The audit record of one request or connection, and how it becomes a line.
//!
//! Every request and connection gets exactly one [`AuditRecord`], finished through an
//! [`Auditor`]: formatted (Envoy command operators, [`format`]) and handed to the
//! [`sink`], which writes it off the data path.

mod escape;
pub mod format;
mod headers;
mod json;
pub mod recorder;
pub mod sink;
mod strftime;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use format::{AuditFormat, FormatError};
pub use headers::RecordedHeaders;
pub use recorder::{Recorder, Recording};
pub use sink::{AuditSink, AuditTarget, Rotation, SYNC_INTERVAL};

/// Envoy's response flags, as a small set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResponseFlags(u32);

macro_rules! flags {
    ($($(#[$doc:meta])* $name:ident = $bit:expr, $short:literal;)*) => {
        impl ResponseFlags {
            $($(#[$doc])* pub const $name: ResponseFlags = ResponseFlags(1 << $bit);)*
            /// Every flag with its short name, in Envoy's print order.
            pub const ALL: &'static [(ResponseFlags, &'static str)] = &[$((ResponseFlags::$name, $short)),*];
        }
    };
}

flags! {
    /// No healthy upstream.
    NO_HEALTHY_UPSTREAM = 0, "UH";
    /// Upstream connection failure.
    UPSTREAM_CONNECTION_FAILURE = 1, "UF";
    /// Upstream overflow (limits).
    UPSTREAM_OVERFLOW = 2, "UO";
    /// No route configured.
    NO_ROUTE_FOUND = 3, "NR";
    /// Retry or connect-attempt limit reached.
    UPSTREAM_RETRY_LIMIT_EXCEEDED = 4, "URX";
    /// Downstream connection termination.
    DOWNSTREAM_CONNECTION_TERMINATION = 5, "DC";
    /// Upstream request timeout.
    UPSTREAM_REQUEST_TIMEOUT = 6, "UT";
    /// Local reset.
    LOCAL_RESET = 7, "LR";
    /// Upstream remote reset.
    UPSTREAM_REMOTE_RESET = 8, "UR";
    /// Upstream connection termination.
    UPSTREAM_CONNECTION_TERMINATION = 9, "UC";
    /// Stream idle timeout.
    STREAM_IDLE_TIMEOUT = 10, "SI";
    /// Downstream protocol error.
    DOWNSTREAM_PROTOCOL_ERROR = 11, "DPE";
    /// Upstream protocol error.
    UPSTREAM_PROTOCOL_ERROR = 12, "UPE";
    /// DNS resolution failed.
    DNS_RESOLUTION_FAILED = 13, "DF";
    /// Refused to protect the gateway (Envoy's overload manager); here: the audit log
    /// cannot be written and `audit.on_error` is `fail_closed`.
    OVERLOAD_MANAGER = 14, "OM";
    /// Refused by a rate limit.
    RATE_LIMITED = 15, "RL";
}

impl ResponseFlags {
    /// No flag.
    pub const NONE: ResponseFlags = ResponseFlags(0);

    /// Whether no flag is set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether every flag of `other` is set.
    pub fn contains(self, other: ResponseFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Sets the flags of `other`.
    pub fn insert(&mut self, other: ResponseFlags) {
        self.0 |= other.0;
    }

    /// Appends the short names joined with `,` in [`ResponseFlags::ALL`] order, or `-`
    /// when no flag is set (Envoy's RESPONSE_FLAGS).
    pub fn write_short(self, out: &mut String) {
        if self.is_empty() {
            out.push('-');
            return;
        }
        let mut first = true;
        for (flag, short) in Self::ALL {
            if self.contains(*flag) {
                if !first {
                    out.push(',');
                }
                out.push_str(short);
                first = false;
            }
        }
    }
}

impl std::fmt::Display for ResponseFlags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = String::with_capacity(8);
        self.write_short(&mut s);
        f.write_str(&s)
    }
}

/// What the gateway knows about one request (HTTP) or connection (TCP, TLS, CONNECT),
/// the source of every audit line field. `None` prints as `-`.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    /// START_TIME: when the request (or connection) started.
    pub start_time: SystemTime,
    /// DURATION: start to last byte out (TCP: the connection's lifetime).
    pub duration: Option<Duration>,
    /// REQ(:METHOD); `None` for TCP-level lines.
    pub method: Option<Cow<'static, str>>,
    /// REQ(:PATH) (and X-ENVOY-ORIGINAL-PATH?:PATH).
    pub path: Option<String>,
    /// PROTOCOL: `HTTP/1.1`, `HTTP/2`; `None` for TCP-level lines.
    pub protocol: Option<Cow<'static, str>>,
    /// REQ(:AUTHORITY): the Host header or the URI's authority, as the client sent it.
    pub authority: Option<String>,
    /// REQ(X): the request headers as received (after the gateway added x-request-id).
    pub request_headers: RecordedHeaders,
    /// RESP(X): the response headers sent downstream.
    pub response_headers: RecordedHeaders,
    /// RESPONSE_CODE; 0 when no response was sent (and for TCP).
    pub response_code: u16,
    /// RESPONSE_FLAGS.
    pub response_flags: ResponseFlags,
    /// RESPONSE_CODE_DETAILS, e.g. `via_upstream`, `rbac_access_denied_matched_policy[none]`.
    pub response_code_details: Option<Cow<'static, str>>,
    /// CONNECTION_TERMINATION_DETAILS.
    pub connection_termination_details: Option<String>,
    /// UPSTREAM_TRANSPORT_FAILURE_REASON.
    pub upstream_transport_failure_reason: Option<String>,
    /// BYTES_RECEIVED: request body bytes (TCP: bytes from downstream).
    pub bytes_received: u64,
    /// BYTES_SENT: response body bytes (TCP: bytes to downstream).
    pub bytes_sent: u64,
    /// RESP(X-ENVOY-UPSTREAM-SERVICE-TIME): request sent upstream → response headers.
    pub upstream_service_time: Option<Duration>,
    /// UPSTREAM_HOST: the address connected to.
    pub upstream_host: Option<SocketAddr>,
    /// UPSTREAM_CLUSTER(_RAW): `outbound|PORT||HOST`.
    pub upstream_cluster: Option<String>,
    /// UPSTREAM_LOCAL_ADDRESS.
    pub upstream_local_address: Option<SocketAddr>,
    /// DOWNSTREAM_LOCAL_ADDRESS: the listener address the client reached.
    pub downstream_local_address: Option<SocketAddr>,
    /// DOWNSTREAM_REMOTE_ADDRESS: the client.
    pub downstream_remote_address: Option<SocketAddr>,
    /// DOWNSTREAM_PEER_URI_SAN: the client certificate's identity.
    pub downstream_peer_uri_san: Option<String>,
    /// REQUESTED_SERVER_NAME: the downstream SNI.
    pub requested_server_name: Option<String>,
    /// ROUTE_NAME: the name of the rule that decided.
    pub route_name: Option<Arc<str>>,
}

impl AuditRecord {
    /// An empty record started now.
    pub fn new() -> Self {
        Self {
            start_time: SystemTime::now(),
            duration: None,
            method: None,
            path: None,
            protocol: None,
            authority: None,
            request_headers: RecordedHeaders::new(),
            response_headers: RecordedHeaders::new(),
            response_code: 0,
            response_flags: ResponseFlags::NONE,
            response_code_details: None,
            connection_termination_details: None,
            upstream_transport_failure_reason: None,
            bytes_received: 0,
            bytes_sent: 0,
            upstream_service_time: None,
            upstream_host: None,
            upstream_cluster: None,
            upstream_local_address: None,
            downstream_local_address: None,
            downstream_remote_address: None,
            downstream_peer_uri_san: None,
            requested_server_name: None,
            route_name: None,
        }
    }
}

impl Default for AuditRecord {
    fn default() -> Self {
        Self::new()
    }
}

/// Formats finished records and hands the lines to the sink.
#[derive(Debug)]
pub struct Auditor {
    format: AuditFormat,
    sink: std::sync::Arc<AuditSink>,
}

impl Auditor {
    /// An auditor writing `format` lines to `sink`.
    pub fn new(format: AuditFormat, sink: std::sync::Arc<AuditSink>) -> Self {
        Self { format, sink }
    }

    /// Formats `record` and queues the line; never blocks. Lines are rendered into a
    /// buffer each thread reuses, so recording allocates nothing once warm.
    pub fn record(&self, record: &AuditRecord) {
        thread_local! {
            static LINE: std::cell::RefCell<String> = std::cell::RefCell::new(String::with_capacity(1024));
        }
        LINE.with_borrow_mut(|line| {
            line.clear();
            self.format.render(record, line);
            line.push('\n');
            self.sink.send_str(line);
        });
    }

    /// The line format.
    pub fn format(&self) -> &AuditFormat {
        &self.format
    }

    /// The sink, for reopening, flushing and counters.
    pub fn sink(&self) -> &std::sync::Arc<AuditSink> {
        &self.sink
    }
}
