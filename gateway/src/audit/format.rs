//! Audit line formats: Envoy command operators, parsed once, rendered per record.
//!
//! A format string is parsed into a list of pieces (literal text, operator) when the
//! config loads; rendering walks the list and appends to a reused `String`, with no
//! allocation per field. Every value from a client is escaped ([`super::escape`]) so a
//! record is always exactly one line.

use std::net::SocketAddr;

use http::HeaderName;

mod parse;

use super::escape::{write_text, Escape};
use super::strftime::TimeFormat;
use super::{json, AuditRecord};

/// Istio's default TEXT access-log format (`EnvoyTextLogFormat`), without the newline.
pub const ISTIO_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%";

/// Envoy's default access-log format, without the newline.
pub const ENVOY_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"";

/// A parsed audit format: `istio`, `envoy`, `json`, or a format string.
#[derive(Debug, Clone)]
pub struct AuditFormat {
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Text(Vec<Piece>),
    Json,
}

/// A format string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FormatError(pub String);

#[derive(Debug, Clone)]
enum Piece {
    Literal(Box<str>),
    Operator { op: Operator, max: Option<usize> },
}

#[derive(Debug, Clone)]
enum Operator {
    StartTime(TimeFormat),
    Header {
        side: Side,
        main: Header,
        alt: Option<Header>,
    },
    Protocol,
    ResponseCode,
    ResponseFlags,
    ResponseCodeDetails,
    ConnectionTerminationDetails,
    UpstreamTransportFailureReason,
    BytesReceived,
    BytesSent,
    Duration,
    Address {
        which: Address,
        port: bool,
    },
    UpstreamCluster,
    DownstreamPeerUriSan,
    RequestedServerName,
    RouteName,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Request,
    Response,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Header {
    Method,
    Path,
    Authority,
    /// `host`: the Host header, else the authority (Envoy keeps Host as `:authority`).
    Host,
    /// `:status` of the response.
    Status,
    /// Envoy sets `x-envoy-upstream-service-time` itself; ours comes from the record.
    UpstreamServiceTime,
    /// A pseudo header the gateway has no value for (`:scheme`, `:protocol`).
    Unknown,
    Named(HeaderName),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Address {
    UpstreamHost,
    UpstreamLocal,
    DownstreamLocal,
    DownstreamRemote,
}

impl AuditFormat {
    /// Parses `istio`, `envoy`, `json`, or a string of Envoy command operators.
    ///
    /// One trailing newline is ignored (the line end is the sink's). Fails on an
    /// unknown operator, an unterminated `%`, a bad argument or `:N`, or a line break
    /// inside the format.
    pub fn parse(spec: &str) -> Result<Self, FormatError> {
        let kind = match spec {
            "istio" => Kind::Text(parse::pieces(ISTIO_FORMAT)?),
            "envoy" => Kind::Text(parse::pieces(ENVOY_FORMAT)?),
            "json" => Kind::Json,
            custom => {
                let custom = custom.strip_suffix('\n').unwrap_or(custom);
                let custom = custom.strip_suffix('\r').unwrap_or(custom);
                Kind::Text(parse::pieces(custom)?)
            }
        };
        Ok(Self { kind })
    }

    /// The request headers (REQ) and response headers (RESP) this format prints, so a
    /// request copies only those into its record instead of every header it carries.
    pub fn headers_used(&self) -> (Vec<http::HeaderName>, Vec<http::HeaderName>) {
        let mut request = Vec::new();
        let mut response = Vec::new();
        match &self.kind {
            Kind::Json => {
                for name in [
                    "x-envoy-original-path",
                    "x-forwarded-for",
                    "user-agent",
                    "x-request-id",
                ] {
                    request.push(http::HeaderName::from_static(name));
                }
                response.push(http::HeaderName::from_static(
                    "x-envoy-upstream-service-time",
                ));
            }
            Kind::Text(pieces) => {
                for piece in pieces {
                    let Piece::Operator {
                        op: Operator::Header { side, main, alt },
                        ..
                    } = piece
                    else {
                        continue;
                    };
                    let list = match side {
                        Side::Request => &mut request,
                        Side::Response => &mut response,
                    };
                    for header in std::iter::once(main).chain(alt) {
                        match header {
                            Header::Named(name) => list.push(name.clone()),
                            Header::Host => list.push(http::header::HOST),
                            Header::UpstreamServiceTime => list.push(
                                http::HeaderName::from_static("x-envoy-upstream-service-time"),
                            ),
                            _ => {}
                        }
                    }
                }
            }
        }
        request.dedup();
        response.dedup();
        (request, response)
    }

    /// Appends the line for `record` (without the newline) to `out`.
    pub fn render(&self, record: &AuditRecord, out: &mut String) {
        match &self.kind {
            Kind::Json => json::render(record, out),
            Kind::Text(pieces) => {
                for piece in pieces {
                    match piece {
                        Piece::Literal(text) => out.push_str(text),
                        Piece::Operator { op, max } => render_operator(op, *max, record, out),
                    }
                }
            }
        }
    }
}

fn render_operator(op: &Operator, max: Option<usize>, r: &AuditRecord, out: &mut String) {
    let start = out.len();
    match op {
        Operator::Header { side, main, alt } => {
            let found = write_header(main, *side, max, r, out)
                || alt
                    .as_ref()
                    .is_some_and(|alt| write_header(alt, *side, max, r, out));
            if !found {
                out.push('-');
            }
            return; // text values are cut before escaping, not here
        }
        Operator::StartTime(format) => format.write(r.start_time, out),
        Operator::Protocol => text(out, r.protocol.as_deref(), Escape::Token, max),
        Operator::ResponseCode => push_int(out, u64::from(r.response_code)),
        Operator::ResponseFlags => r.response_flags.write_short(out),
        Operator::ResponseCodeDetails => {
            text(out, r.response_code_details.as_deref(), Escape::Detail, max)
        }
        Operator::ConnectionTerminationDetails => {
            text(
                out,
                r.connection_termination_details.as_deref(),
                Escape::Detail,
                max,
            );
        }
        Operator::UpstreamTransportFailureReason => {
            text(
                out,
                r.upstream_transport_failure_reason.as_deref(),
                Escape::Detail,
                max,
            );
        }
        Operator::BytesReceived => push_int(out, r.bytes_received),
        Operator::BytesSent => push_int(out, r.bytes_sent),
        Operator::Duration => push_millis(out, r.duration),
        Operator::Address { which, port } => {
            let addr = match which {
                Address::UpstreamHost => r.upstream_host,
                Address::UpstreamLocal => r.upstream_local_address,
                Address::DownstreamLocal => r.downstream_local_address,
                Address::DownstreamRemote => r.downstream_remote_address,
            };
            push_addr(out, addr, *port);
        }
        Operator::UpstreamCluster => text(out, r.upstream_cluster.as_deref(), Escape::Token, max),
        Operator::DownstreamPeerUriSan => text(
            out,
            r.downstream_peer_uri_san.as_deref(),
            Escape::Token,
            max,
        ),
        Operator::RequestedServerName => {
            text(out, r.requested_server_name.as_deref(), Escape::Token, max)
        }
        Operator::RouteName => text(out, r.route_name.as_deref(), Escape::Token, max),
    }
    if let Some(max) = max {
        cut(out, start, max);
    }
}

/// Writes one header's value; false (and nothing written) when it is absent.
fn write_header(
    header: &Header,
    side: Side,
    max: Option<usize>,
    r: &AuditRecord,
    out: &mut String,
) -> bool {
    let value: &[u8] = match header {
        Header::Method => return opt_text(out, r.method.as_deref(), Escape::Token, max),
        Header::Path => return opt_text(out, r.path.as_deref(), Escape::Token, max),
        Header::Authority => return opt_text(out, r.authority.as_deref(), Escape::Token, max),
        Header::Host => match r.request_headers.get(&http::header::HOST) {
            Some(host) => host.as_bytes(),
            None => return opt_text(out, r.authority.as_deref(), Escape::Token, max),
        },
        Header::Status => {
            if r.response_code == 0 {
                return false;
            }
            let start = out.len();
            push_int(out, u64::from(r.response_code));
            max.inspect(|max| cut(out, start, *max));
            return true;
        }
        Header::UpstreamServiceTime => {
            match r.response_headers.get("x-envoy-upstream-service-time") {
                Some(value) => value.as_bytes(),
                None => {
                    let Some(time) = r.upstream_service_time else {
                        return false;
                    };
                    let start = out.len();
                    push_int(out, u64::try_from(time.as_millis()).unwrap_or(u64::MAX));
                    max.inspect(|max| cut(out, start, *max));
                    return true;
                }
            }
        }
        Header::Unknown => return false,
        Header::Named(name) => {
            let map = match side {
                Side::Request => &r.request_headers,
                Side::Response => &r.response_headers,
            };
            match map.get(name) {
                Some(value) => value.as_bytes(),
                None => return false,
            }
        }
    };
    write_text(out, value, Escape::Quoted, max);
    true
}

fn opt_text(out: &mut String, value: Option<&str>, mode: Escape, max: Option<usize>) -> bool {
    match value {
        Some(value) => {
            write_text(out, value.as_bytes(), mode, max);
            true
        }
        None => false,
    }
}

/// Writes `value` escaped, or `-` when it is unset.
fn text(out: &mut String, value: Option<&str>, mode: Escape, max: Option<usize>) {
    if !opt_text(out, value, mode, max) {
        out.push('-');
    }
}

pub(super) fn push_int(out: &mut String, value: u64) {
    out.push_str(itoa::Buffer::new().format(value));
}

fn push_millis(out: &mut String, value: Option<std::time::Duration>) {
    match value {
        Some(d) => push_int(out, u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        None => out.push('-'),
    }
}

pub(super) fn push_addr(out: &mut String, addr: Option<SocketAddr>, port: bool) {
    use std::fmt::Write;
    let Some(addr) = addr else {
        out.push('-');
        return;
    };
    match addr.ip() {
        // Four to five addresses a line: digits by hand, not through `fmt`.
        std::net::IpAddr::V4(ip) => {
            let [a, b, c, d] = ip.octets();
            let mut digits = itoa::Buffer::new();
            for (i, octet) in [a, b, c, d].into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(digits.format(octet));
            }
            if port {
                out.push(':');
                out.push_str(digits.format(addr.port()));
            }
        }
        // Writing into a String cannot fail.
        std::net::IpAddr::V6(_) if port => {
            let _ = write!(out, "{addr}");
        }
        std::net::IpAddr::V6(ip) => {
            let _ = write!(out, "{ip}");
        }
    }
}

/// Cuts what was written since `start` to at most `max` bytes, on a character boundary.
fn cut(out: &mut String, start: usize, max: usize) {
    let mut end = start.saturating_add(max);
    if end >= out.len() {
        return;
    }
    while !out.is_char_boundary(end) {
        end -= 1;
    }
    out.truncate(end);
}
