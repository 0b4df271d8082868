//! The `json` audit format: one object per line with the keys of Istio's JSON access log.
//!
//! Keys are the snake_case names of the operators of the `istio` text format, in its
//! order. Numbers (response_code, bytes_*, duration, upstream_service_time) are JSON
//! numbers; an unset value is `null`; RESPONSE_FLAGS is `"-"` when none is set, as
//! Envoy prints it. Strings are JSON-escaped, which is lossless and keeps the line whole.

use std::net::SocketAddr;
use std::time::Duration;

use super::escape::write_json_str;
use super::format::{push_addr, push_int};
use super::strftime::TimeFormat;
use super::AuditRecord;

/// Appends `record` as one JSON object (without the newline).
pub(crate) fn render(r: &AuditRecord, out: &mut String) {
    out.push_str("{\"start_time\":\"");
    TimeFormat::Default.write(r.start_time, out);
    out.push('"');
    string(out, "method", r.method.as_deref().map(str::as_bytes));
    let path = r
        .request_headers
        .get("x-envoy-original-path")
        .map(|v| v.as_bytes())
        .or(r.path.as_deref().map(str::as_bytes));
    string(out, "path", path);
    string(out, "protocol", r.protocol.as_deref().map(str::as_bytes));
    key(out, "response_code");
    push_int(out, u64::from(r.response_code));
    key(out, "response_flags");
    out.push('"');
    r.response_flags.write_short(out);
    out.push('"');
    string(
        out,
        "response_code_details",
        bytes(&r.response_code_details),
    );
    string(
        out,
        "connection_termination_details",
        bytes(&r.connection_termination_details),
    );
    string(
        out,
        "upstream_transport_failure_reason",
        bytes(&r.upstream_transport_failure_reason),
    );
    key(out, "bytes_received");
    push_int(out, r.bytes_received);
    key(out, "bytes_sent");
    push_int(out, r.bytes_sent);
    millis(out, "duration", r.duration);
    upstream_service_time(out, r);
    string(out, "x_forwarded_for", header(r, "x-forwarded-for"));
    string(out, "user_agent", header(r, "user-agent"));
    string(out, "request_id", header(r, "x-request-id"));
    string(out, "authority", bytes(&r.authority));
    address(out, "upstream_host", r.upstream_host);
    string(out, "upstream_cluster", bytes(&r.upstream_cluster));
    address(out, "upstream_local_address", r.upstream_local_address);
    address(out, "downstream_local_address", r.downstream_local_address);
    address(
        out,
        "downstream_remote_address",
        r.downstream_remote_address,
    );
    string(
        out,
        "requested_server_name",
        bytes(&r.requested_server_name),
    );
    string(out, "route_name", bytes(&r.route_name));
    out.push('}');
}

fn key(out: &mut String, name: &str) {
    out.push_str(",\"");
    out.push_str(name);
    out.push_str("\":");
}

fn bytes<T: std::ops::Deref<Target = str>>(value: &Option<T>) -> Option<&[u8]> {
    value.as_deref().map(str::as_bytes)
}

fn header<'a>(r: &'a AuditRecord, name: &str) -> Option<&'a [u8]> {
    r.request_headers.get(name).map(|v| v.as_bytes())
}

fn string(out: &mut String, name: &str, value: Option<&[u8]>) {
    key(out, name);
    match value {
        Some(value) => write_json_str(out, value),
        None => out.push_str("null"),
    }
}

fn millis(out: &mut String, name: &str, value: Option<Duration>) {
    key(out, name);
    match value {
        Some(d) => push_int(out, u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        None => out.push_str("null"),
    }
}

fn address(out: &mut String, name: &str, value: Option<SocketAddr>) {
    key(out, name);
    match value {
        Some(_) => {
            out.push('"');
            push_addr(out, value, true);
            out.push('"');
        }
        None => out.push_str("null"),
    }
}

/// The response header when one was sent (a number if it is one), else the record's.
fn upstream_service_time(out: &mut String, r: &AuditRecord) {
    match r.response_headers.get("x-envoy-upstream-service-time") {
        Some(value) => match value.to_str().ok().and_then(|v| v.parse::<u64>().ok()) {
            Some(ms) => {
                key(out, "upstream_service_time");
                push_int(out, ms);
            }
            None => string(out, "upstream_service_time", Some(value.as_bytes())),
        },
        None => millis(out, "upstream_service_time", r.upstream_service_time),
    }
}
