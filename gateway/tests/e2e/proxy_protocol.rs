//! Listeners behind a load balancer (`proxy_protocol: true`): the PROXY header's source
//! is what rules match and the audit line prints; LOCAL and UNKNOWN keep the peer; a
//! connection without a valid header is refused with an audit line.

use std::time::Duration;

use egress_gateway::testing::TestGateway;
use egress_testkit::client::raw_request_timeout;
use egress_testkit::raw_request;

use crate::common::{IstioLine, Scenario};

const POLICY: &str = r#"
defaults: {mode: deny, allow_private: true}
listeners:
  - {name: http, port: 8080, protocol: http, proxy_protocol: true}
  - {name: proxy, port: 3128, protocol: connect, proxy_protocol: true}
rules:
  - name: behind-lb
    hosts: [api.example.com]
    sources: [192.0.2.0/24, "2001:db8::/32"]
"#;

fn get(s: &Scenario) -> String {
    format!(
        "GET /get HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        s.authority("api.example.com")
    )
}

fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
    let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    out.push(0x20 | command);
    out.push(family);
    out.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
    out.extend_from_slice(body);
    out
}

#[tokio::test]
async fn v1_sources_are_matched_and_printed_from_the_header() {
    let s = Scenario::start(POLICY).await;
    let request = format!(
        "PROXY TCP4 192.0.2.10 203.0.113.1 56324 8080\r\n{}",
        get(&s)
    );
    let response = raw_request(s.http(), request.as_bytes()).await.unwrap();
    assert_eq!(response.status, Some(200), "{}", response.text);
    let line = s.audit(1).await;
    assert_eq!(line.downstream_remote, "192.0.2.10:56324");
    assert_eq!(
        (line.code.as_str(), line.route.as_str()),
        ("200", "behind-lb")
    );

    let request = format!(
        "PROXY TCP4 198.51.100.7 203.0.113.1 4000 8080\r\n{}",
        get(&s)
    );
    let response = raw_request(s.http(), request.as_bytes()).await.unwrap();
    assert_eq!(response.status, Some(403), "{}", response.text);
    let line = s.audit(2).await;
    assert_eq!(line.downstream_remote, "198.51.100.7:4000");
    assert_eq!(line.details, "rbac_access_denied_matched_policy[none]");
    assert_eq!(s.upstream.request_count(), 1);
}

#[tokio::test]
async fn v2_inet_and_inet6_headers_with_tlvs() {
    let s = Scenario::start(POLICY).await;
    let mut body = vec![192, 0, 2, 20, 203, 0, 113, 1];
    body.extend_from_slice(&5555u16.to_be_bytes());
    body.extend_from_slice(&8080u16.to_be_bytes());
    body.extend_from_slice(&[0x04, 0x00, 0x02, 0xab, 0xcd]); // a TLV, skipped
    let mut request = v2(1, 0x11, &body);
    request.extend_from_slice(get(&s).as_bytes());
    let response = raw_request(s.http(), &request).await.unwrap();
    assert_eq!(response.status, Some(200), "{}", response.text);
    assert_eq!(s.audit(1).await.downstream_remote, "192.0.2.20:5555");

    let mut body = "2001:db8::7"
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .octets()
        .to_vec();
    body.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    body.extend_from_slice(&1234u16.to_be_bytes());
    body.extend_from_slice(&8080u16.to_be_bytes());
    let mut request = v2(1, 0x21, &body);
    request.extend_from_slice(get(&s).as_bytes());
    let response = raw_request(s.http(), &request).await.unwrap();
    assert_eq!(response.status, Some(200), "{}", response.text);
    // The line's IPv6 address is bracketed, which the shared field splitter reads as a
    // time field: look for the fields as text.
    let lines = s.gateway.wait_audit_lines(2).await;
    assert!(
        lines[1].ends_with(" [2001:db8::7]:1234 - behind-lb") && lines[1].contains("\" 200 "),
        "{}",
        lines[1]
    );
}

#[tokio::test]
async fn local_and_unknown_headers_keep_the_peer_address() {
    let s = Scenario::start(POLICY).await;
    let mut request = v2(0, 0x00, &[]);
    request.extend_from_slice(get(&s).as_bytes());
    let response = raw_request(s.http(), &request).await.unwrap();
    assert_eq!(
        response.status,
        Some(403),
        "the peer 127.0.0.1 is not a listed source"
    );
    let request = format!("PROXY UNKNOWN\r\n{}", get(&s));
    let response = raw_request(s.http(), request.as_bytes()).await.unwrap();
    assert_eq!(response.status, Some(403));
    for n in [1, 2] {
        let line = s.audit(n).await;
        assert!(line.downstream_remote.starts_with("127.0.0.1:"), "{line:?}");
        assert_eq!(line.code, "403");
    }
}

#[tokio::test]
async fn a_missing_or_garbled_header_refuses_the_connection_with_an_audit_line() {
    let s = Scenario::start(POLICY).await;
    let cases = [
        (get(&s), "missing"),
        (
            format!("PROXY TCP4 192.0.2.999 203.0.113.1 1 2\r\n{}", get(&s)),
            "malformed",
        ),
        (format!("PROXY TCP4 {}\r\n", "1".repeat(200)), "too_long"),
    ];
    for (n, (request, why)) in cases.iter().enumerate() {
        let response = raw_request(s.http(), request.as_bytes()).await.unwrap();
        assert!(
            response.text.is_empty(),
            "{why}: nothing is answered: {}",
            response.text
        );
        assert!(!response.timed_out, "{why}: the gateway closes at once");
        let line = s.audit(n + 1).await;
        assert_eq!(
            (line.method.as_str(), line.code.as_str()),
            ("-", "0"),
            "{why}"
        );
        assert_eq!(line.flags, "DPE");
        assert_eq!(line.details, "proxy_protocol_invalid");
        assert_eq!(line.termination, *why);
        assert!(line.downstream_remote.starts_with("127.0.0.1:"), "{line:?}");
        assert_eq!(line.downstream_local, s.http().to_string());
    }
    assert_eq!(s.upstream.request_count(), 0);
}

#[tokio::test]
async fn a_header_that_does_not_arrive_in_time_is_cut() {
    let gateway = TestGateway::builder(POLICY)
        .configure(|c| c.limits.header_timeout = Duration::from_millis(300))
        .start()
        .await;
    let addr = gateway.addr("http");
    for (n, partial) in [&b""[..], b"PROXY TCP4 192.0.2"].iter().enumerate() {
        let response = raw_request_timeout(addr, partial, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(!response.timed_out && response.text.is_empty());
        let lines = gateway.wait_audit_lines(n + 1).await;
        let line = IstioLine::parse(&lines[n]);
        assert_eq!(line.details, "proxy_protocol_timeout");
        assert_eq!(line.termination, "timeout");
    }
}

#[tokio::test]
async fn connect_listeners_take_the_header_too() {
    let s = Scenario::start(POLICY).await;
    let target = s.authority("api.example.com");
    let request = format!(
        "PROXY TCP4 192.0.2.30 203.0.113.1 7000 3128\r\nCONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\nGET /tunnelled HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n"
    );
    let response = raw_request(s.gateway.addr("proxy"), request.as_bytes())
        .await
        .unwrap();
    assert_eq!(response.status, Some(200), "{}", response.text);
    assert!(response.text.contains("/tunnelled"), "{}", response.text);
    let line = s.audit(1).await;
    assert_eq!(
        (line.method.as_str(), line.code.as_str()),
        ("CONNECT", "200")
    );
    assert_eq!(line.downstream_remote, "192.0.2.30:7000");
    assert_eq!(line.authority, target);
}
