//! The address guard end to end: names that resolve to special addresses, and IP
//! literals in every spelling a resolver would accept.

use std::net::{IpAddr, Ipv4Addr};

use egress_admin::api::CheckAnswer;
use hyper::{Method, StatusCode};

use crate::admin_api::Admin;
use crate::common::{Exposition, Scenario};

const ALLOW_ALL_GUARDED: &str = r#"
defaults: {mode: allow, allow_private: false}
listeners: [{name: http, port: 8080, protocol: http}]
"#;

#[tokio::test]
async fn name_resolving_to_loopback_is_refused_unless_the_rule_allows_private() {
    let policy = r#"
defaults: {mode: deny}
listeners: [{name: http, port: 8080, protocol: http}]
rules:
  - {name: guarded, hosts: [api.example.com]}
  - {name: trusted, hosts: [other.example.com], allow_private: true}
"#;
    let s = Scenario::start(policy).await;
    let refused = s.get(&s.authority("api.example.com"), "/").await;
    assert_eq!(refused.status, Some(403), "{}", refused.text);
    assert!(
        refused.body().contains("127.0.0.1, a loopback address"),
        "{}",
        refused.body()
    );
    let line = s.audit(1).await;
    assert_eq!(line.details, "destination_address_refused{loopback}");
    assert_eq!(line.route, "guarded");
    assert_eq!(s.upstream.request_count(), 0);

    let served = s.get(&s.authority("other.example.com"), "/").await;
    assert_eq!(served.status, Some(200), "{}", served.text);
}

#[tokio::test]
async fn metadata_address_is_refused_before_any_connect() {
    let s = Scenario::start(ALLOW_ALL_GUARDED).await;
    s.dns.set(
        "metadata.example.com",
        [IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254))],
    );
    let response = s.get("metadata.example.com", "/latest/meta-data/").await;
    assert_eq!(response.status, Some(403), "{}", response.text);
    let line = s.audit(1).await;
    assert_eq!(line.details, "destination_address_refused{link_local}");
    assert_eq!(line.upstream_host, "-");
}

#[tokio::test]
async fn every_answer_refused_means_refused() {
    let s = Scenario::start(ALLOW_ALL_GUARDED).await;
    s.dns.set(
        "mixed.example.com",
        [
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V4(Ipv4Addr::new(100, 64, 0, 1)),
        ],
    );
    let response = s.get("mixed.example.com", "/").await;
    assert_eq!(response.status, Some(403), "{}", response.text);
}

#[tokio::test]
async fn ip_literals_in_any_spelling_are_guarded() {
    let s = Scenario::start(ALLOW_ALL_GUARDED).await;
    let port = s.upstream.port();
    let cases = [
        ("127.0.0.1", "loopback"),
        ("127.1", "loopback"),
        ("0x7f.1", "loopback"),
        ("0177.0.0.1", "loopback"),
        ("2130706433", "loopback"),
        ("0x7f000001", "loopback"),
        ("10.0.0.1", "private"),
        ("012.1.2.3", "private"),
        ("169.254.169.254", "link_local"),
        ("100.64.0.1", "cgnat"),
        ("0.0.0.0", "unspecified"),
        ("[::1]", "loopback"),
        ("[::ffff:127.0.0.1]", "loopback"),
        ("[::127.0.0.1]", "loopback"),
        ("[64:ff9b::a9fe:a9fe]", "link_local"),
        ("[2002:a9fe:a9fe::]", "link_local"),
        ("[fe80::1]", "link_local"),
        ("[fc00::1]", "private"),
    ];
    for (i, (host, class)) in cases.iter().enumerate() {
        let response = s.get(&format!("{host}:{port}"), "/").await;
        assert_eq!(response.status, Some(403), "{host}: {}", response.text);
        let line = s.audit(i + 1).await;
        assert_eq!(
            line.details,
            format!("destination_address_refused{{{class}}}"),
            "{host}"
        );
    }
    assert_eq!(s.upstream.request_count(), 0);
}

