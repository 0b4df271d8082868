//! The `tcp` listener: every connection to `forward_to`, while a rule allows it, with
//! the guard and connect failures on its audit line.

use std::time::Duration;

use egress_testkit::{ClosedPort, KeepAliveClient};
use tokio::io::AsyncReadExt;

use crate::common::{IstioLine, Scenario};

fn tcp_policy(forward_to: &str, rules: &str, allow_private: bool) -> String {
    format!(
        r#"
defaults: {{mode: deny, allow_private: {allow_private}}}
listeners:
  - {{name: http, port: 8080, protocol: http}}
  - {{name: db, port: 13306, protocol: tcp, forward_to: "{forward_to}"}}
rules:
{rules}
"#
    )
}

const ALLOW_API: &str = "  - {name: api-tcp, hosts: [api.example.com], listeners: [db]}";

async fn wait_line(s: &Scenario, pred: impl Fn(&IstioLine) -> bool) -> IstioLine {
    let mut found = None;
    let seen = egress_testkit::wait_until_async(Duration::from_secs(10), || {
        found = s
            .gateway
            .audit_lines()
            .iter()
            .map(|l| IstioLine::parse(l))
            .find(|l| pred(l));
        std::future::ready(found.is_some())
    })
    .await;
    assert!(seen, "no such audit line in {:#?}", s.gateway.audit_lines());
    found.unwrap()
}

/// Connects to the `db` listener and waits until the gateway closes it.
async fn closed_at_once(s: &Scenario) -> bool {
    let mut tcp = egress_testkit::client::connect(s.gateway.addr("db"))
        .await
        .unwrap();
    let mut sink = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut sink))
        .await
        .is_ok()
}

#[tokio::test]
async fn connections_go_to_forward_to_when_a_rule_allows_it() {
    let s = Scenario::start(&tcp_policy("api.example.com:{PORT}", ALLOW_API, true)).await;
    let mut client = KeepAliveClient::connect(s.gateway.addr("db"))
        .await
        .unwrap();
    assert_eq!(client.get("/one").await.unwrap().status, 200);
    assert_eq!(client.get("/two").await.unwrap().status, 200);
    drop(client);
    assert_eq!(s.upstream.connection_count(), 1);
    let line = wait_line(&s, |l| l.route == "api-tcp").await;
    assert_eq!(
        (
            line.method.as_str(),
            line.protocol.as_str(),
            line.code.as_str()
        ),
        ("-", "-", "0")
    );
    assert_eq!(line.flags, "-");
    assert_eq!(line.sni, "-");
    let port = s.upstream.port();
    assert_eq!(line.cluster, format!("outbound|{port}||api.example.com"));
    assert_eq!(line.upstream_host, format!("127.0.0.1:{port}"));
    assert_eq!(line.downstream_local, s.gateway.addr("db").to_string());
    assert!(line.bytes_received.parse::<u64>().unwrap() > 50);
    assert!(line.bytes_sent.parse::<u64>().unwrap() > 100);
}

#[tokio::test]
async fn forward_to_without_a_rule_is_refused() {
    let s = Scenario::start(&tcp_policy(
        "api.example.com:{PORT}",
        "  - {name: web, hosts: [api.example.com], listeners: [http]}",
        true,
    ))
    .await;
    assert!(closed_at_once(&s).await);
    let line = wait_line(&s, |l| l.termination.starts_with("rbac")).await;
    assert_eq!(line.termination, "rbac_access_denied_matched_policy[none]");
    assert_eq!(line.code, "0");
    assert_eq!(line.upstream_host, "-");
    assert_eq!(s.upstream.connection_count(), 0);
}

#[tokio::test]
async fn the_guard_applies_to_forward_to() {
    let s = Scenario::start(&tcp_policy("api.example.com:{PORT}", ALLOW_API, false)).await;
    assert!(closed_at_once(&s).await);
    let line = wait_line(&s, |l| l.route == "api-tcp").await;
    assert_eq!(line.termination, "destination_address_refused{loopback}");
    assert_eq!(s.upstream.connection_count(), 0);
}

#[tokio::test]
async fn an_upstream_that_refuses_is_uf() {
    let closed = ClosedPort::new();
    let forward_to = format!("api.example.com:{}", closed.port());
    let s = Scenario::start(&tcp_policy(&forward_to, ALLOW_API, true)).await;
    assert!(closed_at_once(&s).await);
    let line = wait_line(&s, |l| l.route == "api-tcp").await;
    assert_eq!(line.flags, "UF");
    assert_eq!(line.transport_failure, "connection_refused");
    assert_eq!(line.upstream_host, format!("127.0.0.1:{}", closed.port()));
}
