//! What operators rely on around the data path: names resolved once per TTL, and
//! metrics whose labels never grow with the hosts clients ask for.

use crate::common::{allow_policy, Scenario};

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
