//! Policy changes without a restart: a valid edit applies at once, also to the next
//! request on an open keep-alive connection; an invalid edit keeps the old policy.

use std::time::Duration;

use egress_testkit::KeepAliveClient;
use http::Method;

use crate::common::{allow_policy, Scenario};

#[tokio::test]
async fn an_edit_changes_the_decision_while_a_keep_alive_connection_stays_open() {
    let s = Scenario::start(&allow_policy("[api.example.com]")).await;
    let mut client = KeepAliveClient::connect(s.http()).await.unwrap();
    let host = s.authority("api.example.com");
    let headers = [("host", host.as_str())];
    assert_eq!(
        client
            .request(Method::GET, "/", &headers, "")
            .await
            .unwrap()
            .status,
        200
    );

    let version = s.gateway.policy_version();
    s.gateway
        .write_policy("policy.yaml", &allow_policy("[other.example.com]"));
    assert!(
        s.gateway
            .wait_for_version(version + 1, Duration::from_secs(10))
            .await,
        "reloaded"
    );

    let denied = client
        .request(Method::GET, "/", &headers, "")
        .await
        .unwrap();
    assert_eq!(
        denied.status, 403,
        "the same connection sees the new policy"
    );
    assert!(
        !client.is_closed(),
        "the keep-alive connection survived the reload"
    );
    assert_eq!(s.upstream.request_count(), 1);
}

#[tokio::test]
async fn an_invalid_edit_is_refused_and_the_old_policy_keeps_serving() {
    let s = Scenario::start(&allow_policy("[api.example.com]")).await;
    let version = s.gateway.policy_version();
    s.gateway.write_policy(
        "policy.yaml",
        "defaults: {mode: allow}\nlisteners: [{name: http, port: 8080, protocol: http}]\nrules:\n  - {name: x, hosts: [a.com], ports: [70000]}\n",
    );
    // The refusal is counted in the metrics: wait for it instead of sleeping.
    let admin = s.gateway.admin_addr();
    let end = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = egress_testkit::http_get(admin, "admin", "/metrics")
            .await
            .unwrap();
        if metrics
            .body()
            .contains("egress_policy_reloads_total{result=\"rejected\"} 1")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < end,
            "the refused change is counted: {}",
            metrics.body()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        s.gateway.policy_version(),
        version,
        "the invalid set was not applied"
    );
    let response = s.get(&s.authority("api.example.com"), "/").await;
    assert_eq!(response.status, Some(200), "the old policy still serves");
    let denied = s.get(&s.authority("other.example.com"), "/").await;
    assert_eq!(
        denied.status,
        Some(403),
        "mode: allow from the invalid file is not in force"
    );
}
