//! Bad input: malformed, oversized, ambiguous and smuggling-shaped requests get a clear
//! status and an audit line, never reach the upstream, and never hang a connection.

use std::time::{Duration, Instant};

use egress_gateway::testing::TestGateway;
use egress_testkit::{raw_request, send_slowly, StubUpstream, TestDns};

use crate::common::{allow_policy, IstioLine, Scenario, LOOPBACK};

async fn refused(s: &Scenario, request: &str, status: u16) -> IstioLine {
    let before = s.gateway.audit_lines().len();
    let response = raw_request(s.http(), request.as_bytes()).await.unwrap();
    assert_eq!(
        response.status,
        Some(status),
        "{request:?} → {}",
        response.text
    );
    assert!(
        !response.timed_out,
        "{request:?}: the connection must close after a refusal"
    );
    s.audit(before + 1).await
}

#[tokio::test]
async fn requests_without_a_usable_destination_are_400() {
    let s = Scenario::start(&allow_policy("[api.example.com]")).await;
    let a = s.authority("api.example.com");
    let line = refused(&s, "GET / HTTP/1.1\r\nConnection: close\r\n\r\n", 400).await;
    assert_eq!(line.details, "missing_host_header");
    assert_eq!(line.flags, "DPE");
    let line = refused(
        &s,
        &format!("GET / HTTP/1.1\r\nHost: {a}\r\nHost: {a}\r\n\r\n"),
        400,
    )
    .await;
    assert_eq!(line.details, "duplicate_host_header");
    let line = refused(&s, "GET / HTTP/1.1\r\nHost: bad host\r\n\r\n", 400).await;
    assert_eq!(line.details, "invalid_host");
    let line = refused(
        &s,
        "GET / HTTP/1.1\r\nHost: api.example.com:99999\r\n\r\n",
        400,
    )
    .await;
    assert_eq!(line.details, "invalid_host");
    assert_eq!(s.upstream.request_count(), 0);
}

#[tokio::test]
async fn malformed_request_lines_are_400_with_an_audit_line() {
    let s = Scenario::start(&allow_policy("[api.example.com]")).await;
    let a = s.authority("api.example.com");
    for request in [
        "GARBAGE\r\n\r\n".to_owned(),
        format!("GET /a b HTTP/1.1\r\nHost: {a}\r\n\r\n"),
        format!("GET /\tx HTTP/1.1\r\nHost: {a}\r\n\r\n"),
        format!("GET / HTTP/9.9\r\nHost: {a}\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nHost: {a}\r\nBad Header: x\r\n\r\n"),
    ] {
        let line = refused(&s, &request, 400).await;
        assert_eq!(line.code, "400", "{request:?}");
        assert_eq!(line.details, "http1.codec_error", "{request:?}");
        assert_eq!(line.flags, "DPE");
    }
    assert_eq!(s.upstream.request_count(), 0);
}

#[tokio::test]
async fn oversized_headers_are_431() {
    let s = Scenario::start(&allow_policy("[api.example.com]")).await;
    let big = "x".repeat(70 * 1024);
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nX-Big: {big}\r\n\r\n",
        s.authority("api.example.com")
    );
    let line = refused(&s, &request, 431).await;
    assert_eq!(line.details, "http1.headers_too_large");
    // Under the limit is fine.
    let fine = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        s.authority("api.example.com"),
        "x".repeat(40 * 1024)
    );
    assert_eq!(
        raw_request(s.http(), fine.as_bytes()).await.unwrap().status,
        Some(200)
    );
    assert_eq!(s.upstream.request_count(), 1);
}

