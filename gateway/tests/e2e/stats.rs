//! The stats listener as Prometheus and kubelet meet it: metrics and probes without a
//! token, on an address apart from the admin API, and nothing of the policy API.

use std::time::Duration;

use egress_admin::api::ErrorBody;
use egress_admin::client::{Client, Reply};
use hyper::{Method, StatusCode};

use crate::admin_api::Admin;
use crate::common::{allow_policy, Scenario};

const TIMEOUT: Duration = Duration::from_secs(10);

async fn send(client: &Client, method: Method, path: &str) -> Reply {
    client.send(method, path, &[], None, TIMEOUT).await.unwrap()
}

#[tokio::test]
async fn metrics_and_probes_need_no_token_and_the_policy_api_is_not_there() {
    let s = Scenario::start(&allow_policy("[api.example.com]")).await;
    let stats_addr = s.gateway.stats_addr();
    assert_ne!(stats_addr, s.gateway.admin_addr());
    assert!(
        s.gateway
            .inner()
            .describe()
            .contains(&format!("stats on {stats_addr}")),
        "the start-up line names the stats address: {}",
        s.gateway.inner().describe()
    );
    assert_eq!(
        s.get(&s.authority("api.example.com"), "/").await.status,
        Some(200)
    );
    assert_eq!(s.get("denied.example.net", "/").await.status, Some(403));
    s.gateway.wait_audit_lines(2).await;

    let stats = Client::new(&stats_addr.to_string(), None).unwrap();
    let metrics = send(&stats, Method::GET, "/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK, "{}", metrics.text());
    let text = metrics.text();
    let counted = |labels: &[&str]| {
        text.lines().any(|l| {
            l.starts_with("egress_requests_total{")
                && l.ends_with(" 1")
                && labels.iter().all(|label| l.contains(label))
        })
    };
    assert!(
        counted(&[
            r#"decision="allow""#,
            r#"rule="allowed""#,
            r#"response_code="200""#
        ]),
        "the allowed request is counted:\n{text}"
    );
    assert!(
        counted(&[
            r#"decision="deny""#,
            r#"rule="none""#,
            r#"response_code="403""#
        ]),
        "the denied request is counted:\n{text}"
    );
    assert!(text.contains("\negress_policy_version 1\n"), "{text}");
    assert_eq!(
        send(&stats, Method::GET, "/healthz").await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(&stats, Method::GET, "/readyz").await.status,
        StatusCode::OK
    );

    // With the admin token or without, nothing of the policy API answers here.
    let with_token = Client::new(&stats_addr.to_string(), Some(s.gateway.admin_token())).unwrap();
    for (method, path) in [
        (Method::GET, "/policy"),
        (Method::PUT, "/policy"),
        (Method::POST, "/policy/check"),
        (Method::GET, "/connections"),
        (Method::POST, "/drain"),
        (Method::GET, "/openapi.json"),
        (Method::GET, "/"),
    ] {
        let reply = send(&with_token, method.clone(), path).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{method} {path}");
        let body: ErrorBody = serde_json::from_slice(&reply.body).unwrap();
        assert!(body.error.contains("stats listener"), "{}", body.error);
    }
    assert_eq!(
        s.gateway.policy_version(),
        1,
        "no write reached the policy through the stats listener"
    );
}

#[tokio::test]
async fn readiness_on_the_stats_listener_turns_off_when_the_gateway_drains() {
    let s = Scenario::start(&allow_policy("[api.example.com]")).await;
    let stats = Client::new(&s.gateway.stats_addr().to_string(), None).unwrap();
    assert_eq!(
        send(&stats, Method::GET, "/readyz").await.status,
        StatusCode::OK
    );
    let admin = Admin::of(&s.gateway);
    let drained = admin.send(Method::POST, "/drain", &[], None).await;
    assert_eq!(drained.status, StatusCode::OK, "{}", drained.text());
    let readyz = send(&stats, Method::GET, "/readyz").await;
    assert_eq!(readyz.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        send(&stats, Method::GET, "/healthz").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_stats_listener_can_be_turned_off() {
    let gateway = egress_gateway::testing::TestGateway::builder(&allow_policy("[a.example]"))
        .configure(|c| c.stats.enabled = false)
        .start()
        .await;
    assert_eq!(gateway.inner().stats_addr(), None);
    assert!(gateway.inner().describe().contains("stats on nothing"));
}
