//! HTTP/2: h2c with prior knowledge on the http listener (one audit line per stream),
//! HTTP/2 to the upstream where the rule asks, and gRPC's shape (trailers both ways,
//! streaming bodies) passing through intact.

use std::time::{Duration, Instant};

use egress_gateway::testing::TestGateway;
use egress_testkit::{KeepAliveClient, StubUpstream, TestDns};
use http::{HeaderMap, HeaderValue, Request, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::clients::{self, body, Client};
use crate::common::{allow_policy, IstioLine, Scenario, LOOPBACK};

fn h2_upstream_policy() -> String {
    r#"
defaults: {mode: deny, allow_private: true}
listeners: [{name: http, port: 8080, protocol: http}]
rules:
  - {name: grpc, hosts: [api.example.com], upstream_protocol: h2}
"#
    .to_owned()
}

#[tokio::test]
async fn h2c_prior_knowledge_gets_one_audit_line_per_stream() {
    let s = Scenario::start(&allow_policy("[api.example.com]")).await;
    let authority = s.authority("api.example.com");
    let mut client = KeepAliveClient::connect_h2(s.http()).await.unwrap();
    for path in ["/first", "/second?x=1"] {
        let response = client
            .request(http::Method::GET, path, &[("host", &authority)], "")
            .await
            .unwrap();
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(response.header("x-stub"), Some("echo"));
    }
    let lines = [s.audit(1).await, s.audit(2).await];
    for (line, path) in lines.iter().zip(["/first", "/second?x=1"]) {
        assert_eq!(line.protocol, "HTTP/2");
        assert_eq!(line.path, path);
        assert_eq!(line.code, "200");
        assert_eq!(line.details, "via_upstream");
        assert_eq!(line.authority, authority);
        assert_eq!(line.route, "allowed");
    }
    // Without `upstream_protocol: h2` the upstream is spoken to in HTTP/1.1, with the
    // :authority as its Host.
    let received = s.upstream.requests();
    assert_eq!(received.len(), 2);
    assert_eq!(received[0].version, Version::HTTP_11);
    assert_eq!(received[0].header("host"), Some(authority.as_str()));
}

#[tokio::test]
async fn h2c_requests_are_decided_like_http1_ones() {
    let s = Scenario::start(&allow_policy("[api.example.com]")).await;
    let mut client = KeepAliveClient::connect_h2(s.http()).await.unwrap();
    let response = client
        .request(http::Method::GET, "/", &[("host", "other.example.com")], "")
        .await
        .unwrap();
    assert_eq!(response.status, 403);
    let line = s.audit(1).await;
    assert_eq!(line.protocol, "HTTP/2");
    assert_eq!(line.details, "rbac_access_denied_matched_policy[none]");
    assert_eq!(s.upstream.request_count(), 0);
}

#[tokio::test]
async fn grpc_trailers_pass_both_ways_over_h2_end_to_end() {
    let s = Scenario::start(&h2_upstream_policy()).await;
    let authority = s.authority("api.example.com");
    let mut client = Client::plain(s.http(), true).await;
    let mut request_trailers = HeaderMap::new();
    request_trailers.insert("x-checksum", HeaderValue::from_static("abc"));
    let request = Request::post(format!("http://{authority}/trailers"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body(b"\0\0\0\0\x05hello", Some(request_trailers)))
        .unwrap();
    let response = client.send(request).await.unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.headers["content-type"], "application/grpc");
    assert_eq!(response.text(), "trailers\n");
    let trailers = response
        .trailers
        .expect("response trailers reach the client");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "ok");
    assert_eq!(
        trailers["x-echo-x-checksum"], "abc",
        "request trailers reach the upstream"
    );

    let received = &s.upstream.requests()[0];
    assert_eq!(received.version, Version::HTTP_2);
    assert_eq!(received.header("te"), Some("trailers"));
    assert_eq!(received.authority.as_deref(), Some(authority.as_str()));
    let line = s.audit(1).await;
    assert_eq!(line.protocol, "HTTP/2");
    assert_eq!(line.code, "200");
    assert_eq!(line.bytes_received, "10");
    assert_eq!(line.bytes_sent, "9");
}

