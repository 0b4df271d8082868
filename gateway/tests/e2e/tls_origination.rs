//! TLS origination: plain HTTP from the mesh, TLS to the upstream, verified against the
//! web PKI roots plus the rule's `ca_file`, SNI = the destination host. A certificate
//! that does not verify is a 503 UF naming the TLS error.

use egress_gateway::testing::TestGateway;
use egress_testkit::{StubUpstream, TestCa, TestDns};
use http::Version;

use crate::common::{Exposition, IstioLine, LOOPBACK};

struct Setup {
    gateway: TestGateway,
    upstream: StubUpstream,
    _dns: TestDns,
    _dir: tempfile::TempDir,
}

impl Setup {
    /// A TLS stub whose certificate `signer` issued for `names`, and a gateway whose
    /// rule originates TLS trusting `trusted` (or only the web PKI when `None`).
    async fn start(
        signer: &TestCa,
        names: &[&str],
        trusted: Option<&TestCa>,
        extra: &str,
    ) -> Setup {
        let upstream = StubUpstream::start_tls(&signer.issue_server(names)).await;
        let dns = TestDns::start().await;
        for name in ["api.example.com", "other.example.com"] {
            dns.set(name, [LOOPBACK]);
        }
        let dir = tempfile::tempdir().unwrap();
        let ca_file = match trusted {
            Some(ca) => format!(
                ", ca_file: \"{}\"",
                ca.write_cert(dir.path(), "upstream-ca.pem")
                    .unwrap()
                    .display()
            ),
            None => String::new(),
        };
        let policy = format!(
            r#"
defaults: {{mode: deny, allow_private: true}}
listeners: [{{name: http, port: 8080, protocol: http}}]
rules:
  - {{name: secure, hosts: [api.example.com, other.example.com], tls_origination: true{ca_file}{extra}}}
"#
        );
        let gateway = TestGateway::builder(&policy)
            .dns(vec![dns.addr()])
            .start()
            .await;
        Setup {
            gateway,
            upstream,
            _dns: dns,
            _dir: dir,
        }
    }

    async fn get(&self, host: &str, path: &str) -> egress_testkit::RawResponse {
        let authority = format!("{host}:{}", self.upstream.port());
        egress_testkit::http_get(self.gateway.addr("http"), &authority, path)
            .await
            .unwrap()
    }

    async fn audit(&self, n: usize) -> IstioLine {
        let lines = self.gateway.wait_audit_lines(n).await;
        assert!(lines.len() >= n, "expected {n} audit lines, got {lines:#?}");
        IstioLine::parse(&lines[n - 1])
    }
}

#[tokio::test]
async fn plain_http_in_verified_tls_out_with_sni_and_alpn_h2() {
    let ca = TestCa::new();
    let s = Setup::start(&ca, &["api.example.com"], Some(&ca), "").await;
    let response = s.get("api.example.com", "/anything").await;
    assert_eq!(response.status, Some(200), "{}", response.text);
    assert_eq!(response.header("x-stub"), Some("echo"));
    assert_eq!(
        s.upstream.server_names(),
        vec![Some("api.example.com".to_owned())]
    );
    // The stub offers h2 by ALPN, and origination takes it.
    let received = &s.upstream.requests()[0];
    assert_eq!(received.version, Version::HTTP_2);
    assert_eq!(
        received.authority.as_deref(),
        Some(format!("api.example.com:{}", s.upstream.port()).as_str())
    );
    let line = s.audit(1).await;
    assert_eq!(line.code, "200");
    assert_eq!(line.details, "via_upstream");
    assert_eq!(line.protocol, "HTTP/1.1");
    assert_eq!(line.upstream_host, s.upstream.addr().to_string());
    assert_eq!(
        line.cluster,
        format!("outbound|{}||api.example.com", s.upstream.port())
    );
    assert_eq!(line.route, "secure");
}

