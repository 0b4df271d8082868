//! Inbound TLS and mTLS: a listener terminating TLS from the mesh, the client
//! certificate's URI SAN as the source identity that rules match and the audit line
//! prints, refusals with their audit lines, and certificates reloaded from their files.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use egress_gateway::testing::TestGateway;
use egress_testkit::{wait_until_async, Issued, StubUpstream, TestCa, TestDns};

use crate::clients::{self, Client};
use crate::common::{Exposition, LOOPBACK};

const FORMAT: &str = "%PROTOCOL% %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% \
                      %DOWNSTREAM_PEER_URI_SAN% %REQUESTED_SERVER_NAME% %ROUTE_NAME%";
const GATEWAY_NAME: &str = "gateway.mesh.local";
const PAYMENTS: &str = "spiffe://cluster.local/ns/payments/sa/api";

struct Mesh {
    gateway: TestGateway,
    upstream: StubUpstream,
    ca: TestCa,
    _dns: TestDns,
    dir: tempfile::TempDir,
}

/// Writes the gateway's certificate and key, and the mesh CA, into `dir`.
fn write_certs(ca: &TestCa, dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (cert, key) = ca
        .issue_server(&[GATEWAY_NAME, "127.0.0.1"])
        .write_to(dir, "gateway")
        .unwrap();
    (cert, key, ca.write_cert(dir, "mesh-ca.pem").unwrap())
}

impl Mesh {
    /// A gateway whose `mesh` listener terminates TLS with files named by `tls` (a YAML
    /// flow mapping; `{DIR}` is a temporary directory holding the certificates).
    async fn start_with(tls: &str, certs_in_dir: bool) -> Mesh {
        Self::start_configured(tls, certs_in_dir, |_| {}).await
    }

    /// [`Mesh::start_with`], with bootstrap settings changed by `configure`.
    async fn start_configured(
        tls: &str,
        certs_in_dir: bool,
        configure: impl FnOnce(&mut egress_gateway::config::Config),
    ) -> Mesh {
        let ca = TestCa::named("mesh CA");
        let dir = tempfile::tempdir().unwrap();
        if certs_in_dir {
            write_certs(&ca, dir.path());
        }
        let upstream = StubUpstream::start().await;
        let dns = TestDns::start().await;
        dns.set("api.example.com", [LOOPBACK]);
        let tls = tls.replace("{DIR}", &dir.path().display().to_string());
        let policy = format!(
            r#"
defaults: {{mode: deny, allow_private: true}}
listeners:
  - {{name: mesh, port: 8443, protocol: http, tls: {tls}}}
rules:
  - {{name: payments, hosts: [api.example.com], sources: ["spiffe://cluster.local/ns/payments/*"]}}
"#
        );
        let gateway = TestGateway::builder(&policy)
            .dns(vec![dns.addr()])
            .audit_format(FORMAT)
            .configure(configure)
            .start()
            .await;
        Mesh {
            gateway,
            upstream,
            ca,
            _dns: dns,
            dir,
        }
    }

    async fn start(require_client_cert: bool) -> Mesh {
        Self::start_with(
            &format!(
                "{{cert: {{DIR}}/gateway.crt, key: {{DIR}}/gateway.key, client_ca: {{DIR}}/mesh-ca.pem, \
                 require_client_cert: {require_client_cert}}}"
            ),
            true,
        )
        .await
    }

    fn config(
        &self,
        trust: &TestCa,
        alpn: &[u8],
        identity: Option<&Issued>,
    ) -> Arc<rustls::ClientConfig> {
        trust.client_config(&[alpn], identity)
    }

    /// One GET through the mesh listener; `Err` when TLS or the exchange fails.
    async fn get(
        &self,
        config: Arc<rustls::ClientConfig>,
        h2: bool,
    ) -> Result<clients::Whole, String> {
        let stream = clients::tls(self.gateway.addr("mesh"), config, GATEWAY_NAME)
            .await
            .map_err(|e| e.to_string())?;
        let authority = format!("api.example.com:{}", self.upstream.port());
        let mut client = Client::over(stream, h2).await;
        let uri = if h2 {
            format!("https://{authority}/")
        } else {
            "/".to_owned()
        };
        client
            .get(&uri, &authority)
            .await
            .map_err(|e| e.to_string())
    }

