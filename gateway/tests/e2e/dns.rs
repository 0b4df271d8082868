//! The `dns` listener with real clients: `dig` over UDP and TCP, raw datagrams for
//! hostile packets and floods, and connections through auto-allocated addresses.

mod allocate;
mod client;
mod hostile;
mod redirect;
mod resolvers;

use std::net::SocketAddr;
use std::time::Duration;

use egress_gateway::testing::TestGateway;
use egress_testkit::TestDns;

use crate::common::{Exposition, IstioLine};
use client::dig;

const SUFFIXES: &str = "[ns1.svc.cluster.local, svc.cluster.local, cluster.local]";

fn policy(mode: &str, listener_extra: &str) -> String {
    format!(
        r#"
defaults: {{mode: {mode}}}
listeners:
  - {{name: dns, port: 5353, protocol: dns, search_suffixes: {SUFFIXES}{listener_extra}}}
rules:
  - {{name: api, hosts: [api.example.com]}}
  - {{name: google, hosts: ["*.googleapis.com"], ports: [443]}}
  - {{name: evil, hosts: [evil.example.com], action: deny}}
"#
    )
}

async fn gateway(policy: &str) -> TestGateway {
    TestGateway::start(policy).await
}

/// The audit lines of DNS queries, parsed.
async fn dns_lines(gateway: &TestGateway, count: usize) -> Vec<IstioLine> {
    let lines = gateway.wait_audit_lines(count).await;
    let lines: Vec<IstioLine> = lines
        .iter()
        .map(|l| IstioLine::parse(l))
        .filter(|l| l.method == "DNS")
        .collect();
    assert!(lines.len() >= count, "{lines:#?}");
    lines
}

#[tokio::test]
async fn allowed_names_resolve_to_the_gateway_and_the_rest_are_refused() {
    let gw = gateway(&policy("deny", "")).await;
    let dns = gw.addr("dns");
    for transport in ["+notcp", "+tcp"] {
        let a = dig(dns, &[transport, "api.example.com", "A"]).await;
        assert_eq!(a.status, "NOERROR", "{}", a.text);
        assert_eq!(a.data("A"), ["127.0.0.1"], "{}", a.text);
        assert!(a.flags.contains("aa"), "{}", a.text);
        // Wildcards match as on the data path, whatever the port the rule lists.
        let w = dig(dns, &[transport, "storage.googleapis.com"]).await;
        assert_eq!(w.data("A"), ["127.0.0.1"], "{}", w.text);
    }
    // No IPv6 address to give: the name exists, with no AAAA record.
    let aaaa = dig(dns, &["api.example.com", "AAAA"]).await;
    assert_eq!((aaaa.status.as_str(), aaaa.answers.len()), ("NOERROR", 0));
    // Other types of a known name: empty NOERROR; of an unknown one: refused.
    let mx = dig(dns, &["api.example.com", "MX"]).await;
    assert_eq!((mx.status.as_str(), mx.answers.len()), ("NOERROR", 0));
    assert_eq!(
        dig(dns, &["unknown.example.org", "MX"]).await.status,
        "REFUSED"
    );
    assert_eq!(dig(dns, &["unknown.example.org"]).await.status, "REFUSED");
    // A deny rule refuses, and so does ANY.
    assert_eq!(dig(dns, &["evil.example.com"]).await.status, "REFUSED");
    assert_eq!(
        dig(dns, &["api.example.com", "ANY"]).await.status,
        "REFUSED"
    );
    // The same name in capitals, with the case kept in the answer (0x20).
    let upper = dig(dns, &["API.Example.COM"]).await;
    assert_eq!(upper.data("A"), ["127.0.0.1"], "{}", upper.text);
    assert!(upper.text.contains("API.Example.COM."), "{}", upper.text);

    let lines = dns_lines(&gw, 11).await;
    let first = &lines[0];
    assert_eq!(
        (first.path.as_str(), first.protocol.as_str()),
        ("A", "api.example.com")
    );
    assert_eq!(
        (first.details.as_str(), first.route.as_str()),
        ("NOERROR", "api")
    );
    assert_eq!(first.authority, "api.example.com");
    assert!(first.downstream_remote.starts_with("127.0.0.1:"));
    assert_eq!(first.downstream_local, dns.to_string());
    let refused = lines
        .iter()
        .find(|l| l.protocol == "evil.example.com")
        .unwrap();
    assert_eq!(
        (refused.details.as_str(), refused.route.as_str()),
        ("REFUSED", "evil")
    );
    let any = lines.iter().find(|l| l.path == "ANY").unwrap();
    assert_eq!(any.termination, "unsupported_query");

    let m = Exposition::wait(&gw, |m| {
        m.value_or_zero("egress_dns_queries_total", &["decision=\"deny\""]) >= 3.0
    })
    .await;
    let allowed = m.value(
        "egress_dns_queries_total",
        &[
            "listener=\"dns\"",
            "qtype=\"A\"",
            "rcode=\"NOERROR\"",
            "decision=\"allow\"",
        ],
    );
    assert!(allowed >= 5.0, "{}", m.text);
    assert_eq!(
        m.value(
            "egress_dns_queries_total",
            &["qtype=\"MX\"", "rcode=\"REFUSED\"", "decision=\"deny\""]
        ),
        1.0
    );
    assert!(
        m.value(
            "egress_dns_query_duration_seconds_count",
            &["listener=\"dns\""]
        ) >= 11.0
    );
    // Denied names never become labels.
    assert!(!m.text.contains("unknown.example.org"));
}