#[tokio::test]
async fn malformed_numeric_hosts_are_refused_not_resolved() {
    let s = Scenario::start(ALLOW_ALL_GUARDED).await;
    for host in [
        "256.1.1.1",
        "1.2.3.4.5",
        "08.1.1.1",
        "0x7f.0x1g",
        "127.0.0.1%2f",
    ] {
        let response = s.get(host, "/").await;
        assert_eq!(response.status, Some(400), "{host}: {}", response.text);
    }
    assert_eq!(
        s.dns.total_queries(),
        0,
        "nothing that looks numeric is looked up"
    );
}

#[tokio::test]
async fn ip_literal_matches_only_rules_listing_that_ip() {
    let policy = r#"
defaults: {mode: deny}
listeners: [{name: http, port: 8080, protocol: http}]
rules:
  - {name: everything-named, hosts: ["*"], allow_private: true}
  - {name: the-stub, hosts: ["127.0.0.1"], allow_private: true}
"#;
    let s = Scenario::start(policy).await;
    let port = s.upstream.port();
    for host in ["127.0.0.1", "127.1", "2130706433"] {
        let response = s.get(&format!("{host}:{port}"), "/").await;
        assert_eq!(response.status, Some(200), "{host}: {}", response.text);
        let line = s.audit(s.gateway.audit_lines().len()).await;
        assert_eq!(line.route, "the-stub");
    }
    let other = s.get(&format!("127.0.0.2:{port}"), "/").await;
    assert_eq!(
        other.status,
        Some(403),
        "a lone * does not match IP literals"
    );
}

#[tokio::test]
async fn a_check_meets_the_guard_as_a_request_would_and_counts_nothing() {
    let policy = r#"
defaults: {mode: deny}
listeners: [{name: http, port: 8080, protocol: http}]
rules:
  - {name: guarded, hosts: [api.example.com]}
  - {name: trusted, hosts: [other.example.com], allow_private: true}
"#;
    let s = Scenario::start(policy).await;
    let admin = Admin::of(&s.gateway);
    let check = |host: &'static str, resolve: bool| {
        let body = format!(r#"{{"host": "{host}", "port": 80, "resolve": {resolve}}}"#);
        let admin = &admin;
        async move {
            let reply = admin
                .send(
                    Method::POST,
                    "/policy/check",
                    &[],
                    Some((&body, "application/json")),
                )
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
            serde_json::from_slice::<CheckAnswer>(&reply.body).unwrap()
        }
    };
    // api.example.com resolves to loopback, which its rule does not allow.
    let refused = check("api.example.com", true).await;
    assert_eq!(refused.decision, "deny", "{refused:?}");
    assert_eq!(refused.rule.as_deref(), Some("guarded"));
    assert_eq!(
        refused.details.as_deref(),
        Some("destination_address_refused{loopback}")
    );
    assert!(
        refused.why.contains("127.0.0.1, a loopback address"),
        "{}",
        refused.why
    );
    assert!(refused.addresses.is_empty());
    // From the policy alone, the rule allows it.
    let unresolved = check("api.example.com", false).await;
    assert_eq!(unresolved.decision, "allow", "{unresolved:?}");
    assert_eq!(unresolved.details, None);
    // The rule that allows private addresses connects to the address the name has.
    let trusted = check("other.example.com", true).await;
    assert_eq!(trusted.decision, "allow", "{trusted:?}");
    assert_eq!(trusted.addresses, vec!["127.0.0.1:80".to_owned()]);
    let unknown = check("missing.example.com", true).await;
    assert_eq!(unknown.decision, "deny");
    assert_eq!(
        unknown.details.as_deref(),
        Some("rbac_access_denied_matched_policy[none]")
    );

    let e = Exposition::scrape(&s.gateway).await;
    assert_eq!(
        e.value("egress_address_refused_total", &[r#"class="loopback""#]),
        0.0,
        "a check is not traffic"
    );
    assert_eq!(e.value_or_zero("egress_dns_lookups_total", &[]), 0.0);
}
