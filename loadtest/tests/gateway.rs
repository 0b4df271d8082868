//! A one-second scenario through a gateway started by the test: the report's counts add
//! up, and agree with the gateway's own audit log. No figure is asserted.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test by panicking"
)]

use std::time::Duration;

use egress_gateway::testing::TestGateway;
use egress_loadtest::run::{execute, RunPlan};
use egress_loadtest::scenario::{Scenario, Workload};
use egress_loadtest::upstream::{UpstreamConfig, Upstreams};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_second_of_http1_with_denials_through_the_gateway() {
    let up = Upstreams::start(UpstreamConfig::default()).await.unwrap();
    let policy = format!(
        "defaults: {{mode: deny}}\n\
         listeners: [{{name: http, port: 8080, protocol: http}}]\n\
         rules:\n  - name: stub\n    hosts: [allowed.test]\n    endpoints: [\"{}\"]\n    allow_private: true\n",
        up.http
    );
    let gateway = TestGateway::start(&policy).await;
    let plan = RunPlan {
        label: "gateway".into(),
        workload: Workload {
            scenario: Scenario::Http1,
            new_connection: false,
            body_bytes: 256,
            deny_percent: 20,
            connect_port: 0,
        },
        target: gateway.addr("http"),
        direct: false,
        connections: 8,
        rate: None,
        duration: Duration::from_secs(1),
        max_requests: None,
        timeout: Duration::from_secs(5),
        progress: false,
    };
    let report = execute(&plan).await.unwrap();
    let text = report.human();
    assert!(report.requests > 0, "{text}");
    assert_eq!(
        report.ok + report.denied + report.errors,
        report.requests,
        "{text}"
    );
    assert_eq!(report.errors, 0, "{text}");
    assert_eq!(report.latency.count, report.requests);
    // 20% of each connection's requests, give or take one per connection.
    let expected = report.requests as f64 * 0.2;
    assert!((report.denied as f64 - expected).abs() <= 8.0, "{text}");
    // The gateway audited every request the report counts, and denied the same ones.
    let lines = gateway.wait_audit_lines(report.requests as usize).await;
    assert_eq!(lines.len() as u64, report.requests, "{text}");
    let denied = lines.iter().filter(|l| l.contains(" 403 ")).count() as u64;
    assert_eq!(denied, report.denied, "{text}");
    assert!(gateway.shutdown().await);
}