#[tokio::test]
async fn answers_follow_answer_with_ttl_and_on_deny() {
    let extra = ", answer_with: [192.0.2.10, \"2001:db8::10\"], ttl: 7s, on_deny: nxdomain";
    let gw = gateway(&policy("deny", extra)).await;
    let dns = gw.addr("dns");
    let a = dig(dns, &["api.example.com"]).await;
    assert_eq!(a.data("A"), ["192.0.2.10"], "{}", a.text);
    assert_eq!(a.answers[0].0, "api.example.com.");
    assert!(a.text.contains("api.example.com.\t7\tIN\tA"), "{}", a.text);
    let aaaa = dig(dns, &["api.example.com", "AAAA"]).await;
    assert_eq!(aaaa.data("AAAA"), ["2001:db8::10"], "{}", aaaa.text);
    assert_eq!(dig(dns, &["unknown.example.org"]).await.status, "NXDOMAIN");
}

#[tokio::test]
async fn answers_too_big_for_udp_are_truncated_and_served_whole_over_tcp() {
    let many: Vec<String> = (1..=60).map(|i| format!("192.0.2.{i}")).collect();
    let extra = format!(", answer_with: [{}]", many.join(", "));
    let gw = gateway(&policy("deny", &extra)).await;
    let dns = gw.addr("dns");
    // 60 A records are about 1 KB: more than 512 bytes without EDNS.
    let cut = dig(dns, &["+noedns", "+ignore", "api.example.com"]).await;
    assert!(cut.flags.contains("tc"), "{}", cut.text);
    assert!(cut.answers.is_empty(), "{}", cut.text);
    // dig retries over TCP on TC, as resolvers do.
    let whole = dig(dns, &["+noedns", "api.example.com"]).await;
    assert_eq!(whole.data("A").len(), 60, "{}", whole.text);
    // With EDNS the 1232-byte payload holds them in one datagram.
    let edns = dig(dns, &["+bufsize=1232", "+ignore", "api.example.com"]).await;
    assert!(!edns.flags.contains("tc"), "{}", edns.text);
    assert_eq!(edns.data("A").len(), 60);
    let lines = dns_lines(&gw, 4).await;
    assert!(
        lines.iter().any(|l| l.termination == "truncated"),
        "{lines:#?}"
    );
}

