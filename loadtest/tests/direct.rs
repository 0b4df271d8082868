//! Every scenario against the stub upstreams, with no proxy, and CONNECT through a
//! minimal CONNECT proxy of the test's own: the load generator's client side and the
//! stubs agree, and a few dozen requests of each end as expected.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test by panicking"
)]

use std::net::SocketAddr;
use std::time::Duration;

use egress_loadtest::report::Report;
use egress_loadtest::run::{execute, RunPlan};
use egress_loadtest::scenario::{Scenario, Workload};
use egress_loadtest::upstream::{UpstreamConfig, Upstreams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn plan(scenario: Scenario, target: SocketAddr, direct: bool) -> RunPlan {
    RunPlan {
        label: scenario.name().into(),
        workload: Workload {
            scenario,
            new_connection: false,
            body_bytes: 1000,
            deny_percent: 0,
            connect_port: 0,
        },
        target,
        direct,
        connections: 4,
        rate: None,
        duration: Duration::from_secs(10),
        max_requests: Some(40),
        timeout: Duration::from_secs(5),
        progress: false,
    }
}

fn assert_counts(r: &Report, denied: u64) {
    assert_eq!(r.requests, 40, "{}", r.human());
    assert_eq!(r.errors, 0, "{}", r.human());
    assert_eq!(r.ok + r.denied, r.requests);
    assert_eq!(r.denied, denied, "{}", r.human());
    assert_eq!(r.latency.count, r.requests);
}

#[tokio::test]
async fn every_scenario_on_the_direct_path() {
    let up = Upstreams::start(UpstreamConfig::default()).await.unwrap();
    let cases = [
        (Scenario::Http1, up.http, 25),
        (Scenario::H2c, up.http, 25),
        (Scenario::Tls, up.tls, 25),
        (Scenario::ConnectTls, up.tls, 25),
        (Scenario::ConnectEcho, up.echo, 0),
    ];
    for (scenario, target, deny_percent) in cases {
        for new_connection in [false, true] {
            let mut p = plan(scenario, target, true);
            p.workload.deny_percent = deny_percent;
            p.workload.new_connection = new_connection;
            let r = execute(&p).await.unwrap();
            assert_counts(&r, 40 * u64::from(deny_percent) / 100);
            if scenario != Scenario::ConnectEcho {
                // 30 responses of at least 1000 body bytes; denials are small.
                assert!(r.bytes >= 30 * 1000, "{}", r.human());
            } else {
                assert_eq!(r.bytes, 40 * 1000);
            }
        }
    }
}

/// A CONNECT proxy in a few lines: `allowed.test:PORT` → 127.0.0.1:PORT, anything
/// else → 403.
async fn connect_proxy() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut client, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if client.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let line = String::from_utf8_lossy(&head).to_string();
                let authority = line
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_owned();
                let Some(port) = authority.strip_prefix("allowed.test:") else {
                    let _ = client
                        .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .await;
                    return;
                };
                #[expect(
                    clippy::disallowed_methods,
                    reason = "the test's proxy dials the stub on loopback"
                )]
                let mut upstream =
                    tokio::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap()))
                        .await
                        .unwrap();
                client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await
                    .unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn connect_scenarios_through_a_connect_proxy() {
    let up = Upstreams::start(UpstreamConfig::default()).await.unwrap();
    let proxy = connect_proxy().await;
    for (scenario, port) in [
        (Scenario::ConnectTls, up.tls.port()),
        (Scenario::ConnectEcho, up.echo.port()),
    ] {
        for new_connection in [false, true] {
            let mut p = plan(scenario, proxy, false);
            p.workload.connect_port = port;
            p.workload.deny_percent = 10;
            p.workload.new_connection = new_connection;
            let r = execute(&p).await.unwrap();
            assert_counts(&r, 4);
        }
    }
}

#[tokio::test]
async fn open_loop_keeps_its_rate_and_reports_service_time() {
    let up = Upstreams::start(UpstreamConfig::default()).await.unwrap();
    let mut p = plan(Scenario::Http1, up.http, true);
    p.rate = Some(200.0);
    p.duration = Duration::from_millis(500);
    p.max_requests = None;
    let r = execute(&p).await.unwrap();
    // 200 req/s for 0.5 s: 100 requests scheduled, every one sent.
    assert_eq!(r.requests, 100, "{}", r.human());
    assert_eq!(r.errors, 0);
    assert_eq!(r.mode, "open");
    assert!(r.service_time.is_some());
}
