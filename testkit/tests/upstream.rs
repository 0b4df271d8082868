//! The stub upstreams over real loopback sockets: every route of `StubUpstream`, h2c on
//! the same port, request recording, `BlackholeUpstream` and `ClosedPort`.

#![allow(
    clippy::disallowed_methods,
    reason = "tests dial the gateways, stubs and servers they started on loopback"
)]

use std::time::{Duration, Instant};

use egress_testkit::client::{self, ClientError};
use egress_testkit::within;
use egress_testkit::{
    http_get, raw_request, wait_until, BlackholeUpstream, ClosedPort, KeepAliveClient, StubUpstream,
};
use http::{Method, StatusCode, Version};

/// Bounds every network wait, so a broken server fails a test instead of hanging it.
#[tokio::test]
async fn echo_describes_the_request() {
    let stub = StubUpstream::start().await;
    let mut client = within(KeepAliveClient::connect(stub.addr())).await.unwrap();
    let response = within(client.request(
        Method::POST,
        "/anything?a=1",
        &[
            ("host", "api.example.com"),
            ("x-multi", "1"),
            ("x-multi", "2"),
        ],
        "hello",
    ))
    .await
    .unwrap();

    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.header("x-stub"), Some("echo"));
    assert_eq!(response.header("content-type"), Some("application/json"));
    let echo: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/anything?a=1");
    assert_eq!(echo["version"], "HTTP/1.1");
    assert_eq!(echo["headers"]["host"][0], "api.example.com");
    assert_eq!(echo["headers"]["x-multi"], serde_json::json!(["1", "2"]));
    assert_eq!(echo["body_len"], 5);

    let received = stub.requests();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].method, Method::POST);
    assert_eq!(received[0].path, "/anything?a=1");
    assert_eq!(received[0].version, Version::HTTP_11);
    assert_eq!(received[0].header("host"), Some("api.example.com"));
    assert_eq!(received[0].body.as_ref(), b"hello");
    assert_eq!(received[0].connection, 1);
    assert_eq!(received[0].peer.ip(), stub.addr().ip());
}

#[tokio::test]
async fn status_route_answers_the_status() {
    let stub = StubUpstream::start().await;
    for code in [200, 204, 302, 404, 418, 503] {
        let response = within(http_get(stub.addr(), "h", &format!("/status/{code}")))
            .await
            .unwrap();
        assert_eq!(response.status, Some(code), "{}", response.text);
        assert_eq!(response.header("x-stub"), Some("status"));
    }
    let bad = within(http_get(stub.addr(), "h", "/status/abc"))
        .await
        .unwrap();
    assert_eq!(bad.status, Some(400));
    assert!(bad.body().contains("abc"), "{}", bad.text);
}

#[tokio::test]
async fn delay_route_waits_then_answers() {
    let stub = StubUpstream::start().await;
    let start = Instant::now();
    let response = within(http_get(stub.addr(), "h", "/delay/0.3"))
        .await
        .unwrap();
    assert_eq!(response.status, Some(200));
    assert_eq!(response.header("x-stub"), Some("delay"));
    assert!(start.elapsed() >= Duration::from_millis(300));
    // Recorded on arrival, before the delay ends.
    let slow = tokio::spawn(http_get(stub.addr(), "h", "/delay/30"));
    assert!(wait_until(Duration::from_secs(5), || stub.request_count() == 2).await);
    slow.abort();
}

#[tokio::test]
async fn reset_route_closes_without_a_response() {
    let stub = StubUpstream::start().await;
    let response = within(http_get(stub.addr(), "h", "/reset")).await.unwrap();
    assert!(response.bytes.is_empty(), "{}", response.text);
    assert!(response.reset, "expected a RST, got a clean close");
    assert!(!response.timed_out);

    let mut client = within(KeepAliveClient::connect(stub.addr())).await.unwrap();
    let error = within(client.get("/reset")).await.unwrap_err();
    assert!(matches!(error, ClientError::Http(_)), "{error}");
    assert_eq!(stub.request_count(), 2);
}

#[tokio::test]
async fn bytes_route_sends_that_many_bytes() {
    let stub = StubUpstream::start().await;
    let mut client = within(KeepAliveClient::connect(stub.addr())).await.unwrap();
    for n in [0usize, 1, 16 * 1024, 1024 * 1024 + 7] {
        let response = within(client.get(&format!("/bytes/{n}"))).await.unwrap();
        assert_eq!(response.status, StatusCode::OK);
        assert_eq!(response.body.len(), n);
        assert_eq!(
            response.header("content-length"),
            Some(n.to_string().as_str())
        );
        assert!(response.body.iter().all(|b| *b == b'x'));
    }
}

#[tokio::test]
async fn stream_route_sends_chunks() {
    let stub = StubUpstream::start().await;
    let response = within(http_get(stub.addr(), "h", "/stream/3"))
        .await
        .unwrap();
    assert_eq!(response.status, Some(200));
    assert_eq!(response.header("transfer-encoding"), Some("chunked"));
    let mut client = within(KeepAliveClient::connect(stub.addr())).await.unwrap();
    let response = within(client.get("/stream/3")).await.unwrap();
    assert_eq!(response.text(), "chunk 0\nchunk 1\nchunk 2\n");
}

#[tokio::test]
async fn h2c_prior_knowledge_on_the_same_port() {
    let stub = StubUpstream::start().await;
    let mut client = within(KeepAliveClient::connect_h2(stub.addr()))
        .await
        .unwrap();
    let response = within(client.request(Method::GET, "/x", &[("host", "api.example.com")], ""))
        .await
        .unwrap();
    assert_eq!(response.status, StatusCode::OK);
    let echo: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(echo["version"], "HTTP/2.0");
    let again = within(client.get("/status/201")).await.unwrap();
    assert_eq!(again.status, StatusCode::CREATED);

    let received = stub.requests();
    assert_eq!(received[0].version, Version::HTTP_2);
    assert_eq!(received[0].authority.as_deref(), Some("api.example.com"));
    assert_eq!(stub.connection_count(), 1);
}

#[tokio::test]
async fn raw_requests_reach_the_stub_and_are_recorded() {
    let stub = StubUpstream::start().await;
    let request = b"GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let response = within(raw_request(stub.addr(), request)).await.unwrap();
    assert_eq!(response.status, Some(200));
    assert_eq!(response.text.matches("HTTP/1.1 200").count(), 2);
    let paths: Vec<String> = stub.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/one", "/two"]);
    assert_eq!(stub.connection_count(), 1);
    stub.clear_requests();
    assert_eq!(stub.request_count(), 0);
}

#[tokio::test]
async fn dropping_the_stub_stops_it() {
    let stub = StubUpstream::start().await;
    let addr = stub.addr();
    drop(stub);
    let refused = wait_until(Duration::from_secs(5), || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err()
    })
    .await;
    assert!(refused);
}

#[tokio::test]
async fn closed_port_refuses() {
    let closed = ClosedPort::new();
    let error = within(client::connect(closed.addr())).await.unwrap_err();
    match error {
        ClientError::Connect { source, .. } => {
            assert_eq!(source.kind(), std::io::ErrorKind::ConnectionRefused)
        }
        other => panic!("expected a refused connect, got {other}"),
    }
}

#[tokio::test]
async fn blackhole_accepts_and_never_answers() {
    let hole = BlackholeUpstream::start().await;
    let response = within(client::raw_request_timeout(
        hole.addr(),
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        Duration::from_millis(300),
    ))
    .await
    .unwrap();
    assert!(response.timed_out);
    assert!(response.bytes.is_empty());
    assert_eq!(hole.connection_count(), 1);
}
