//! What operators rely on around the data path: names resolved once per TTL, and
//! metrics that say what happened — a refused destination is a denial — whose labels
//! never grow with the hosts clients ask for and whose known series exist from start-up.

use egress_gateway::testing::TestGateway;

use crate::common::{allow_policy, Exposition, Scenario};

const CLASSES: [&str; 10] = [
    "loopback",
    "private",
    "link_local",
    "cgnat",
    "unspecified",
    "multicast",
    "broadcast",
    "documentation",
    "reserved",
    "benchmarking",
];

#[tokio::test]
async fn answers_are_cached_by_ttl_and_nxdomain_is_cached_too() {
    let s = Scenario::start(&allow_policy(r#"["*.example.com"]"#)).await;
    assert_eq!(
        s.get(&s.authority("api.example.com"), "/").await.status,
        Some(200)
    );
    let first = s.dns.query_count("api.example.com");
    assert!(first >= 1, "the name was looked up");
    for _ in 0..3 {
        assert_eq!(
            s.get(&s.authority("api.example.com"), "/").await.status,
            Some(200)
        );
    }
    assert_eq!(
        s.dns.query_count("api.example.com"),
        first,
        "answered from the cache within the TTL"
    );
    let metrics = egress_testkit::http_get(s.gateway.admin_addr(), "admin", "/metrics")
        .await
        .unwrap();
    assert!(
        metrics.body().contains("egress_dns_cache_hits_total 3"),
        "the cache hits are counted: {}",
        metrics.body()
    );
    assert_eq!(s.get("missing.example.com", "/").await.status, Some(503));
    let negative = s.dns.query_count("missing.example.com");
    for _ in 0..3 {
        assert_eq!(s.get("missing.example.com", "/").await.status, Some(503));
    }
    assert_eq!(
        s.dns.query_count("missing.example.com"),
        negative,
        "NXDOMAIN is cached too"
    );
}

#[tokio::test]
async fn denied_hosts_never_become_metric_labels() {
    let s = Scenario::start(&allow_policy("[api.example.com]")).await;
    for i in 0..30 {
        let host = format!("probe-{i}.attacker.example");
        assert_eq!(s.get(&host, "/").await.status, Some(403));
    }
    assert_eq!(
        s.get(&s.authority("api.example.com"), "/").await.status,
        Some(200)
    );
    let metrics = egress_testkit::http_get(s.gateway.admin_addr(), "admin", "/metrics")
        .await
        .unwrap();
    assert_eq!(metrics.status, Some(200));
    let text = metrics.body();
    assert!(!text.contains("attacker"), "no host in any label");
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("egress_requests_total{"))
        .collect();
    assert_eq!(
        series.len(),
        2,
        "one series for the denials, one for the allowed: {series:#?}"
    );
    assert!(
        series.iter().any(|l| l.contains("decision=\"deny\"")
            && l.contains("rule=\"none\"")
            && l.ends_with(" 30")),
        "{series:#?}"
    );
    assert!(
        text.contains("egress_audit_lines_written_total"),
        "audit counters are exported"
    );
}

#[tokio::test]
async fn a_destination_the_guard_refuses_is_counted_as_denied_never_allowed() {
    // The rule allows the name, but it resolves to loopback and the rule does not allow
    // private addresses: the request is refused, and must be counted as a denial.
    let policy = r#"
defaults: {mode: deny}
listeners:
  - {name: http, port: 8080, protocol: http}
  - {name: db, port: 13306, protocol: tcp, forward_to: "api.example.com:5432"}
rules:
  - {name: guarded, hosts: [api.example.com]}
"#;
    let s = Scenario::start(policy).await;
    let refused = s.get(&s.authority("api.example.com"), "/").await;
    assert_eq!(refused.status, Some(403), "{}", refused.text);
    // And a tunnel to the same destination, through the tcp listener.
    let mut tcp = egress_testkit::client::connect(s.gateway.addr("db"))
        .await
        .unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut rest),
    )
    .await;
    assert!(closed.is_ok(), "the refused tunnel is closed");

    let counted =
        |e: &Exposition| e.value_or_zero("egress_requests_total", &[r#"decision="deny""#]) >= 2.0;
    let e = Exposition::wait(&s.gateway, counted).await;
    assert_eq!(
        e.value(
            "egress_requests_total",
            &[
                r#"listener="http""#,
                r#"decision="deny""#,
                r#"rule="guarded""#,
                r#"response_code="403""#
            ]
        ),
        1.0
    );
    assert_eq!(
        e.value(
            "egress_requests_total",
            &[
                r#"listener="db""#,
                r#"decision="deny""#,
                r#"rule="guarded""#
            ]
        ),
        1.0
    );
    let allowed: Vec<_> = e
        .series("egress_requests_total")
        .into_iter()
        .filter(|(labels, _)| !labels.contains(r#"decision="deny""#))
        .collect();
    assert!(allowed.is_empty(), "nothing else was counted: {allowed:?}");
    assert_eq!(
        e.value("egress_address_refused_total", &[r#"class="loopback""#]),
        2.0
    );
    assert_eq!(
        e.value("egress_denials_total", &[r#"reason="address_refused""#]),
        2.0
    );
    let durations = e.series("egress_request_duration_seconds_count");
    assert_eq!(durations.len(), 2, "{durations:?}");
    assert!(
        durations
            .iter()
            .all(|(labels, n)| labels.contains(r#"decision="deny""#) && *n == 1.0),
        "{durations:?}"
    );
}

#[tokio::test]
async fn counters_that_dashboards_divide_by_exist_at_zero_from_start_up() {
    let gateway = TestGateway::start(&allow_policy("[api.example.com]")).await;
    let e = Exposition::scrape(&gateway).await;
    for result in ["applied", "rejected"] {
        let labels = format!(r#"result="{result}""#);
        assert_eq!(
            e.value("egress_policy_reloads_total", &[&labels]),
            0.0,
            "{result}"
        );
    }
    assert_eq!(
        e.series("egress_address_refused_total").len(),
        CLASSES.len()
    );
    for class in CLASSES {
        let labels = format!(r#"class="{class}""#);
        assert_eq!(e.value("egress_address_refused_total", &[&labels]), 0.0);
    }
    for reason in ["rule", "no_rule", "address_refused"] {
        let labels = format!(r#"reason="{reason}""#);
        assert_eq!(e.value("egress_denials_total", &[&labels]), 0.0);
    }
    for reason in ["refused", "timeout", "unreachable", "reset", "tls", "other"] {
        let labels = format!(r#"reason="{reason}""#);
        assert_eq!(
            e.value("egress_upstream_connect_failures_total", &[&labels]),
            0.0
        );
    }
    for result in ["ok", "nxdomain", "no_records", "error"] {
        let labels = format!(r#"result="{result}""#);
        assert_eq!(e.value("egress_dns_lookups_total", &[&labels]), 0.0);
    }
    for reason in ["missing", "not_bearer", "refused"] {
        let labels = format!(r#"reason="{reason}""#);
        assert_eq!(e.value("egress_admin_auth_failures_total", &[&labels]), 0.0);
    }
}
