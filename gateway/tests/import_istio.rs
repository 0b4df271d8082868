//! The Istio import, decision by decision: every reference file and every seed's YAML
//! is imported, the policy compiled, and each host and port the Istio input allows or
//! denies is decided the same (or the report says why it cannot be).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail by panicking"
)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use egress_gateway::import::{istio, Imported};
use egress_gateway::policy::{compile, Policy, PolicyFile, Query, Verdict};
use egress_gateway::source::Source;
use egress_gateway::wire::host::parse_host;

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/istio")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn import(text: &str) -> (Imported, Policy) {
    let imported = istio(text).unwrap();
    let file = PolicyFile {
        name: "imported.yaml".to_owned(),
        text: imported.policy.clone().into(),
    };
    let policy = compile(&[file]).unwrap_or_else(|e| panic!("{e}\n{}", imported.policy));
    (imported, policy)
}

/// Allowed for `source` (an identity or an address; none = an unknown client)?
fn allows(policy: &Policy, host: &str, port: u16, source: Option<&str>) -> bool {
    let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)), 40000);
    let source = match source {
        Some(id) if id.contains("://") => Source {
            addr,
            identity: Some(id.to_owned()),
        },
        Some(ip) => Source::from_addr(SocketAddr::new(ip.parse().unwrap(), 40000)),
        None => Source::from_addr(addr),
    };
    let host = parse_host(host).unwrap();
    // Imported rules name no listeners: every listener decides alike.
    let listener = policy.listeners().first().map_or("", |l| l.name.as_str());
    let query = Query {
        host: &host,
        port,
        listener,
        source: &source,
    };
    policy.decide(&query).verdict == Verdict::Allow
}

/// Asserts each (host, port, source, allowed) of `cases`.
fn check(name: &str, cases: &[(&str, u16, Option<&str>, bool)]) -> (Imported, Policy) {
    let (imported, policy) = import(&fixture(name));
    for (host, port, source, allowed) in cases {
        assert_eq!(
            allows(&policy, host, *port, *source),
            *allowed,
            "{name}: {host}:{port} from {source:?} should be {}\n{}",
            if *allowed { "allowed" } else { "denied" },
            imported.policy
        );
    }
    (imported, policy)
}

fn rule_for<'a>(policy: &'a Policy, host: &str, port: u16) -> &'a egress_gateway::policy::Rule {
    let host = parse_host(host).unwrap();
    let source = Source::from_addr(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 1));
    let query = Query {
        host: &host,
        port,
        listener: "",
        source: &source,
    };
    let decision = policy.decide(&query);
    let rule = decision.rule.expect("a rule decides");
    policy.rule(&rule.name).unwrap()
}

fn has_note(imported: &Imported, dropped: bool, text: &str) -> bool {
    imported
        .notes
        .iter()
        .any(|n| n.dropped == dropped && (n.message.contains(text) || n.field.contains(text)))
}

#[test]
fn ref_01_hosts_addresses_and_cidrs_pass() {
    let (imported, _) = check(
        "ref-01-serviceentry-https-and-tcp-cidrs.yaml",
        &[
            ("github.com", 443, None, true),
            ("github.com", 80, None, false),
            ("13.229.188.59", 22, None, true),
            ("192.30.252.153", 22, None, true),
            ("13.229.188.59", 443, None, false),
            // Istio allows the whole /20, and so does the imported rule.
            ("140.82.112.5", 22, None, true),
            ("140.82.128.1", 22, None, false),
            ("example.com", 443, None, false),
        ],
    );
    assert!(!has_note(&imported, true, "140.82.112.0/20"));
    assert!(!has_note(&imported, true, "192.30.252.0/22"));
}