    async fn audit(&self, n: usize) -> Vec<String> {
        let lines = self.gateway.wait_audit_lines(n).await;
        assert!(lines.len() >= n, "expected {n} audit lines, got {lines:#?}");
        lines[n - 1].split(' ').map(str::to_owned).collect()
    }
}

#[tokio::test]
async fn an_allowed_identity_passes_over_h2_and_http1_and_is_printed() {
    let mesh = Mesh::start(true).await;
    let client = mesh.ca.issue_client(PAYMENTS);
    let h2 = mesh
        .get(mesh.config(&mesh.ca, b"h2", Some(&client)), true)
        .await
        .unwrap();
    assert_eq!(h2.status, 200, "{}", h2.text());
    let h1 = mesh
        .get(mesh.config(&mesh.ca, b"http/1.1", Some(&client)), false)
        .await
        .unwrap();
    assert_eq!(h1.status, 200, "{}", h1.text());
    assert_eq!(
        mesh.audit(1).await,
        [
            "HTTP/2",
            "200",
            "-",
            "via_upstream",
            PAYMENTS,
            GATEWAY_NAME,
            "payments"
        ]
    );
    assert_eq!(
        mesh.audit(2).await,
        [
            "HTTP/1.1",
            "200",
            "-",
            "via_upstream",
            PAYMENTS,
            GATEWAY_NAME,
            "payments"
        ]
    );
    // The client certificate stays inside the mesh.
    assert!(mesh.upstream.requests()[0]
        .header("x-forwarded-client-cert")
        .is_none());
}

#[tokio::test]
async fn an_identity_no_rule_names_is_refused_with_its_name_in_the_line() {
    let mesh = Mesh::start(true).await;
    let other = mesh
        .ca
        .issue_client("spiffe://cluster.local/ns/default/sa/sleep");
    let response = mesh
        .get(mesh.config(&mesh.ca, b"h2", Some(&other)), true)
        .await
        .unwrap();
    assert_eq!(response.status, 403);
    assert_eq!(
        mesh.audit(1).await,
        [
            "HTTP/2",
            "403",
            "-",
            "rbac_access_denied_matched_policy[none]",
            "spiffe://cluster.local/ns/default/sa/sleep",
            GATEWAY_NAME,
            "-"
        ]
    );
    assert_eq!(mesh.upstream.request_count(), 0);
}

