//! A full audit disk: requests are served (audit.on_error fail_open, the default), every
//! line that could not be written is counted, `/readyz` says so, and lines come back
//! whole once there is space again.

use egress_gateway::config::OnError;
use egress_gateway::testing::TestGateway;
use egress_testkit::disk::{fill, SmallDisk};
use egress_testkit::{KeepAliveClient, StubUpstream, TestDns};
use http::Method;

use crate::common::allow_policy;

fn counter(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

/// A gateway whose audit log is on a 128 KiB tmpfs, allowing api.example.com to a stub.
struct OnSmallDisk {
    disk: SmallDisk,
    upstream: StubUpstream,
    _dns: TestDns,
    gateway: TestGateway,
    authority: String,
}

impl OnSmallDisk {
    async fn start(on_error: OnError) -> OnSmallDisk {
        let disk = SmallDisk::mount(128 * 1024);
        let upstream = StubUpstream::start().await;
        let dns = TestDns::start().await;
        dns.set("api.example.com", ["127.0.0.1".parse().unwrap()]);
        let gateway = TestGateway::builder(&allow_policy("[api.example.com]"))
            .dns(vec![dns.addr()])
            .audit_path(disk.path().join("audit.log"))
            .configure(|c| c.audit.on_error = on_error)
            .start()
            .await;
        let authority = format!("api.example.com:{}", upstream.port());
        OnSmallDisk {
            disk,
            upstream,
            _dns: dns,
            gateway,
            authority,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_full_disk_every_request_is_served_and_every_lost_line_counted() {
    let OnSmallDisk {
        disk,
        upstream: _upstream,
        _dns,
        gateway,
        authority,
    } = OnSmallDisk::start(OnError::FailOpen).await;
    let filler = fill(disk.path());
    let mut client = KeepAliveClient::connect(gateway.addr("http"))
        .await
        .unwrap();
    let requests = 3_000u64;
    for _ in 0..requests {
        let r = client
            .request(Method::GET, "/", &[("host", authority.as_str())], "")
            .await
            .unwrap();
        assert_eq!(r.status, 200);
    }
    let sink = gateway.inner().audit_sink();
    assert!(sink.flush(std::time::Duration::from_secs(10)));
    let mut admin = KeepAliveClient::connect(gateway.admin_addr())
        .await
        .unwrap();
    let ready = admin.get("/readyz").await.unwrap();
    assert_eq!(ready.status, 200, "fail_open keeps serving");
    assert!(
        ready
            .text()
            .contains("audit: the audit log cannot be written"),
        "{}",
        ready.text()
    );
    let metrics = admin.get("/metrics").await.unwrap().text();
    let written = counter(&metrics, "egress_audit_lines_written_total");
    let lost = counter(
        &metrics,
        "egress_audit_lines_dropped_total{reason=\"write_error\"}",
    );
    assert!(lost > 0, "{metrics}");
    assert_eq!(
        written + lost,
        requests,
        "lines written + dropped == requests"
    );

    std::fs::remove_file(filler).unwrap();
    for _ in 0..10 {
        client
            .request(Method::GET, "/", &[("host", authority.as_str())], "")
            .await
            .unwrap();
    }
    assert!(sink.flush(std::time::Duration::from_secs(10)));
    assert_eq!(sink.written() + sink.lost(), requests + 10);
    let text = std::fs::read_to_string(disk.path().join("audit.log")).unwrap();
    assert_eq!(text.lines().count() as u64, sink.written());
    assert!(
        text.lines().all(|l| l.contains("api.example.com")),
        "whole lines"
    );
    // Closed before the disk is unmounted.
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fail_closed_nothing_is_let_out_while_lines_cannot_be_written() {
    let OnSmallDisk {
        disk,
        upstream,
        _dns,
        gateway,
        authority,
    } = OnSmallDisk::start(OnError::FailClosed).await;
    let mut client = KeepAliveClient::connect(gateway.addr("http"))
        .await
        .unwrap();
    let mut get = async || {
        let r = client
            .request(Method::GET, "/", &[("host", authority.as_str())], "")
            .await
            .unwrap();
        (r.status.as_u16(), r.text())
    };
    assert_eq!(get().await.0, 200);
    let filler = fill(disk.path());
    // The first line that cannot be written closes the gate.
    let mut refused = None;
    for _ in 0..200 {
        let (status, body) = get().await;
        if status == 503 {
            refused = Some(body);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let body = refused.expect("refused once lines could not be written");
    assert!(body.contains("audit log cannot be written"), "{body}");
    let before = upstream.request_count();
    for _ in 0..20 {
        assert_eq!(
            get().await.0,
            503,
            "nothing goes out while the disk is full"
        );
    }
    assert_eq!(upstream.request_count(), before);

    std::fs::remove_file(filler).unwrap();
    let mut open_again = false;
    for _ in 0..200 {
        if get().await.0 == 200 {
            open_again = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(open_again, "traffic flows again once lines can be written");
    let text = std::fs::read_to_string(disk.path().join("audit.log")).unwrap();
    assert!(text.contains(" 503 OM audit_log_unavailable "), "{text}");
    gateway.shutdown().await;
}
