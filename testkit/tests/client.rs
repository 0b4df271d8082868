//! The test clients against the stub upstreams: keep-alive reuse, timeouts, slow
//! senders, raw malformed bytes.

use std::time::{Duration, Instant};

use egress_testkit::client::ClientError;
use egress_testkit::{
    raw_request, send_slowly, wait_until, within, BlackholeUpstream, KeepAliveClient, StubUpstream,
};
use http::{Method, StatusCode};

#[tokio::test]
async fn keep_alive_client_reuses_one_connection() {
    let stub = StubUpstream::start().await;
    let mut client = within(KeepAliveClient::connect(stub.addr())).await.unwrap();
    for path in ["/a", "/status/404", "/bytes/10", "/stream/2", "/b"] {
        let response = within(client.get(path)).await.unwrap();
        assert_ne!(response.status, StatusCode::BAD_REQUEST, "{path}");
    }
    let response = within(client.request(Method::PUT, "/c", &[], vec![1u8; 1000]))
        .await
        .unwrap();
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(stub.request_count(), 6);
    assert_eq!(stub.connection_count(), 1);
    assert!(stub.requests().iter().all(|r| r.connection == 1));
    assert!(!client.is_closed());
}

#[tokio::test]
async fn default_host_is_the_dialled_address() {
    let stub = StubUpstream::start().await;
    let mut client = within(KeepAliveClient::connect(stub.addr())).await.unwrap();
    within(client.get("/x")).await.unwrap();
    let host = stub.addr().to_string();
    assert_eq!(stub.requests()[0].header("host"), Some(host.as_str()));
}

#[tokio::test]
async fn absolute_form_targets_are_sent_as_given() {
    let stub = StubUpstream::start().await;
    let mut client = within(KeepAliveClient::connect(stub.addr())).await.unwrap();
    let response = within(client.request(
        Method::GET,
        "http://api.example.com/abs?q=1",
        &[("host", "api.example.com")],
        "",
    ))
    .await
    .unwrap();
    assert_eq!(response.status, StatusCode::OK);
    let received = &stub.requests()[0];
    assert_eq!(received.authority.as_deref(), Some("api.example.com"));
    assert_eq!(received.path, "/abs?q=1");
}

#[tokio::test]
async fn keep_alive_client_times_out_on_a_blackhole() {
    let hole = BlackholeUpstream::start().await;
    let client = within(KeepAliveClient::connect(hole.addr())).await.unwrap();
    let mut client = client.with_timeout(Duration::from_millis(200));
    let error = within(client.get("/")).await.unwrap_err();
    assert!(matches!(error, ClientError::Timeout { .. }), "{error}");
    assert!(
        error.to_string().contains("timed out after 200ms"),
        "{error}"
    );
}

#[tokio::test]
async fn keep_alive_client_sees_the_server_go() {
    let stub = StubUpstream::start().await;
    let mut client = within(KeepAliveClient::connect(stub.addr())).await.unwrap();
    within(client.get("/")).await.unwrap();
    drop(stub);
    assert!(wait_until(Duration::from_secs(5), || client.is_closed()).await);
    assert!(within(client.get("/")).await.is_err());
}

#[tokio::test]
async fn malformed_bytes_get_the_servers_answer() {
    let stub = StubUpstream::start().await;
    let response = within(raw_request(stub.addr(), b"GARBAGE\r\n\r\n"))
        .await
        .unwrap();
    assert_eq!(response.status, Some(400), "{}", response.text);
    assert!(!response.timed_out);
    assert_eq!(stub.request_count(), 0, "nothing parsed reached a handler");
}

#[tokio::test]
async fn send_slowly_dribbles_the_request() {
    let stub = StubUpstream::start().await;
    let request = b"GET /slow HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let start = Instant::now();
    let response = within(send_slowly(stub.addr(), request, Duration::from_millis(5)))
        .await
        .unwrap();
    assert_eq!(response.status, Some(200), "{}", response.text);
    assert_eq!(response.sent, request.len());
    assert!(start.elapsed() >= Duration::from_millis(5 * request.len() as u64));
}