#[test]
fn ref_02_port_80_is_originated_to_443() {
    let (_, policy) = check(
        "ref-02-sidecar-tls-origination.yaml",
        &[
            ("www.googleapis.com", 80, None, true),
            ("www.googleapis.com", 443, None, true),
            ("www.googleapis.com", 8080, None, false),
            ("googleapis.com", 443, None, false),
        ],
    );
    assert!(
        rule_for(&policy, "www.googleapis.com", 80)
            .route
            .tls_origination
    );
    assert!(
        !rule_for(&policy, "www.googleapis.com", 443)
            .route
            .tls_origination
    );
}

#[test]
fn ref_03_authorization_policy_keeps_principals_and_denies_what_it_cannot_check() {
    let a = Some("spiffe://cluster.local/ns/ns1/sa/a");
    let other = Some("spiffe://cluster.local/ns/ns1/sa/other");
    let (imported, _) = check(
        "ref-03-egress-gateway-authorizationpolicy.yaml",
        &[
            ("a-ns1-only.com", 443, a, true),
            ("a-ns1-only.com", 443, other, false),
            ("a-ns1-only.com", 443, None, false),
            // JWT claims cannot be checked: these stay denied.
            ("jwt-only.com", 443, a, false),
            ("jwt-and-a-ns1-only.com", 443, a, false),
            // Istio allows only the path /allow; paths cannot be checked: denied.
            ("www.company.com", 80, a, false),
            ("www.company.com", 80, None, false),
            ("elsewhere.com", 443, a, false),
        ],
    );
    assert!(has_note(&imported, true, "requestPrincipals (JWT)"));
    assert!(has_note(&imported, true, "needs paths"));
    assert!(has_note(
        &imported,
        true,
        "RequestAuthentication is not translated"
    ));
    assert!(has_note(&imported, false, "keep this half in the mesh"));
    assert!(has_note(&imported, true, "inbound TLS (ISTIO_MUTUAL)"));
}

#[test]
fn ref_04_passthrough_by_sni() {
    let (imported, policy) = check(
        "ref-04-egress-gateway-https-passthrough.yaml",
        &[
            ("edition.cnn.com", 443, None, true),
            ("edition.cnn.com", 80, None, false),
            ("www.cnn.com", 443, None, false),
        ],
    );
    let tls = policy
        .listeners()
        .iter()
        .find(|l| l.port == 8443)
        .expect("a tls listener on 8443");
    assert_eq!(tls.protocol, egress_gateway::policy::Protocol::Tls);
    assert!(has_note(&imported, false, "keep this half in the mesh"));
    assert_eq!(imported.dropped(), 0, "{:#?}", imported.notes);
}

#[test]
fn ref_05_wildcard_host() {
    let (imported, _) = check(
        "ref-05-egress-gateway-wildcard-host.yaml",
        &[
            ("en.wikipedia.org", 443, None, true),
            ("www.wikipedia.org", 443, None, true),
            ("de.m.wikipedia.org", 443, None, true),
            ("wikipedia.org", 443, None, false),
            ("en.wikipedia.org", 80, None, false),
        ],
    );
    assert!(has_note(&imported, true, "is routed to www.wikipedia.org"));
}

#[test]
fn ref_06_gateway_tls_origination() {
    let (_, policy) = check(
        "ref-06-egress-gateway-tls-origination.yaml",
        &[
            ("edition.cnn.com", 80, None, true),
            ("edition.cnn.com", 443, None, true),
            ("cnn.com", 80, None, false),
            ("edition.cnn.com", 8080, None, false),
        ],
    );
    assert!(
        rule_for(&policy, "edition.cnn.com", 80)
            .route
            .tls_origination
    );
    assert!(
        !rule_for(&policy, "edition.cnn.com", 443)
            .route
            .tls_origination
    );
}

