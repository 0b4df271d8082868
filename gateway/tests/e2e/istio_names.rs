//! `stats: {istio_names: true}`: Istio's metric names and labels beside the gateway's
//! own, filled from what the gateway knows, with the rule's name where Istio puts the
//! destination service, never the host.

use egress_gateway::testing::TestGateway;
use egress_testkit::{KeepAliveClient, StubUpstream, TestDns};

use crate::common::{allow_policy, Exposition, Scenario, LOOPBACK};

const POLICY: &str = r#"
defaults: {mode: deny, allow_private: true}
listeners:
  - {name: http, port: 8080, protocol: http}
  - {name: db, port: 13306, protocol: tcp, forward_to: "api.example.com:{PORT}"}
rules:
  - {name: allowed, hosts: [api.example.com], listeners: [http]}
  - {name: api-tcp, hosts: [api.example.com], listeners: [db]}
"#;

#[tokio::test]
async fn istio_names_count_requests_and_tcp_connections_by_rule() {
    let upstream = StubUpstream::start().await;
    let dns = TestDns::start().await;
    dns.set("api.example.com", [LOOPBACK]);
    let policy = POLICY.replace("{PORT}", &upstream.port().to_string());
    let gateway = TestGateway::builder(&policy)
        .dns(vec![dns.addr()])
        .configure(|c| c.stats.istio_names = true)
        .start()
        .await;
    let authority = format!("api.example.com:{}", upstream.port());
    let http = gateway.addr("http");
    let ok = egress_testkit::http_get(http, &authority, "/")
        .await
        .unwrap();
    assert_eq!(ok.status, Some(200));
    let denied = egress_testkit::http_get(http, "probe-1.attacker.example", "/")
        .await
        .unwrap();
    assert_eq!(denied.status, Some(403));
    let mut tunnel = KeepAliveClient::connect(gateway.addr("db")).await.unwrap();
    assert_eq!(tunnel.get("/").await.unwrap().status, 200);
    drop(tunnel);

    let closed = [r#"destination_service_name="api-tcp""#];
    let e = Exposition::wait(&gateway, |e| {
        e.value_or_zero("istio_tcp_connections_closed_total", &closed) >= 1.0
            && e.value_or_zero("istio_requests_total", &[]) >= 2.0
    })
    .await;
    let source = r#"reporter="source""#;
    assert_eq!(
        e.value(
            "istio_requests_total",
            &[
                source,
                r#"destination_service_name="allowed""#,
                r#"destination_service="allowed""#,
                r#"request_protocol="http""#,
                r#"response_code="200""#,
                r#"source_workload="egress-gateway""#
            ]
        ),
        1.0
    );
    assert_eq!(
        e.value(
            "istio_requests_total",
            &[
                r#"destination_service_name="none""#,
                r#"response_code="403""#
            ]
        ),
        1.0
    );
    assert_eq!(
        e.value(
            "istio_request_duration_milliseconds_count",
            &[r#"destination_service_name="allowed""#]
        ),
        1.0
    );
    let tcp = [source, closed[0], r#"request_protocol="tcp""#];
    assert_eq!(e.value("istio_tcp_connections_opened_total", &tcp), 1.0);
    assert_eq!(e.value("istio_tcp_connections_closed_total", &tcp), 1.0);
    assert!(e.value("istio_tcp_sent_bytes_total", &tcp) > 0.0);
    assert!(e.value("istio_tcp_received_bytes_total", &tcp) > 0.0);
    assert!(!e.text.contains("attacker"), "no host in any label");
    // The gateway's own names are still there.
    assert_eq!(
        e.value(
            "egress_requests_total",
            &[r#"rule="allowed""#, r#"response_code="200""#]
        ),
        1.0
    );
}

#[tokio::test]
async fn without_the_option_no_istio_name_is_exported() {
    let s = Scenario::start(&allow_policy("[api.example.com]")).await;
    assert_eq!(
        s.get(&s.authority("api.example.com"), "/").await.status,
        Some(200)
    );
    let e = Exposition::wait(&s.gateway, |e| {
        e.value_or_zero("egress_requests_total", &[]) >= 1.0
    })
    .await;
    assert!(!e.text.contains("istio_"), "{}", e.text);
}