#[tokio::test]
async fn http1_client_reaches_an_h2_upstream_and_gets_its_trailers() {
    let s = Scenario::start(&h2_upstream_policy()).await;
    let authority = s.authority("api.example.com");
    let mut client = Client::plain(s.http(), false).await;
    let request = Request::get("/trailers")
        .header("host", &authority)
        .header("te", "trailers")
        .body(body(b"", None))
        .unwrap();
    let response = client.send(request).await.unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(
        response.trailers.expect("chunked trailers")["grpc-status"],
        "0"
    );
    // A second request shares the one HTTP/2 upstream connection.
    let again = client.get("/again", &authority).await.unwrap();
    assert_eq!(again.status, 200);
    let received = s.upstream.requests();
    assert_eq!(received[0].version, Version::HTTP_2);
    assert_eq!(received[1].connection, received[0].connection);
    let line = s.audit(1).await;
    assert_eq!(line.protocol, "HTTP/1.1");
    assert_eq!(line.upstream_host, s.upstream.addr().to_string());
}

#[tokio::test]
async fn streaming_bodies_arrive_whole_over_h2() {
    let s = Scenario::start(&h2_upstream_policy()).await;
    let authority = s.authority("api.example.com");
    let mut client = Client::plain(s.http(), true).await;
    let response = client
        .get(&format!("http://{authority}/stream/200"), &authority)
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    let text = response.text();
    assert_eq!(text.lines().count(), 200);
    assert!(text.ends_with("chunk 199\n"));
    let line = s.audit(1).await;
    assert_eq!(line.bytes_sent, text.len().to_string());
}

#[tokio::test]
async fn http1_and_h2c_share_the_listener_and_http1_limits_still_hold() {
    let s = Scenario::start(&allow_policy("[api.example.com]")).await;
    let response = s.get(&s.authority("api.example.com"), "/").await;
    assert_eq!(response.status, Some(200));
    // A request that starts like the preface ("P") is HTTP/1 from its second byte.
    let head = format!(
        "POST /anything HTTP/1.1\r\nHost: {}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
        s.authority("api.example.com")
    );
    let raw = egress_testkit::raw_request(s.http(), head.as_bytes())
        .await
        .unwrap();
    assert_eq!(raw.status, Some(200), "{}", raw.text);
    assert_eq!(s.audit(2).await.protocol, "HTTP/1.1");
}

/// A gateway allowing `api.example.com` (a stub upstream on loopback) with `limits`.
async fn with_limits(
    limits: impl FnOnce(&mut egress_gateway::config::LimitsConfig),
) -> (TestGateway, StubUpstream, TestDns) {
    let upstream = StubUpstream::start().await;
    let dns = TestDns::start().await;
    dns.set("api.example.com", [LOOPBACK]);
    let gateway = TestGateway::builder(&allow_policy("[api.example.com]"))
        .dns(vec![dns.addr()])
        .configure(|c| limits(&mut c.limits))
        .start()
        .await;
    (gateway, upstream, dns)
}

async fn short_header_timeout() -> (TestGateway, StubUpstream, TestDns) {
    with_limits(|l| l.header_timeout = Duration::from_millis(300)).await
}

#[tokio::test]
async fn an_h2c_connection_resting_past_the_header_timeout_stays_open() {
    let (gateway, upstream, _dns) = short_header_timeout().await;
    let authority = format!("api.example.com:{}", upstream.port());
    let mut client = KeepAliveClient::connect_h2(gateway.addr("http"))
        .await
        .unwrap();
    let headers = [("host", authority.as_str())];
    let first = client
        .request(http::Method::GET, "/", &headers, "")
        .await
        .unwrap();
    assert_eq!(first.status, 200);
    // Time passing is what is tested: HTTP/2 frames between requests are no slow head.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(!client.is_closed(), "the resting connection was closed");
    let second = client
        .request(http::Method::GET, "/", &headers, "")
        .await
        .unwrap();
    assert_eq!(second.status, 200);
    assert_eq!(upstream.request_count(), 2);
}

