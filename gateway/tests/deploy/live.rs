//! The monitoring kit against real processes: Prometheus (the Debian package) with the
//! shipped static scrape config and alerts scrapes a gateway's stats listener while it
//! serves traffic; every dashboard query must return data and every alert expression
//! must evaluate.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use egress_admin::client::Client;
use egress_gateway::testing::TestGateway;
use egress_testkit::{ClosedPort, StubUpstream, TestDns};
use hyper::Method;
use serde_yaml::Value;

use crate::kit::{seq, str_of, tool, ROOT};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

const POLICY: &str = r#"
defaults: {mode: deny}
listeners: [{name: http, port: 8080, protocol: http}]
rules:
  - {name: allowed, hosts: [api.example.com], allow_private: true}
  - {name: closed, hosts: [closed.example.com], allow_private: true}
  - {name: guarded, hosts: [guarded.example.com]}
  - {name: missing, hosts: [missing.example.com]}
"#;

struct Prometheus {
    child: Child,
    client: Client,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Prometheus on a loopback port, running the shipped static config with its target
/// moved to `target` and its intervals shortened to one second.
async fn prometheus(target: SocketAddr) -> Prometheus {
    let shipped = Path::new(ROOT).join("deploy/prometheus");
    let dir = tempfile::tempdir().unwrap();
    let mut config: Value =
        serde_yaml::from_str(&std::fs::read_to_string(shipped.join("prometheus.yml")).unwrap())
            .unwrap();
    config["global"]["scrape_interval"] = Value::from("1s");
    config["global"]["evaluation_interval"] = Value::from("1s");
    config["scrape_configs"][0]["static_configs"][0]["targets"] =
        Value::from(vec![target.to_string()]);
    assert_eq!(seq(&config["rule_files"]).len(), 1);
    std::fs::copy(shipped.join("alerts.yml"), dir.path().join("alerts.yml")).unwrap();
    let path = dir.path().join("prometheus.yml");
    std::fs::write(&path, serde_yaml::to_string(&config).unwrap()).unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    drop(tool("prometheus"));
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let prometheus = Prometheus {
        child,
        client: Client::new(&addr.to_string(), None).unwrap(),
        _dir: dir,
    };
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = prometheus
            .client
            .send(Method::GET, "/-/ready", &[], None, Duration::from_secs(2))
            .await;
        if ready.is_ok_and(|r| r.status == 200) {
            return prometheus;
        }
        assert!(
            Instant::now() < end,
            "prometheus did not become ready on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn form_value(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Prometheus {
    /// `POST /api/v1/query`: the status and the result vector.
    async fn query(&self, expr: &str) -> (String, serde_json::Value) {
        let body = format!("query={}", form_value(expr)).into_bytes();
        let reply = self
            .client
            .send(
                Method::POST,
                "/api/v1/query",
                &[],
                Some((body, "application/x-www-form-urlencoded")),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        (
            json["status"].as_str().unwrap_or("").to_owned(),
            json["data"]["result"].clone(),
        )
    }
}

/// A panel query as Grafana sends it with every variable at "All".
fn as_sent(expr: &str) -> String {
    expr.replace("$__rate_interval", "15s")
        .replace("$http_listener", "http")
        .replace("$instance", ".*")
        .replace("$job", ".*")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_stats_listener_and_every_panel_and_alert_evaluates() {
    let upstream = StubUpstream::start().await;
    let closed = ClosedPort::new();
    let dns = TestDns::start().await;
    for name in [
        "api.example.com",
        "closed.example.com",
        "guarded.example.com",
    ] {
        dns.set(name, [LOOPBACK]);
    }
    let gateway = TestGateway::builder(POLICY)
        .dns(vec![dns.addr()])
        .start()
        .await;
    let prometheus = prometheus(gateway.stats_addr()).await;

    // Traffic of every kind a panel shows, spread over several scrapes so rates exist.
    let http = gateway.addr("http");
    let hosts = [
        format!("api.example.com:{}", upstream.port()),
        format!("closed.example.com:{}", closed.port()),
        "guarded.example.com".to_owned(),
        "missing.example.com".to_owned(),
        "denied.example.net".to_owned(),
    ];
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        for host in &hosts {
            egress_testkit::http_get(http, host, "/").await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(ROOT).join("deploy/grafana/egress-gateway.json"))
            .unwrap(),
    )
    .unwrap();
    for expr in crate::kit::dashboard_queries(&dashboard) {
        let sent = as_sent(&expr);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, result) = prometheus.query(&sent).await;
            assert_eq!(status, "success", "{sent}");
            if result.as_array().is_some_and(|r| !r.is_empty()) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no data for the panel query {sent}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    let rules: Value = serde_yaml::from_str(
        &std::fs::read_to_string(Path::new(ROOT).join("deploy/prometheus/alerts.yml")).unwrap(),
    )
    .unwrap();
    for rule in seq(&rules["groups"]).iter().flat_map(|g| seq(&g["rules"])) {
        let (status, _) = prometheus.query(str_of(&rule["expr"])).await;
        assert_eq!(status, "success", "{}", str_of(&rule["alert"]));
    }
    let (_, up) = prometheus.query(r#"up{job="egress-gateway"}"#).await;
    assert_eq!(
        up[0]["value"][1], "1",
        "the shipped job scraped the gateway: {up}"
    );
}
