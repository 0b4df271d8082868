//! Tests of the audit formats against Envoy's and Istio's own lines and the public
//! parsers of those lines, and of the sink's guarantees.

mod format;
mod parsers;
mod sink;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use super::AuditRecord;

/// A time from Envoy's text of it, e.g. `2024-01-09T15:35:47.283Z`.
fn at(text: &str) -> SystemTime {
    let n = |range: std::ops::Range<usize>| text[range].parse::<u16>().unwrap();
    let month = time::Month::try_from(u8::try_from(n(5..7)).unwrap()).unwrap();
    let date = time::Date::from_calendar_date(i32::from(n(0..4)), month, n(8..10) as u8).unwrap();
    let time =
        time::Time::from_hms_milli(n(11..13) as u8, n(14..16) as u8, n(17..19) as u8, n(20..23))
            .unwrap();
    SystemTime::from(time::PrimitiveDateTime::new(date, time).assume_utc())
}

fn addr(s: &str) -> Option<SocketAddr> {
    Some(s.parse().unwrap())
}

fn ms(n: u64) -> Option<Duration> {
    Some(Duration::from_millis(n))
}

fn header(record: &mut AuditRecord, name: &'static str, value: &str) {
    record
        .request_headers
        .insert(name.parse().unwrap(), value.parse().unwrap());
}

/// The HTTP example of Istio's egress-gateway task: allowed, via_upstream.
fn egress_http() -> AuditRecord {
    let mut r = AuditRecord::new();
    r.start_time = at("2024-01-09T15:35:47.283Z");
    r.method = Some("GET".into());
    r.path = Some("/politics".into());
    r.protocol = Some("HTTP/1.1".into());
    r.response_code = 301;
    r.response_code_details = Some("via_upstream".into());
    r.duration = ms(2);
    r.upstream_service_time = ms(2);
    header(&mut r, "x-forwarded-for", "172.30.239.55");
    header(&mut r, "user-agent", "curl/7.87.0-DEV");
    header(
        &mut r,
        "x-request-id",
        "6c01d65f-a157-97cd-8782-320a40026901",
    );
    r.authority = Some("edition.cnn.com".into());
    r.upstream_host = addr("151.101.195.5:80");
    r.upstream_cluster = Some("outbound|80||edition.cnn.com".into());
    r.upstream_local_address = addr("172.30.239.16:55636");
    r.downstream_local_address = addr("172.30.239.16:80");
    r.downstream_remote_address = addr("172.30.239.55:59224");
    r.route_name = Some("default.forward-cnn-from-egress-gateway.0".into());
    r
}

/// A policy denial: no rule matched and the mode denies.
fn rbac_denial() -> AuditRecord {
    let mut r = AuditRecord::new();
    r.start_time = at("2026-11-24T11:46:23.596Z");
    r.method = Some("GET".into());
    r.path = Some("/admin".into());
    r.protocol = Some("HTTP/1.1".into());
    r.response_code = 403;
    r.response_code_details = Some("rbac_access_denied_matched_policy[none]".into());
    r.bytes_sent = 19;
    r.duration = ms(0);
    header(&mut r, "user-agent", "curl/8.5.0");
    header(
        &mut r,
        "x-request-id",
        "0c4f7d2e-5b9a-4e61-9d3c-2a8b7f1e6d40",
    );
    r.authority = Some("blocked.example.com".into());
    r.downstream_local_address = addr("10.0.0.5:8080");
    r.downstream_remote_address = addr("10.0.0.9:41234");
    r
}

/// The TCP/TLS-passthrough example of Istio's egress-gateway task.
fn tls_passthrough() -> AuditRecord {
    let mut r = AuditRecord::new();
    r.start_time = at("2024-01-11T21:09:42.835Z");
    r.bytes_received = 839;
    r.bytes_sent = 2_504_306;
    r.duration = ms(231);
    r.upstream_host = addr("151.101.195.5:443");
    r.upstream_cluster = Some("outbound|443||edition.cnn.com".into());
    r.upstream_local_address = addr("172.30.239.8:34470");
    r.downstream_local_address = addr("172.30.239.8:443");
    r.downstream_remote_address = addr("172.30.239.15:43956");
    r.requested_server_name = Some("edition.cnn.com".into());
    r
}

fn render(spec: &str, record: &AuditRecord) -> String {
    let mut out = String::new();
    super::AuditFormat::parse(spec)
        .unwrap()
        .render(record, &mut out);
    out
}
