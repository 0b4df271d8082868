//! What every tunnel shares: interim audit lines while it lasts, the idle timeout, and
//! re-decision on a policy change that closes only what the new policy denies.

use std::time::Duration;

use egress_testkit::KeepAliveClient;

use crate::common::{IstioLine, Scenario};
use crate::tls_scenario::{TlsHttp, TlsScenario, TWO_RULES};

#[tokio::test]
async fn a_long_tunnel_writes_interim_lines_then_its_final_line() {
    let s = TlsScenario::start_with(TWO_RULES, |c| {
        c.audit.flush_interval = Duration::from_millis(150);
    })
    .await;
    let mut client = s.client("api.example.com").await.unwrap();
    assert_eq!(client.get("/first").await.unwrap().0, 200);
    let first = s.wait_line(|l| l.details == "tunnel_interim").await;
    assert_eq!(first.termination, "-");
    assert_eq!(first.sni, "api.example.com");
    assert_eq!(first.route, "api");
    assert_eq!(first.code, "0");
    let bytes_at_first: u64 = first.bytes_sent.parse().unwrap();
    assert!(bytes_at_first > 0);
    // More traffic, and more interim lines counting it.
    assert_eq!(client.get("/bytes/5000").await.unwrap().0, 200);
    let later = s
        .wait_line(|l| {
            l.details == "tunnel_interim"
                && l.bytes_sent.parse::<u64>().unwrap() > bytes_at_first + 5000
        })
        .await;
    assert!(later.duration_ms() >= first.duration_ms());
    drop(client);
    let last = s
        .wait_line(|l| l.details == "-" && l.sni == "api.example.com")
        .await;
    assert!(last.bytes_sent.parse::<u64>().unwrap() >= later.bytes_sent.parse().unwrap());
    assert_eq!(last.termination, "-");
}

#[tokio::test]
async fn a_reload_revokes_the_tunnel_it_denies_and_keeps_the_other() {
    let s = TlsScenario::start(TWO_RULES).await;
    let mut kept = s.client("api.example.com").await.unwrap();
    let mut revoked = s.client("other.example.com").await.unwrap();
    assert_eq!(kept.get("/before").await.unwrap().0, 200);
    assert_eq!(revoked.get("/before").await.unwrap().0, 200);
    let version = s.gateway.policy_version();

    let port = s.upstream.port();
    s.gateway.write_policy(
        "policy.yaml",
        &format!(
            r#"
defaults: {{mode: deny, allow_private: true}}
listeners: [{{name: tls, port: 8443, protocol: tls, target_port: {port}}}]
rules:
  - {{name: api, hosts: [api.example.com], ports: [{port}]}}
"#
        ),
    );
    assert!(
        s.gateway
            .wait_for_version(version + 1, Duration::from_secs(10))
            .await
    );
    let line = s.wait_line(|l| l.termination == "policy_revoked").await;
    assert_eq!(line.sni, "other.example.com");
    assert_eq!(line.route, "other");
    assert!(line.bytes_sent.parse::<u64>().unwrap() > 0);
    assert!(egress_testkit::wait_until(Duration::from_secs(10), || revoked.is_closed()).await);
    assert!(revoked.get("/after").await.is_err());

    // The allowed tunnel was never touched: same connection, still working.
    assert_eq!(kept.get("/after").await.unwrap().0, 200);
    assert!(!kept.is_closed());
    let lines: Vec<IstioLine> = s.audit_lines().await;
    assert!(
        lines.iter().all(|l| l.sni != "api.example.com"),
        "{lines:#?}"
    );
    // One TLS connection for each client, none reopened.
    assert_eq!(s.upstream.connection_count(), 2);
}

#[tokio::test]
async fn an_idle_tunnel_is_closed_with_idle_timeout() {
    let s = Scenario::start(
        r#"
defaults: {mode: deny, allow_private: true}
listeners:
  - {name: db, port: 13306, protocol: tcp, forward_to: "api.example.com:{PORT}"}
rules:
  - {name: db, hosts: [api.example.com], idle_timeout: 300ms}
"#,
    )
    .await;
    let mut client = KeepAliveClient::connect(s.gateway.addr("db"))
        .await
        .unwrap();
    assert_eq!(client.get("/").await.unwrap().status, 200);
    assert!(egress_testkit::wait_until(Duration::from_secs(10), || client.is_closed()).await);
    let line = s.audit(1).await;
    assert_eq!(line.termination, "idle_timeout");
    assert_eq!(line.route, "db");
    assert!(line.duration_ms() >= 300, "{line:?}");
}

/// Not a test: a measurement, run by hand in release mode (see the README), of 1 MiB
/// responses over TLS straight to the stub and through the `tls` listener. Prints the
/// figures; asserts only that every response arrived whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run with --release --ignored --nocapture"]
async fn measure_tls_passthrough_throughput() {
    const MIB: usize = 1024 * 1024;
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(300);
    let s = TlsScenario::start(TWO_RULES).await;
    for (label, addr) in [("direct", s.upstream.addr()), ("tls listener", s.tls())] {
        for connections in [1usize, 4] {
            let mut clients = Vec::new();
            for _ in 0..connections {
                let client = TlsHttp::connect(addr, "api.example.com", s.client_config())
                    .await
                    .unwrap();
                clients.push(client);
            }
            for client in &mut clients {
                for _ in 0..5 {
                    assert_eq!(client.get("/bytes/1048576").await.unwrap().1.len(), MIB);
                }
            }
            let per_client = rounds / connections;
            let started = std::time::Instant::now();
            let runs = clients.into_iter().map(|mut client| {
                tokio::spawn(async move {
                    for _ in 0..per_client {
                        let (_, body) = client.get("/bytes/1048576").await.unwrap();
                        assert_eq!(body.len(), MIB);
                    }
                })
            });
            for run in runs.collect::<Vec<_>>() {
                run.await.unwrap();
            }
            let secs = started.elapsed().as_secs_f64();
            let total = per_client * connections;
            println!(
                "{label:>12}, {connections} connection(s): {total} x 1 MiB in {secs:.2} s = {:.0} MiB/s, {:.2} ms per response",
                total as f64 / secs,
                secs * 1000.0 / total as f64 * connections as f64,
            );
        }
    }
}
