//! Render time of one audit line per format, and the cost of queueing it.
#![expect(
    missing_docs,
    reason = "criterion_group! generates an undocumented function"
)]

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion};
use egress_gateway::audit::{AuditFormat, AuditRecord, AuditSink, AuditTarget};

/// The HTTP line of Istio's egress-gateway task.
fn record() -> AuditRecord {
    let mut r = AuditRecord::new();
    r.start_time = SystemTime::UNIX_EPOCH + Duration::from_millis(1_704_814_547_283);
    r.method = Some("GET".into());
    r.path = Some("/politics".into());
    r.protocol = Some("HTTP/1.1".into());
    r.response_code = 301;
    r.response_code_details = Some("via_upstream".into());
    r.duration = Some(Duration::from_millis(2));
    r.upstream_service_time = Some(Duration::from_millis(2));
    let headers = [
        ("x-forwarded-for", "172.30.239.55"),
        ("user-agent", "curl/7.87.0-DEV"),
        ("x-request-id", "6c01d65f-a157-97cd-8782-320a40026901"),
    ];
    for (name, value) in headers {
        r.request_headers.insert(
            http::HeaderName::from_static(name),
            http::HeaderValue::from_static(value),
        );
    }
    r.authority = Some("edition.cnn.com".into());
    r.upstream_host = "151.101.195.5:80".parse().ok();
    r.upstream_cluster = Some("outbound|80||edition.cnn.com".into());
    r.upstream_local_address = "172.30.239.16:55636".parse().ok();
    r.downstream_local_address = "172.30.239.16:80".parse().ok();
    r.downstream_remote_address = "172.30.239.55:59224".parse().ok();
    r.route_name = Some("default.forward-cnn-from-egress-gateway.0".into());
    r
}

fn render(c: &mut Criterion) {
    let record = record();
    for name in ["istio", "envoy", "json"] {
        let Ok(format) = AuditFormat::parse(name) else {
            return;
        };
        let mut line = String::with_capacity(512);
        c.bench_function(&format!("render {name}"), |b| {
            b.iter(|| {
                line.clear();
                format.render(black_box(&record), &mut line);
                black_box(line.len())
            })
        });
    }
}

fn queue(c: &mut Criterion) {
    let Ok(dir) = tempfile::tempdir() else { return };
    let target = AuditTarget::File(dir.path().join("audit.log"));
    let Ok(sink) = AuditSink::open(vec![target], 65_536) else {
        return;
    };
    let line = "x".repeat(400) + "\n";
    c.bench_function("send one line", |b| {
        b.iter(|| sink.send(black_box(line.clone())))
    });
    sink.close(Duration::from_secs(30));
}

criterion_group!(benches, render, queue);
criterion_main!(benches);
