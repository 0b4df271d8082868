//! Audit formats: the format string of `audit.format` parsed, then a record rendered
//! with hostile values. The first line of the input is the format; each further line is
//! a value a client controls (path, authority, headers, SNI, ...).
#![no_main]

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use egress_gateway::audit::{AuditFormat, AuditRecord, ResponseFlags};
use http::{HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let Some(Ok(spec)) = lines.next().map(std::str::from_utf8) else {
        return;
    };
    let Ok(format) = AuditFormat::parse(spec) else {
        return;
    };
    let (request, response) = format.headers_used();
    let values: Vec<&[u8]> = lines.collect();
    let seed = values.iter().map(|v| v.len() as u64).sum::<u64>() + data.len() as u64;
    let start_time = SystemTime::UNIX_EPOCH
        + Duration::new(
            1_700_000_000 + seed * 7919 % 1_000_000_000,
            (seed * 104_729) as u32 % 1_000_000_000,
        );

    let mut quiet = AuditRecord::new();
    quiet.start_time = start_time;
    let mut baseline = String::new();
    format.render(&quiet, &mut baseline);

    let record = hostile(start_time, &values, &request, &response, seed);
    let mut line = String::new();
    format.render(&record, &mut line);

    if spec == "json" {
        let parsed: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(parsed.is_object());
        assert!(!line.contains('\n'));
    } else {
        // A record is one line whatever a client sends, and no value adds a quote that
        // would shift the fields a log parser sees.
        assert!(!line.contains(['\n', '\r']), "{line:?}");
        assert!(
            !line.chars().any(|c| c.is_control() && c != '\t'),
            "{line:?}"
        );
        assert_eq!(
            line.matches('"').count(),
            baseline.matches('"').count(),
            "{line:?} vs {baseline:?}"
        );
    }
});

fn hostile(
    start_time: SystemTime,
    values: &[&[u8]],
    request: &[HeaderName],
    response: &[HeaderName],
    seed: u64,
) -> AuditRecord {
    let mut next = values.iter().cycle().copied();
    let mut text =
        || -> Option<String> { next.next().map(|v| String::from_utf8_lossy(v).into_owned()) };
    let mut r = AuditRecord::new();
    r.start_time = start_time;
    if values.is_empty() {
        return r;
    }
    r.method = text().map(Cow::Owned);
    r.path = text();
    r.protocol = Some("HTTP/1.1".into());
    r.authority = text();
    r.response_code = (seed % 600) as u16;
    for (i, (flag, _)) in ResponseFlags::ALL.iter().enumerate() {
        if seed >> (i % 64) & 1 == 1 {
            r.response_flags.insert(*flag);
        }
    }
    r.response_code_details = text().map(Cow::Owned);
    r.connection_termination_details = text();
    r.upstream_transport_failure_reason = text();
    r.bytes_received = seed.wrapping_mul(31);
    r.bytes_sent = u64::MAX - seed;
    r.duration = Some(Duration::from_micros(seed));
    r.upstream_service_time = (seed % 3 == 0).then(|| Duration::from_millis(seed));
    r.upstream_host = Some(SocketAddr::from(([203, 0, 113, 7], 443)));
    r.upstream_cluster = text();
    r.upstream_local_address = Some("[2001:db8::1]:40000".parse().unwrap());
    r.downstream_local_address = Some(SocketAddr::from(([10, 0, 0, 1], 8080)));
    r.downstream_remote_address = Some("[::ffff:10.0.0.2]:5555".parse().unwrap());
    r.downstream_peer_uri_san = text();
    r.requested_server_name = text();
    r.route_name = text().map(Into::into);
    let mut raw = values.iter().cycle().copied();
    for name in request {
        if let Some(Ok(value)) = raw.next().map(HeaderValue::from_bytes) {
            r.request_headers.insert(name.clone(), value);
        }
    }
    for name in response {
        if let Some(Ok(value)) = raw.next().map(HeaderValue::from_bytes) {
            r.response_headers.insert(name.clone(), value);
        }
    }
    if let Some(Ok(value)) = raw.next().map(HeaderValue::from_bytes) {
        r.request_headers.insert(http::header::HOST, value);
    }
    r
}
