//! Decisions: specificity, deny wins a tie, filters, IP literals, modes.

use std::net::SocketAddr;
use std::time::Duration;

use super::*;
use crate::wire::host::parse_host;

fn ask(
    p: &Policy,
    host: &str,
    port: u16,
    listener: &str,
    source: &Source,
) -> (Verdict, Option<String>) {
    let host = parse_host(host).unwrap();
    let d = p.decide(&Query {
        host: &host,
        port,
        listener,
        source,
    });
    (d.verdict, d.rule.map(|r| r.name.to_string()))
}

fn peer(ip: &str) -> Source {
    Source::from_addr(SocketAddr::new(ip.parse().unwrap(), 40000))
}

fn check(p: &Policy, host: &str, port: u16, want: Verdict, rule: Option<&str>) {
    let got = ask(p, host, port, "http", &peer("10.1.2.3"));
    assert_eq!(got, (want, rule.map(str::to_owned)), "{host}:{port}");
}

#[test]
fn the_most_specific_pattern_decides_and_deny_wins_a_tie() {
    let p = policy(&format!(
        "{LISTENERS}rules:
  - {{name: any, hosts: [\"*\"], action: deny}}
  - {{name: com, hosts: [\"*.example.com\"]}}
  - {{name: deep, hosts: [\"*.b.example.com\"], action: deny}}
  - {{name: exact, hosts: [x.b.example.com]}}
  - {{name: tie-allow, hosts: [tie.example.com]}}
  - {{name: tie-deny, hosts: [tie.example.com], action: deny}}
  - {{name: first, hosts: [two.example.com]}}
  - {{name: second, hosts: [two.example.com]}}
"
    ));
    use Verdict::{Allow, Deny};
    check(&p, "x.b.example.com", 80, Allow, Some("exact"));
    check(&p, "y.b.example.com", 80, Deny, Some("deep"));
    check(&p, "a.y.b.example.com", 80, Deny, Some("deep"));
    check(&p, "b.example.com", 80, Allow, Some("com"));
    check(&p, "example.com", 80, Deny, Some("any"));
    check(&p, "other.org", 80, Deny, Some("any"));
    check(&p, "tie.example.com", 80, Deny, Some("tie-deny"));
    check(&p, "two.example.com", 80, Allow, Some("first"));
}

#[test]
fn ports_listeners_and_sources_filter_and_fall_through_to_less_specific_patterns() {
    let p = policy(&format!("{LISTENERS}rules:
  - {{name: web, hosts: [api.example.com], ports: [443, 8443]}}
  - {{name: tls-only, hosts: [api.example.com], listeners: [tls], ports: [80]}}
  - {{name: wide, hosts: [\"*.example.com\"], ports: [80]}}
  - {{name: office, hosts: [internal.example.com], sources: [10.0.0.0/8, \"2001:db8::/32\"]}}
  - {{name: sleep, hosts: [svc.example.com], sources: [\"spiffe://cluster.local/ns/default/sa/sleep\"]}}
  - {{name: team, hosts: [svc.example.com], sources: [\"spiffe://cluster.local/ns/team/*\"], ports: [8080]}}
"));
    let anyone = peer("192.0.2.1");
    assert_eq!(
        ask(&p, "api.example.com", 443, "http", &anyone)
            .1
            .as_deref(),
        Some("web")
    );
    assert_eq!(
        ask(&p, "api.example.com", 80, "tls", &anyone).1.as_deref(),
        Some("tls-only")
    );
    // No exact rule for port 80 on the http listener: the wildcard decides.
    assert_eq!(
        ask(&p, "api.example.com", 80, "http", &anyone),
        (Verdict::Allow, Some("wide".into()))
    );
    assert_eq!(
        ask(&p, "api.example.com", 22, "http", &anyone),
        (Verdict::Deny, None)
    );

    assert_eq!(
        ask(&p, "internal.example.com", 443, "http", &peer("10.9.9.9"))
            .1
            .as_deref(),
        Some("office")
    );
    assert_eq!(
        ask(
            &p,
            "internal.example.com",
            443,
            "http",
            &peer("::ffff:10.9.9.9")
        )
        .1
        .as_deref(),
        Some("office")
    );
    assert_eq!(
        ask(
            &p,
            "internal.example.com",
            443,
            "http",
            &peer("2001:db8::5")
        )
        .1
        .as_deref(),
        Some("office")
    );
    assert_eq!(
        ask(&p, "internal.example.com", 443, "http", &anyone).0,
        Verdict::Deny
    );

    let who = |id: &str| Source {
        addr: anyone.addr,
        identity: Some(id.to_owned()),
    };
    let sleep = who("spiffe://cluster.local/ns/default/sa/sleep");
    assert_eq!(
        ask(&p, "svc.example.com", 443, "http", &sleep).1.as_deref(),
        Some("sleep")
    );
    assert_eq!(
        ask(
            &p,
            "svc.example.com",
            443,
            "http",
            &who("spiffe://cluster.local/ns/default/sa/sleepy")
        )
        .0,
        Verdict::Deny
    );
    assert_eq!(
        ask(
            &p,
            "svc.example.com",
            8080,
            "http",
            &who("spiffe://cluster.local/ns/team/sa/x")
        )
        .1
        .as_deref(),
        Some("team")
    );
    assert_eq!(
        ask(
            &p,
            "svc.example.com",
            8080,
            "http",
            &who("spiffe://cluster.local/ns/teamx/sa/x")
        )
        .0,
        Verdict::Deny
    );
    assert_eq!(
        ask(&p, "svc.example.com", 8080, "http", &anyone).0,
        Verdict::Deny
    );
}

#[test]
fn names_match_whatever_their_case_trailing_dot_or_script() {
    let p = policy("rules:\n  - {name: de, hosts: [\"BÜCHER.example.\"]}\n  - {name: any-de, hosts: [\"*.xn--bcher-kva.example\"]}\n");
    check(&p, "xn--bcher-kva.example", 80, Verdict::Allow, Some("de"));
    check(&p, "Bücher.Example.", 80, Verdict::Allow, Some("de"));
    check(&p, "WWW.bücher.example", 80, Verdict::Allow, Some("any-de"));
}

#[test]
fn an_ip_literal_matches_only_rules_that_list_it() {
    let p = policy("defaults: {mode: deny}\nrules:\n  - {name: any, hosts: [\"*\"]}\n  - {name: wild, hosts: [\"*.0.1.example\"]}\n  - {name: ip, hosts: [203.0.113.7, \"::ffff:198.51.100.1\"], ports: [443]}\n");
    check(&p, "203.0.113.7", 443, Verdict::Allow, Some("ip"));
    check(&p, "[::ffff:203.0.113.7]", 443, Verdict::Allow, Some("ip"));
    check(&p, "198.51.100.1", 443, Verdict::Allow, Some("ip"));
    check(&p, "203.0.113.7", 80, Verdict::Deny, None);
    check(&p, "203.0.113.8", 443, Verdict::Deny, None);
    check(&p, "a.example", 443, Verdict::Allow, Some("any"));
}

#[test]
fn the_mode_decides_when_no_rule_matches_and_audit_never_refuses() {
    let rules =
        "rules:\n  - {name: ok, hosts: [ok.com]}\n  - {name: no, hosts: [no.com], action: deny}\n";
    let modes = [
        ("deny", Verdict::Deny, Verdict::Deny),
        ("allow", Verdict::Allow, Verdict::Deny),
        ("audit", Verdict::WouldDeny, Verdict::WouldDeny),
    ];
    for (mode, unmatched, denied) in modes {
        let p = policy(&format!("defaults: {{mode: {mode}}}\n{rules}"));
        check(&p, "ok.com", 80, Verdict::Allow, Some("ok"));
        check(&p, "other.com", 80, unmatched, None);
        check(&p, "no.com", 80, denied, Some("no"));
    }
    let empty = Policy::empty();
    check(&empty, "ok.com", 80, Verdict::Deny, None);
    assert_eq!(
        empty
            .route(&empty.decide(&Query {
                host: &parse_host("ok.com").unwrap(),
                port: 80,
                listener: "http",
                source: &peer("10.0.0.1"),
            }))
            .connect_timeout,
        Duration::from_secs(5)
    );
}

#[test]
fn cidrs_match_ip_literal_destinations_the_longest_prefix_first() {
    let p = policy(&format!(
        "{LISTENERS}rules:
  - {{name: mongo-net, hosts: [203.0.113.0/24], ports: [27017]}}
  - {{name: quarantine, hosts: [203.0.113.16/28], action: deny}}
  - {{name: one-host, hosts: [203.0.113.20]}}
  - {{name: v6, hosts: [\"2001:db8::/32\"]}}
  - {{name: named, hosts: [db.example.com]}}
"
    ));
    use Verdict::{Allow, Deny};
    check(&p, "203.0.113.7", 27017, Allow, Some("mongo-net"));
    check(&p, "203.0.113.7", 80, Deny, None);
    check(&p, "203.0.113.17", 27017, Deny, Some("quarantine"));
    check(&p, "203.0.113.20", 27017, Allow, Some("one-host"));
    check(&p, "203.0.114.1", 27017, Deny, None);
    check(&p, "[2001:db8::7]", 443, Allow, Some("v6"));
    // A CIDR never matches a name, whatever it resolves to.
    check(&p, "db.example.com", 27017, Allow, Some("named"));
    check(&p, "other.example.com", 27017, Deny, None);
}

#[test]
fn a_cidr_with_host_bits_is_refused_and_a_full_prefix_is_an_address() {
    let errors = errors(&[(
        "p.yaml",
        &format!("{LISTENERS}rules:\n  - {{name: a, hosts: [203.0.113.7/24]}}\n"),
    )]);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("host bits set; the network is 203.0.113.0/24")),
        "{errors:?}"
    );
    let p = policy(&format!(
        "{LISTENERS}rules:\n  - {{name: a, hosts: [203.0.113.7/32]}}\n"
    ));
    check(&p, "203.0.113.7", 80, Verdict::Allow, Some("a"));
}