#[tokio::test]
async fn search_expansions_of_allowed_names_are_answered_in_one_round_trip() {
    let gw = gateway(&policy("deny", "")).await;
    let dns = gw.addr("dns");
    let expanded = dig(dns, &["api.example.com.ns1.svc.cluster.local"]).await;
    assert_eq!(expanded.status, "NOERROR", "{}", expanded.text);
    assert_eq!(
        expanded.data("CNAME"),
        ["api.example.com."],
        "{}",
        expanded.text
    );
    assert_eq!(expanded.data("A"), ["127.0.0.1"], "{}", expanded.text);
    let deeper = dig(dns, &["x.googleapis.com.cluster.local", "AAAA"]).await;
    assert_eq!(
        deeper.data("CNAME"),
        ["x.googleapis.com."],
        "{}",
        deeper.text
    );
    // A cluster name is never answered with the gateway: NXDOMAIN, so that a resolver
    // walking its search list goes on (REFUSED would stop it).
    let internal = dig(dns, &["kubernetes.default.svc.cluster.local"]).await;
    assert_eq!(internal.status, "NXDOMAIN", "{}", internal.text);
    let unknown = dig(dns, &["unknown.example.org.svc.cluster.local"]).await;
    assert_eq!(unknown.status, "NXDOMAIN", "{}", unknown.text);
    let lines = dns_lines(&gw, 4).await;
    assert_eq!(lines[0].termination, "autopath");
    assert_eq!(lines[0].route, "api");
}

#[tokio::test]
async fn a_policy_change_changes_answers_at_once() {
    let gw = gateway(&policy("deny", "")).await;
    let dns = gw.addr("dns");
    assert_eq!(
        dig(dns, &["api.example.com"]).await.data("A"),
        ["127.0.0.1"]
    );
    let version = gw.policy_version();
    let revoked = policy("deny", "").replace("api.example.com", "other.example.com");
    gw.write_policy("policy.yaml", &revoked);
    assert!(
        gw.wait_for_version(version + 1, Duration::from_secs(10))
            .await
    );
    assert_eq!(dig(dns, &["api.example.com"]).await.status, "REFUSED");
    assert_eq!(
        dig(dns, &["other.example.com"]).await.data("A"),
        ["127.0.0.1"]
    );
}

#[tokio::test]
async fn mode_allow_forwards_what_no_rule_decides_and_audit_mode_marks_it() {
    let upstream = TestDns::start().await;
    upstream.set("cdn.example.net", ["198.51.100.7".parse().unwrap()]);
    let allow = TestGateway::builder(&policy("allow", ""))
        .dns(vec![upstream.addr()])
        .start()
        .await;
    let dns = allow.addr("dns");
    let forwarded = dig(dns, &["cdn.example.net"]).await;
    assert_eq!(forwarded.data("A"), ["198.51.100.7"], "{}", forwarded.text);
    assert!(!forwarded.flags.contains("aa"), "{}", forwarded.text);
    assert_eq!(dig(dns, &["missing.example.net"]).await.status, "NXDOMAIN");
    // Rules still decide what they list.
    assert_eq!(
        dig(dns, &["api.example.com"]).await.data("A"),
        ["127.0.0.1"]
    );
    assert_eq!(dig(dns, &["evil.example.com"]).await.status, "REFUSED");
    // Cached by TTL: asked again, the name servers are not.
    let asked = upstream.query_count("cdn.example.net");
    dig(dns, &["cdn.example.net"]).await;
    assert_eq!(upstream.query_count("cdn.example.net"), asked);
    let lines = dns_lines(&allow, 4).await;
    let line = lines
        .iter()
        .find(|l| l.protocol == "cdn.example.net")
        .unwrap();
    assert_eq!(
        (line.details.as_str(), line.route.as_str()),
        ("NOERROR", "-")
    );

    let audit = TestGateway::start(&policy("audit", "")).await;
    let would = dig(audit.addr("dns"), &["unknown.example.org"]).await;
    assert_eq!(would.data("A"), ["127.0.0.1"], "{}", would.text);
    let lines = dns_lines(&audit, 1).await;
    assert_eq!(lines[0].termination, "audit_would_deny");
    let m = Exposition::wait(&audit, |m| {
        m.value_or_zero("egress_dns_queries_total", &["decision=\"would_deny\""]) >= 1.0
    })
    .await;
    assert_eq!(
        m.value("egress_dns_queries_total", &["decision=\"would_deny\""]),
        1.0
    );
}

/// Resolves `name` through `dns` and returns the one address.
async fn resolve(dns: SocketAddr, name: &str) -> std::net::IpAddr {
    let answer = dig(dns, &[name]).await;
    let data = answer.data("A");
    assert_eq!(data.len(), 1, "{}", answer.text);
    data[0].parse().unwrap()
}