#[tokio::test]
async fn smuggling_shapes_never_reach_the_upstream() {
    let s = Scenario::start(&allow_policy("[api.example.com]")).await;
    let a = s.authority("api.example.com");
    let shapes = [
        format!("POST / HTTP/1.1\r\nHost: {a}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        format!("POST / HTTP/1.1\r\nHost: {a}\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"),
        format!("POST / HTTP/1.1\r\nHost: {a}\r\nTransfer-Encoding: chunked, xchunked\r\n\r\n0\r\n\r\n"),
        format!("POST / HTTP/1.1\r\nHost: {a}\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"),
        format!("POST / HTTP/1.1\r\nHost: {a}\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n"),
        format!("POST / HTTP/1.1\r\nHost: {a}\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
        format!("POST / HTTP/1.1\r\nHost: {a}\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n"),
        format!("POST / HTTP/1.1\r\nHost: {a}\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n"),
        format!("POST / HTTP/1.1\r\nHost: {a}\r\nTransfer-Encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n"),
        format!("POST / HTTP/1.1\r\nHost: {a}\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n"),
    ];
    for request in &shapes {
        let before = s.gateway.audit_lines().len();
        let response = raw_request(s.http(), request.as_bytes()).await.unwrap();
        assert_eq!(
            response.status,
            Some(400),
            "{request:?} → {}",
            response.text
        );
        let lines = s.gateway.wait_audit_lines(before + 1).await;
        assert!(lines.len() > before, "{request:?} left no audit line");
        let line = IstioLine::parse(&lines[before]);
        assert_eq!(line.code, "400", "{request:?}");
    }
    assert!(
        s.upstream
            .requests()
            .iter()
            .all(|r| r.body.is_empty() || r.body.as_ref() != b"hello"),
        "no smuggled body reached the upstream: {:?}",
        s.upstream.requests()
    );
}

#[tokio::test]
async fn slow_request_heads_are_cut_after_the_header_timeout() {
    let upstream = StubUpstream::start().await;
    let dns = TestDns::start().await;
    dns.set("api.example.com", [LOOPBACK]);
    let gateway = TestGateway::builder(&allow_policy("[api.example.com]"))
        .dns(vec![dns.addr()])
        .configure(|c| c.limits.header_timeout = Duration::from_secs(1))
        .start()
        .await;
    let request = format!(
        "GET / HTTP/1.1\r\nHost: api.example.com:{}\r\n\r\n",
        upstream.port()
    );
    let started = Instant::now();
    let response = send_slowly(
        gateway.addr("http"),
        request.as_bytes(),
        Duration::from_millis(200),
    )
    .await
    .unwrap();
    let elapsed = started.elapsed();
    assert!(
        response.status.is_none(),
        "no response to a head never finished: {}",
        response.text
    );
    assert!(!response.timed_out, "the gateway closed the connection");
    assert!(elapsed < Duration::from_secs(3), "cut after {elapsed:?}");
    let lines = gateway.wait_audit_lines(1).await;
    let line = IstioLine::parse(&lines[0]);
    assert_eq!(line.details, "request_header_timeout");
    assert_eq!(upstream.request_count(), 0);

    // A keep-alive connection resting between requests is not a slow client.
    let mut client = egress_testkit::KeepAliveClient::connect(gateway.addr("http"))
        .await
        .unwrap();
    let host = format!("api.example.com:{}", upstream.port());
    let first = client
        .request(http::Method::GET, "/", &[("host", host.as_str())], "")
        .await
        .unwrap();
    assert_eq!(first.status, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = client
        .request(http::Method::GET, "/", &[("host", host.as_str())], "")
        .await
        .unwrap();
    assert_eq!(second.status, 200);
}

#[tokio::test]
async fn hostile_garbage_never_takes_the_gateway_down() {
    let s = Scenario::start(&allow_policy("[api.example.com]")).await;
    let inputs: Vec<Vec<u8>> = vec![
        vec![0; 1000],
        (0..=255u8).collect(),
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(),
        b"GET / HTTP/1.1\r\n".repeat(200),
        b"\r\n\r\n\r\n".to_vec(),
        "GET /\u{0} HTTP/1.1\r\nHost: api.example.com\r\n\r\n"
            .as_bytes()
            .to_vec(),
    ];
    for input in &inputs {
        let _ =
            egress_testkit::client::raw_request_timeout(s.http(), input, Duration::from_secs(2))
                .await;
    }
    let after = s.get(&s.authority("api.example.com"), "/").await;
    assert_eq!(
        after.status,
        Some(200),
        "the gateway still serves: {}",
        after.text
    );
}

/// A request body that breaks on its way (a malformed chunk after a good one) is the
/// client's fault: 400 with `invalid_request_body`, not a 502 blamed on the upstream.
#[tokio::test]
async fn a_request_body_that_breaks_midway_is_the_clients_400() {
    let s = Scenario::start(&allow_policy("[api.example.com]")).await;
    let a = s.authority("api.example.com");
    let line = refused(
        &s,
        &format!(
            "POST /upload HTTP/1.1\r\nHost: {a}\r\nTransfer-Encoding: chunked\r\n\
             Connection: close\r\n\r\n4\r\nbody\r\nzz\r\n\r\n"
        ),
        400,
    )
    .await;
    assert_eq!(line.details, "invalid_request_body");
    assert_eq!(line.route, "allowed");
}