#[test]
fn seeds_decide_as_their_articles_say() {
    check(
        "seed-000-aliyun-sms.yaml",
        &[
            ("dysmsapi.aliyuncs.com", 80, None, true),
            ("dysmsapi.aliyuncs.com", 443, None, false),
            ("ecs.aliyuncs.com", 80, None, false),
        ],
    );
    for name in [
        "seed-001-baidu-egress-gateway.yaml",
        "seed-001-baidu-commented.yaml",
    ] {
        let (imported, _) = check(
            name,
            &[
                ("www.baidu.com", 80, None, true),
                ("www.baidu.com", 443, None, false),
                ("baidu.com", 80, None, false),
            ],
        );
        assert_eq!(imported.dropped(), 0, "{name}: {:#?}", imported.notes);
    }
    check(
        "seed-002-baidu-tls.yaml",
        &[
            ("www.baidu.com", 443, None, true),
            ("www.baidu.com", 80, None, false),
        ],
    );
    check(
        "seed-003-cnn-egress-gateway.yaml",
        &[
            ("edition.cnn.com", 80, None, true),
            ("edition.cnn.com", 443, None, true),
            ("money.cnn.com", 80, None, false),
        ],
    );
    check(
        "seed-004-dns-auto-allocate.yaml",
        &[
            (
                "mysql\u{2013}instance1.us-east-1.rds.amazonaws.com",
                3306,
                None,
                true,
            ),
            (
                "mysql\u{2013}instance2.us-east-1.rds.amazonaws.com",
                3306,
                None,
                true,
            ),
            (
                "mysql\u{2013}instance1.us-east-1.rds.amazonaws.com",
                3307,
                None,
                false,
            ),
            (
                "mysql-instance1.us-east-1.rds.amazonaws.com",
                3306,
                None,
                false,
            ),
        ],
    );
}

#[test]
fn seed_002_route_timeout_becomes_the_request_timeout() {
    let (_, policy) = check(
        "seed-002-httpbin-timeout.yaml",
        &[
            ("httpbin.org", 80, None, true),
            ("httpbin.org", 443, None, false),
        ],
    );
    let rule = rule_for(&policy, "httpbin.org", 80);
    assert_eq!(
        rule.route.request_timeout,
        Some(std::time::Duration::from_secs(3))
    );
}

#[test]
fn every_rule_names_its_source_and_the_output_is_stable() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/istio");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    assert!(names.len() >= 13);
    for path in names {
        let text = std::fs::read_to_string(&path).unwrap();
        let (first, policy) = import(&text);
        let second = istio(&text).unwrap();
        assert_eq!(first.policy, second.policy, "{}", path.display());
        assert_eq!(first.notes, second.notes, "{}", path.display());
        assert!(
            !policy.rules().is_empty(),
            "{}: no rules\n{}",
            path.display(),
            first.policy
        );
        let rules = first
            .policy
            .split("\nrules:\n")
            .nth(1)
            .expect("a rules section");
        let lines: Vec<&str> = rules.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if line.starts_with("  - name:") {
                assert!(
                    i > 0 && lines[i - 1].starts_with("  # from "),
                    "{}: a rule without its source comment\n{}",
                    path.display(),
                    first.policy
                );
            }
        }
    }
}

#[test]
fn the_fixtures_are_the_shared_reference_files() {
    let shared =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/reference/istio-yaml");
    let Ok(entries) = std::fs::read_dir(&shared) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".tmpl") {
            continue;
        }
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            fixture(&format!("ref-{name}")),
            "{name} changed: copy it into tests/fixtures/istio again"
        );
    }
}

const EXAMPLE_SE: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: example, namespace: shop}
spec:
  hosts: [api.example.com, www.example.com]
  ports: [{number: 443, name: https, protocol: HTTPS}]
  resolution: DNS
";

#[test]
fn a_deny_policy_overrides_the_more_specific_allows_it_covers() {
    let text = format!(
        "{EXAMPLE_SE}---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: no-example-from-test, namespace: istio-system}}
spec:
  action: DENY
  rules:
  - from: [{{source: {{namespaces: [test]}}}}]
    to: [{{operation: {{hosts: ['*.example.com']}}}}]
"
    );
    let (imported, policy) = import(&text);
    let test = Some("spiffe://cluster.local/ns/test/sa/default");
    let prod = Some("spiffe://cluster.local/ns/prod/sa/default");
    for host in ["api.example.com", "www.example.com"] {
        assert!(!allows(&policy, host, 443, test), "{}", imported.policy);
        assert!(allows(&policy, host, 443, prod), "{}", imported.policy);
    }
    assert!(!allows(&policy, "other.example.com", 443, prod));
    assert_eq!(imported.dropped(), 0, "{:#?}", imported.notes);
}