/// A keep-alive connection that served a request longer than the idle timeout, and
/// then rests past it, is closed, in either HTTP version: the idle time counts from the
/// end of the request, and the end of a request wakes nothing.
async fn idle_close_after_a_request(h2: bool) {
    let (gateway, upstream, _dns) = with_limits(|l| {
        l.header_timeout = Duration::from_millis(200);
        l.idle_timeout = Duration::from_millis(700);
    })
    .await;
    let authority = format!("api.example.com:{}", upstream.port());
    let addr = gateway.addr("http");
    let mut client = if h2 {
        KeepAliveClient::connect_h2(addr).await.unwrap()
    } else {
        KeepAliveClient::connect(addr).await.unwrap()
    };
    let headers = [("host", authority.as_str())];
    let first = client
        .request(http::Method::GET, "/delay/1", &headers, "")
        .await
        .unwrap();
    assert_eq!(first.status, 200);
    let rested = Instant::now();
    let closed =
        egress_testkit::wait::wait_until(Duration::from_secs(5), || client.is_closed()).await;
    assert!(closed, "the idle connection was never closed");
    let after = rested.elapsed();
    assert!(
        after >= Duration::from_millis(600),
        "closed after {after:?}, before the idle timeout"
    );
}

#[tokio::test]
async fn an_http1_connection_is_closed_after_the_idle_timeout_that_follows_a_request() {
    idle_close_after_a_request(false).await;
}

#[tokio::test]
async fn an_h2c_connection_is_closed_after_the_idle_timeout_that_follows_its_last_stream() {
    idle_close_after_a_request(true).await;
}

#[tokio::test]
async fn a_preface_cut_short_is_cut_at_the_header_timeout() {
    let (gateway, _upstream, _dns) = short_header_timeout().await;
    let mut stream = clients::plain(gateway.addr("http")).await;
    let started = Instant::now();
    stream.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the gateway never closed the connection");
    assert!(started.elapsed() >= Duration::from_millis(300));
    let lines = gateway.wait_audit_lines(1).await;
    let line = IstioLine::parse(&lines[0]);
    assert_eq!(line.details, "request_header_timeout");
    assert_eq!(line.flags, "DPE");
}

#[tokio::test]
async fn draining_finishes_h2_streams_in_flight_and_closes_resting_connections() {
    let Scenario {
        gateway,
        upstream,
        dns: _dns,
    } = Scenario::start(&allow_policy("[api.example.com]")).await;
    let authority = format!("api.example.com:{}", upstream.port());
    let headers = [("host", authority.as_str())];
    let mut resting = KeepAliveClient::connect_h2(gateway.addr("http"))
        .await
        .unwrap();
    let ok = resting
        .request(http::Method::GET, "/", &headers, "")
        .await
        .unwrap();
    assert_eq!(ok.status, 200);
    let mut busy = KeepAliveClient::connect_h2(gateway.addr("http"))
        .await
        .unwrap();
    let authority_busy = authority.clone();
    let in_flight = tokio::spawn(async move {
        busy.request(
            http::Method::GET,
            "/delay/0.5",
            &[("host", &authority_busy)],
            "",
        )
        .await
    });
    let arrived =
        egress_testkit::wait_until(Duration::from_secs(5), || upstream.request_count() == 2).await;
    assert!(arrived, "the slow request never reached the upstream");
    assert!(
        gateway.shutdown().await,
        "draining waited for a resting connection"
    );
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status, 200, "the stream in flight was finished");
    let closed = egress_testkit::wait_until(Duration::from_secs(5), || resting.is_closed()).await;
    assert!(closed, "the resting HTTP/2 connection was not closed");
}