#[tokio::test]
async fn an_upstream_certificate_from_an_untrusted_ca_is_503_uf() {
    let ca = TestCa::new();
    let other = TestCa::named("another CA");
    let s = Setup::start(&other, &["api.example.com"], Some(&ca), "").await;
    let response = s.get("api.example.com", "/").await;
    assert_eq!(response.status, Some(503), "{}", response.text);
    assert!(
        response.body().contains("unknown_issuer"),
        "{}",
        response.body()
    );
    let line = s.audit(1).await;
    assert_eq!(line.code, "503");
    assert_eq!(line.flags, "UF");
    assert_eq!(
        line.details,
        "upstream_reset_before_response_started{connection_failure,TLS_error:CERTIFICATE_VERIFY_FAILED:unknown_issuer}"
    );
    assert_eq!(
        line.transport_failure,
        "TLS_error:CERTIFICATE_VERIFY_FAILED:unknown_issuer"
    );
    assert_eq!(line.upstream_host, s.upstream.addr().to_string());
    assert_eq!(s.upstream.request_count(), 0);
    let e = Exposition::scrape(&s.gateway).await;
    let failed = |reason: &str| {
        let reason = format!(r#"reason="{reason}""#);
        e.value(
            "egress_tls_handshake_failures_total",
            &[r#"side="origination""#, &reason],
        )
    };
    assert_eq!(failed("certificate_verify_failed"), 1.0);
    assert_eq!(failed("handshake_failed"), 0.0);
    assert_eq!(
        e.value(
            "egress_upstream_connect_failures_total",
            &[r#"reason="tls""#]
        ),
        1.0
    );
}

#[tokio::test]
async fn without_ca_file_only_the_web_pki_is_trusted() {
    let ca = TestCa::new();
    let s = Setup::start(&ca, &["api.example.com"], None, "").await;
    let response = s.get("api.example.com", "/").await;
    assert_eq!(response.status, Some(503), "{}", response.text);
    assert_eq!(
        s.audit(1).await.transport_failure,
        "TLS_error:CERTIFICATE_VERIFY_FAILED:unknown_issuer"
    );
}

#[tokio::test]
async fn a_certificate_for_another_name_is_503_uf() {
    let ca = TestCa::new();
    let s = Setup::start(&ca, &["www.example.net"], Some(&ca), "").await;
    let response = s.get("api.example.com", "/").await;
    assert_eq!(response.status, Some(503), "{}", response.text);
    let line = s.audit(1).await;
    assert_eq!(line.flags, "UF");
    assert_eq!(
        line.transport_failure,
        "TLS_error:CERTIFICATE_VERIFY_FAILED:certificate_not_valid_for_name"
    );
    assert_eq!(
        s.upstream.server_names().len(),
        0,
        "no TLS session was completed"
    );
}

#[tokio::test]
async fn connections_are_pooled_per_server_name_never_shared_across_names() {
    let ca = TestCa::new();
    let s = Setup::start(
        &ca,
        &["api.example.com", "other.example.com"],
        Some(&ca),
        "",
    )
    .await;
    for host in ["api.example.com", "other.example.com", "api.example.com"] {
        let response = s.get(host, "/").await;
        assert_eq!(response.status, Some(200), "{}", response.text);
    }
    let mut names = s.upstream.server_names();
    names.sort();
    assert_eq!(
        names,
        vec![
            Some("api.example.com".to_owned()),
            Some("other.example.com".to_owned())
        ],
        "one TLS connection per name, the third request reused the first"
    );
}

#[tokio::test]
async fn upstream_protocol_h2_under_tls_offers_only_h2() {
    let ca = TestCa::new();
    let s = Setup::start(
        &ca,
        &["api.example.com"],
        Some(&ca),
        ", upstream_protocol: h2",
    )
    .await;
    let response = s.get("api.example.com", "/status/204").await;
    assert_eq!(response.status, Some(204), "{}", response.text);
    assert_eq!(s.upstream.requests()[0].version, Version::HTTP_2);
}