#[tokio::test]
async fn no_client_certificate_is_refused_at_the_handshake_with_an_audit_line() {
    let mesh = Mesh::start(true).await;
    let result = mesh
        .get(mesh.config(&mesh.ca, b"http/1.1", None), false)
        .await;
    assert!(
        result.is_err(),
        "served without a client certificate: {result:?}"
    );
    assert_eq!(
        mesh.audit(1).await,
        ["-", "0", "-", "client_certificate_required", "-", "-", "-"]
    );
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused() {
    let mesh = Mesh::start(true).await;
    let stranger = TestCa::named("stranger CA").issue_client(PAYMENTS);
    let result = mesh
        .get(mesh.config(&mesh.ca, b"h2", Some(&stranger)), true)
        .await;
    assert!(result.is_err(), "served a stranger: {result:?}");
    let line = mesh.audit(1).await;
    assert_eq!(line[..4], ["-", "0", "-", "client_certificate_refused"]);
}

#[tokio::test]
async fn an_optional_client_certificate_leaves_anonymous_clients_without_identity() {
    let mesh = Mesh::start(false).await;
    let response = mesh
        .get(mesh.config(&mesh.ca, b"h2", None), true)
        .await
        .unwrap();
    assert_eq!(response.status, 403, "the rule wants a payments identity");
    assert_eq!(
        mesh.audit(1).await[..5],
        [
            "HTTP/2",
            "403",
            "-",
            "rbac_access_denied_matched_policy[none]",
            "-"
        ]
    );
    let client = mesh.ca.issue_client(PAYMENTS);
    let response = mesh
        .get(mesh.config(&mesh.ca, b"h2", Some(&client)), true)
        .await
        .unwrap();
    assert_eq!(response.status, 200);
}

#[tokio::test]
async fn a_replaced_certificate_serves_without_a_restart() {
    let mesh = Mesh::start(true).await;
    let client = mesh.ca.issue_client(PAYMENTS);
    let first = mesh
        .get(mesh.config(&mesh.ca, b"h2", Some(&client)), true)
        .await
        .unwrap();
    assert_eq!(first.status, 200);

    // The gateway's certificate is rotated to one from a new CA; client_ca is unchanged.
    let rotated = TestCa::named("rotated CA");
    let (cert, key) = (
        mesh.dir.path().join("gateway.crt"),
        mesh.dir.path().join("gateway.key"),
    );
    let issued = rotated.issue_server(&[GATEWAY_NAME]);
    std::fs::write(&key, &issued.key_pem).unwrap();
    std::fs::write(&cert, &issued.cert_pem).unwrap();
    let served = wait_until_async(Duration::from_secs(10), || async {
        let config = mesh.config(&rotated, b"h2", Some(&client));
        matches!(mesh.get(config, true).await, Ok(r) if r.status == 200)
    })
    .await;
    assert!(served, "the rotated certificate was never served");
    let old = mesh
        .get(mesh.config(&mesh.ca, b"h2", Some(&client)), true)
        .await;
    assert!(old.is_err(), "the old certificate is still served");
}

#[tokio::test]
async fn relative_paths_are_in_the_policy_directory_and_load_when_they_appear() {
    let mesh = Mesh::start_with(
        "{cert: certs/gateway.crt, key: certs/gateway.key, client_ca: certs/mesh-ca.pem, require_client_cert: true}",
        false,
    )
    .await;
    let client = mesh.ca.issue_client(PAYMENTS);
    let refused = mesh
        .get(mesh.config(&mesh.ca, b"h2", Some(&client)), true)
        .await;
    assert!(refused.is_err());
    let line = mesh.audit(1).await;
    assert_eq!(line[..4], ["-", "0", "-", "tls_certificate_unavailable"]);

    let certs = mesh.gateway.policy_dir().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    write_certs(&mesh.ca, &certs);
    let served = wait_until_async(Duration::from_secs(10), || async {
        let config = mesh.config(&mesh.ca, b"h2", Some(&client));
        matches!(mesh.get(config, true).await, Ok(r) if r.status == 200)
    })
    .await;
    assert!(served, "the certificate written later was never served");
}

#[tokio::test]
async fn a_listener_without_client_ca_terminates_tls_for_anyone() {
    let mesh = Mesh::start_with("{cert: {DIR}/gateway.crt, key: {DIR}/gateway.key}", true).await;
    // A client certificate is not asked for, so no identity: the payments rule does not
    // match, and the line says who asked only by address.
    let client = mesh.ca.issue_client(PAYMENTS);
    let response = mesh
        .get(mesh.config(&mesh.ca, b"h2", Some(&client)), true)
        .await
        .unwrap();
    assert_eq!(response.status, 403);
    assert_eq!(
        mesh.audit(1).await,
        [
            "HTTP/2",
            "403",
            "-",
            "rbac_access_denied_matched_policy[none]",
            "-",
            GATEWAY_NAME,
            "-"
        ]
    );
}

#[tokio::test]
async fn the_served_certificate_expiry_is_exported_and_follows_a_rotation() {
    let mesh = Mesh::start(false).await;
    let expiry = |e: &Exposition| {
        e.value_or_zero(
            "egress_tls_certificate_expiry_timestamp_seconds",
            &[r#"listener="mesh""#],
        )
    };
    // issue_server certificates are valid until 2100-01-01T00:00:00Z. The listener
    // loads its files as it starts accepting.
    let e = Exposition::wait(&mesh.gateway, |e| expiry(e) > 0.0).await;
    assert_eq!(expiry(&e), 4_102_444_800.0, "{}", e.text);

    // Rotated to one that expired on 2001-01-01: files are read again as connections
    // arrive, so connect until the gauge follows.
    let issued = mesh.ca.issue_expired_server(&[GATEWAY_NAME]);
    std::fs::write(mesh.dir.path().join("gateway.key"), &issued.key_pem).unwrap();
    std::fs::write(mesh.dir.path().join("gateway.crt"), &issued.cert_pem).unwrap();
    let followed = wait_until_async(Duration::from_secs(10), || async {
        let _ = egress_testkit::client::connect(mesh.gateway.addr("mesh")).await;
        expiry(&Exposition::scrape(&mesh.gateway).await) == 978_307_200.0
    })
    .await;
    assert!(
        followed,
        "the gauge still says the old certificate's expiry"
    );
}

#[tokio::test]
async fn failed_handshakes_are_counted_by_reason() {
    let mesh = Mesh::start(true).await;
    let anonymous = mesh.config(&mesh.ca, b"http/1.1", None);
    assert!(mesh.get(anonymous, false).await.is_err());
    let stranger = TestCa::named("stranger CA").issue_client(PAYMENTS);
    let refused = mesh.config(&mesh.ca, b"h2", Some(&stranger));
    assert!(mesh.get(refused, true).await.is_err());
    // Plain HTTP to a TLS listener.
    let plain = b"GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n";
    let _ = egress_testkit::raw_request(mesh.gateway.addr("mesh"), plain).await;
    mesh.audit(3).await;

    let failures = |e: &Exposition, reason: &str| {
        let reason = format!(r#"reason="{reason}""#);
        e.value(
            "egress_tls_handshake_failures_total",
            &[r#"side="inbound""#, &reason],
        )
    };
    let e = Exposition::wait(&mesh.gateway, |e| {
        e.value_or_zero(
            "egress_tls_handshake_failures_total",
            &[r#"side="inbound""#],
        ) >= 3.0
    })
    .await;
    assert_eq!(failures(&e, "client_certificate_required"), 1.0);
    assert_eq!(failures(&e, "client_certificate_refused"), 1.0);
    assert_eq!(failures(&e, "tls_handshake_failed"), 1.0);
    assert_eq!(failures(&e, "tls_handshake_timeout"), 0.0);
}

#[tokio::test]
async fn connections_over_an_identitys_limit_are_closed_with_their_line() {
    let tls = "{cert: {DIR}/gateway.crt, key: {DIR}/gateway.key, client_ca: {DIR}/mesh-ca.pem, \
               require_client_cert: true}";
    let mesh = Mesh::start_configured(tls, true, |c| {
        c.limits.max_connections_per_identity = Some(1);
    })
    .await;
    let payments = mesh.ca.issue_client(PAYMENTS);
    let config = mesh.config(&mesh.ca, b"http/1.1", Some(&payments));
    // The first connection stays open.
    let stream = clients::tls(mesh.gateway.addr("mesh"), Arc::clone(&config), GATEWAY_NAME)
        .await
        .unwrap();
    let mut held = Client::over(stream, false).await;
    let authority = format!("api.example.com:{}", mesh.upstream.port());
    assert_eq!(held.get("/", &authority).await.unwrap().status, 200);
    // The same identity again: the handshake completes, then the connection is closed.
    assert!(mesh.get(Arc::clone(&config), false).await.is_err());
    // Another identity is not held back by the first one's limit.
    let other = mesh
        .ca
        .issue_client("spiffe://cluster.local/ns/payments/sa/batch");
    let answer = mesh
        .get(mesh.config(&mesh.ca, b"http/1.1", Some(&other)), false)
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    let lines = mesh.gateway.wait_audit_lines(3).await;
    let refused: Vec<&String> = lines.iter().filter(|l| l.contains("overflow")).collect();
    assert_eq!(refused.len(), 1, "{lines:#?}");
    assert_eq!(
        refused[0].split(' ').collect::<Vec<_>>(),
        [
            "-",
            "0",
            "UO",
            "overflow{max_connections_per_identity}",
            PAYMENTS,
            "-",
            "-"
        ]
    );
    let m = Exposition::wait(&mesh.gateway, |m| {
        m.value_or_zero(
            "egress_connections_refused_total",
            &["reason=\"max_connections_per_identity\""],
        ) >= 1.0
    })
    .await;
    assert_eq!(
        m.value(
            "egress_connections_refused_total",
            &[
                "listener=\"mesh\"",
                "reason=\"max_connections_per_identity\""
            ]
        ),
        1.0
    );
    // Closing the first lets the identity in again.
    drop(held);
    let back = wait_until_async(Duration::from_secs(5), || async {
        mesh.get(Arc::clone(&config), false).await.is_ok()
    })
    .await;
    assert!(back);
}
