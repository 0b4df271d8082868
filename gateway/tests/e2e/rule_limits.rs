//! A rule's `rate_limit` and `max_concurrent`: past them a request gets 429 `RL` with
//! `Retry-After` (or 503 `UO`), a tunnel is closed with its line, and each refusal is
//! counted by rule and limit.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};

use crate::common::{Exposition, IstioLine, Scenario};

fn policy(limits: &str) -> String {
    format!(
        r#"
defaults: {{mode: deny, allow_private: true}}
listeners:
  - {{name: http, port: 8080, protocol: http}}
  - {{name: db, port: 13306, protocol: tcp, forward_to: "api.example.com:{{PORT}}"}}
rules:
  - {{name: api, hosts: [api.example.com]{limits}}}
"#
    )
}

/// A connection from `local` (another loopback address: another source).
async fn connect_from(local: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((local, 0)))?;
    socket.connect(to).await
}

#[tokio::test]
async fn past_the_rate_requests_get_429_with_retry_after_and_a_line() {
    let s = Scenario::start(&policy(", rate_limit: {requests_per_second: 1, burst: 3}")).await;
    let authority = s.authority("api.example.com");
    let mut codes = Vec::new();
    for _ in 0..5 {
        let r = s.get(&authority, "/").await;
        if r.status == Some(429) {
            assert_eq!(r.header("retry-after"), Some("1"), "{}", r.text);
            assert!(r.text.contains("at most 1 requests a second"), "{}", r.text);
        }
        codes.push(r.status.unwrap());
    }
    assert_eq!(codes, [200, 200, 200, 429, 429]);
    let line = s.audit(4).await;
    assert_eq!((line.code.as_str(), line.flags.as_str()), ("429", "RL"));
    assert_eq!(
        (line.details.as_str(), line.route.as_str()),
        ("rate_limited", "api")
    );
    assert_eq!(s.upstream.request_count(), 3);
    let m = Exposition::wait(&s.gateway, |m| {
        m.value_or_zero("egress_rule_limited_total", &[]) >= 2.0
    })
    .await;
    assert_eq!(
        m.value(
            "egress_rule_limited_total",
            &["rule=\"api\"", "limit=\"rate_limit\""]
        ),
        2.0
    );
    // A token a second: the next one passes.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(s.get(&authority, "/").await.status, Some(200));
}

#[tokio::test]
async fn a_bucket_per_source_leaves_other_clients_alone() {
    let limit = ", rate_limit: {requests_per_second: 1, burst: 1, per: source}";
    let s = Scenario::start(&policy(limit)).await;
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        s.authority("api.example.com")
    );
    let mut statuses = Vec::new();
    for local in [[127, 0, 0, 1], [127, 0, 0, 1], [127, 0, 0, 2]] {
        let mut tcp = connect_from(local, s.http()).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut tcp, request.as_bytes())
            .await
            .unwrap();
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).await.unwrap();
        statuses.push(answer.split(' ').nth(1).unwrap_or("").to_owned());
    }
    assert_eq!(statuses, ["200", "429", "200"]);
}

#[tokio::test]
async fn tunnels_past_a_limit_are_closed_with_their_line() {
    let s = Scenario::start(&policy(
        ", rate_limit: {requests_per_second: 1, burst: 2}, max_concurrent: 1",
    ))
    .await;
    let db = s.gateway.addr("db");
    // The first tunnel stays open: the second is over max_concurrent.
    let mut first = egress_testkit::KeepAliveClient::connect(db).await.unwrap();
    assert_eq!(first.get("/").await.unwrap().status, 200);
    let mut second = egress_testkit::client::connect(db).await.unwrap();
    let mut sink = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), second.read_to_end(&mut sink)).await;
    assert!(matches!(read, Ok(Ok(0))), "closed without a byte");
    drop(first);
    // The bucket had two tokens, both spent: the third is over the rate.
    let mut third = egress_testkit::client::connect(db).await.unwrap();
    let read = tokio::time::timeout(Duration::from_secs(5), third.read_to_end(&mut sink)).await;
    assert!(matches!(read, Ok(Ok(0))), "closed without a byte");
    let lines = s.gateway.wait_audit_lines(3).await;
    let lines: Vec<IstioLine> = lines.iter().map(|l| IstioLine::parse(l)).collect();
    let over = lines
        .iter()
        .find(|l| l.termination == "overflow{max_concurrent}")
        .unwrap_or_else(|| panic!("{lines:#?}"));
    assert_eq!((over.flags.as_str(), over.route.as_str()), ("UO", "api"));
    let limited = lines
        .iter()
        .find(|l| l.termination == "rate_limited")
        .unwrap();
    assert_eq!(limited.flags, "RL");
}

#[tokio::test]
async fn max_concurrent_counts_a_request_until_its_response_is_done() {
    let s = Scenario::start(&policy(", max_concurrent: 1")).await;
    let authority = s.authority("api.example.com");
    let slow = {
        let addr = s.http();
        let authority = authority.clone();
        tokio::spawn(async move {
            egress_testkit::http_get(addr, &authority, "/delay/1")
                .await
                .unwrap()
        })
    };
    let wait_in_flight = egress_testkit::wait_until_async(Duration::from_secs(5), || async {
        s.upstream.request_count() == 1
    })
    .await;
    assert!(wait_in_flight);
    let refused = s.get(&authority, "/").await;
    assert_eq!(refused.status, Some(503), "{}", refused.text);
    assert!(
        refused.text.contains("at most 1 requests at once"),
        "{}",
        refused.text
    );
    assert_eq!(slow.await.unwrap().status, Some(200));
    assert_eq!(s.get(&authority, "/").await.status, Some(200));
    let lines = s.gateway.wait_audit_lines(3).await;
    let refused: Vec<IstioLine> = lines
        .iter()
        .map(|l| IstioLine::parse(l))
        .filter(|l| l.code == "503")
        .collect();
    assert_eq!(refused.len(), 1, "{lines:#?}");
    assert_eq!(
        (refused[0].flags.as_str(), refused[0].details.as_str()),
        ("UO", "overflow{max_concurrent}")
    );
}
