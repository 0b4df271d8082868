//! Connection limits: past `limits.max_connections_per_source` (or `max_connections`)
//! a connection gets 503 with flag UO and its audit line, and is counted; one that
//! closes lets the next in.

use std::time::Duration;

use egress_gateway::testing::TestGateway;
use egress_testkit::{KeepAliveClient, StubUpstream, TestDns};
use http::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::allow_policy;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_over_the_limit_is_refused_counted_and_logged() {
    let upstream = StubUpstream::start().await;
    let dns = TestDns::start().await;
    dns.set("api.example.com", ["127.0.0.1".parse().unwrap()]);
    let gateway = TestGateway::builder(&allow_policy("[api.example.com]"))
        .dns(vec![dns.addr()])
        .configure(|c| c.limits.max_connections_per_source = Some(2))
        .start()
        .await;
    let authority = format!("api.example.com:{}", upstream.port());
    let addr = gateway.addr("http");
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut client = KeepAliveClient::connect(addr).await.unwrap();
        let r = client
            .request(Method::GET, "/", &[("host", authority.as_str())], "")
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        open.push(client);
    }
    let mut third = egress_testkit::client::connect(addr).await.unwrap();
    third
        .write_all(format!("GET / HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut answer = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), third.read_to_string(&mut answer)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("max_connections_per_source"), "{answer}");

    let lines = gateway.wait_audit_lines(3).await;
    let refused = lines
        .iter()
        .find(|l| l.contains("overflow{max_connections_per_source}"));
    assert!(refused.is_some_and(|l| l.contains(" 503 UO ")), "{lines:?}");
    let metrics = egress_testkit::http_get(gateway.admin_addr(), "admin", "/metrics")
        .await
        .unwrap();
    assert!(
        metrics.body().contains(
            "egress_connections_refused_total{listener=\"http\",reason=\"max_connections_per_source\"} 1"
        ),
        "{}",
        metrics.body()
    );
    assert!(metrics.body().contains(
        "egress_connections_refused_total{listener=\"http\",reason=\"max_connections\"} 0"
    ));

    // One closes: the next connection is let in.
    drop(open.pop());
    let mut admitted = false;
    for _ in 0..50 {
        let mut client = KeepAliveClient::connect(addr).await.unwrap();
        if let Ok(r) = client
            .request(Method::GET, "/", &[("host", authority.as_str())], "")
            .await
        {
            if r.status == 200 {
                admitted = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(admitted, "a closed connection made room");
}
