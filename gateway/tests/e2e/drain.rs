//! Draining fails nothing that was accepted: a connection accepted before the drain
//! whose request comes after it is answered (and closed), a keep-alive connection's
//! next request is answered with `Connection: close`.

use std::time::Duration;

use egress_testkit::KeepAliveClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{allow_policy, Scenario};

#[tokio::test]
async fn a_request_that_arrives_after_the_drain_began_is_answered_then_closed() {
    let Scenario {
        gateway,
        upstream,
        dns: _dns,
    } = Scenario::start(&allow_policy("[api.example.com]")).await;
    let authority = format!("api.example.com:{}", upstream.port());
    let addr = gateway.addr("http");

    // Accepted before the drain, nothing sent yet.
    let mut fresh = egress_testkit::client::connect(addr).await.unwrap();
    // A keep-alive connection that already served a request.
    let mut kept = KeepAliveClient::connect(addr).await.unwrap();
    let first = kept
        .request(http::Method::GET, "/", &[("host", authority.as_str())], "")
        .await
        .unwrap();
    assert_eq!(first.status, 200);
    tokio::time::sleep(Duration::from_millis(50)).await;

    let draining = tokio::spawn(gateway.shutdown());
    tokio::time::sleep(Duration::from_millis(100)).await;

    fresh
        .write_all(format!("GET / HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), fresh.read_to_string(&mut answer))
        .await
        .expect("answered and closed")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );

    let next = kept
        .request(http::Method::GET, "/", &[("host", authority.as_str())], "")
        .await
        .unwrap();
    assert_eq!(next.status, 200);
    assert_eq!(next.header("connection"), Some("close"));

    assert!(draining.await.unwrap(), "drained in time");
    assert_eq!(upstream.request_count(), 3);
}