#[test]
fn static_endpoints_take_their_mapped_ports_and_connect_timeouts_apply() {
    let text = "apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: legacy}
spec:
  hosts: [legacy.internal.example]
  ports: [{number: 8443, name: tls, protocol: TLS}]
  resolution: STATIC
  endpoints:
  - address: 203.0.113.7
    ports: {tls: 9443}
  - address: 203.0.113.8
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: legacy}
spec:
  host: legacy.internal.example
  trafficPolicy:
    connectionPool: {tcp: {connectTimeout: 1.5s, maxConnections: 10}}
    tls: {mode: MUTUAL, clientCertificate: /etc/certs/c.pem}
";
    let (imported, policy) = import(text);
    assert!(allows(&policy, "legacy.internal.example", 8443, None));
    let rule = rule_for(&policy, "legacy.internal.example", 8443);
    let endpoints: Vec<String> = rule
        .route
        .endpoint_addrs(8443)
        .map(|a| a.to_string())
        .collect();
    assert_eq!(endpoints, ["203.0.113.7:9443", "203.0.113.8:8443"]);
    assert_eq!(
        rule.route.connect_timeout,
        std::time::Duration::from_millis(1500)
    );
    assert!(has_note(&imported, true, "maxConnections"));
    assert!(has_note(
        &imported,
        true,
        "client certificates for TLS origination are not supported yet"
    ));
}

#[test]
fn a_tcp_server_and_route_become_a_tcp_listener_and_retries_are_reported() {
    let text = "apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata: {name: mysql}
spec:
  hosts: [db.example.com]
  ports: [{number: 3306, name: tcp-mysql, protocol: TCP}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata: {name: egress}
spec:
  selector: {istio: egressgateway}
  servers:
  - port: {number: 3306, name: tcp-mysql, protocol: TCP}
    hosts: ['*']
  - port: {number: 27017, name: mongo, protocol: MONGO}
    hosts: ['*']
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: mysql}
spec:
  hosts: [db.example.com]
  gateways: [mesh, egress]
  tcp:
  - match: [{gateways: [mesh], port: 3306}]
    route: [{destination: {host: istio-egressgateway.istio-system.svc.cluster.local, port: {number: 3306}}}]
  - match: [{gateways: [egress], port: 3306}]
    route: [{destination: {host: db.example.com, port: {number: 3306}}}]
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: api}
spec:
  hosts: [db.example.com]
  http:
  - retries: {attempts: 3}
    timeout: 0.5s
    route: [{destination: {host: db.example.com}}]
";
    let (imported, policy) = import(text);
    let tcp = policy.listener("tcp-mysql").expect("a tcp listener");
    assert_eq!(tcp.port, 3306);
    assert_eq!(
        tcp.forward_to.as_ref().map(|(h, p)| format!("{h}:{p}")),
        Some("db.example.com:3306".to_owned())
    );
    assert!(policy.listener("mongo").is_none(), "{}", imported.policy);
    assert!(has_note(
        &imported,
        true,
        "TCP port 27017: no VirtualService tcp route"
    ));
    assert!(has_note(&imported, true, "retries are not supported"));
    assert!(allows(&policy, "db.example.com", 3306, None));
    assert!(!allows(&policy, "db.example.com", 3307, None));
    let rule = rule_for(&policy, "db.example.com", 3306);
    assert_eq!(
        rule.route.request_timeout,
        Some(std::time::Duration::from_millis(500))
    );
}
