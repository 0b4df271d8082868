//! What the CONNECT tests share: a gateway with two connect listeners, TLS and plain
//! stub upstreams, clients run as processes, and a raw CONNECT with rustls inside.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use egress_gateway::testing::TestGateway;
use egress_testkit::{ClosedPort, StubUpstream, TestCa, TestDns};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use crate::common::{IstioLine, LOOPBACK};

pub const POLICY: &str = r#"
defaults: {mode: deny, allow_private: true}
listeners:
  - {name: proxy, port: 3128, protocol: connect, check_sni: true}
  - {name: open, port: 3129, protocol: connect}
rules:
  - name: api
    hosts: [api.example.com, other.example.com]
    ports: [{TLS}, {PLAIN}, {CLOSED}]
"#;

/// A gateway with two connect listeners (`proxy` checks SNI, `open` does not), a TLS
/// and a plain stub upstream, and names that resolve to them.
pub struct Proxy {
    pub gateway: TestGateway,
    pub tls: StubUpstream,
    pub plain: StubUpstream,
    pub closed: ClosedPort,
    pub ca: TestCa,
    pub ca_file: PathBuf,
    _dns: TestDns,
    _dir: egress_testkit::tempfile::TempDir,
}

impl Proxy {
    pub async fn start(policy: &str) -> Proxy {
        Self::start_with(policy, |_| {}).await
    }

    /// As [`Proxy::start`], with changes to the gateway's bootstrap configuration.
    pub async fn start_with(
        policy: &str,
        configure: impl FnOnce(&mut egress_gateway::config::Config),
    ) -> Proxy {
        let ca = TestCa::new();
        let tls =
            StubUpstream::start_tls(&ca.issue_server(&["api.example.com", "other.example.com"]))
                .await;
        let plain = StubUpstream::start().await;
        let closed = ClosedPort::new();
        let dns = TestDns::start().await;
        for name in ["api.example.com", "other.example.com"] {
            dns.set(name, [LOOPBACK]);
        }
        let dir = egress_testkit::tempfile::tempdir().unwrap();
        let ca_file = ca.write_cert(dir.path(), "ca.pem").unwrap();
        let policy = policy
            .replace("{TLS}", &tls.port().to_string())
            .replace("{PLAIN}", &plain.port().to_string())
            .replace("{CLOSED}", &closed.port().to_string());
        let gateway = TestGateway::builder(&policy)
            .dns(vec![dns.addr()])
            .configure(configure)
            .start()
            .await;
        Proxy {
            gateway,
            tls,
            plain,
            closed,
            ca,
            ca_file,
            _dns: dns,
            _dir: dir,
        }
    }

    pub fn addr(&self, listener: &str) -> SocketAddr {
        self.gateway.addr(listener)
    }

    pub async fn audit(&self, n: usize) -> IstioLine {
        let lines = self.gateway.wait_audit_lines(n).await;
        assert!(lines.len() >= n, "expected {n} audit lines, got {lines:#?}");
        IstioLine::parse(&lines[n - 1])
    }
}

/// A client command with no proxy settings from the environment.
pub fn command(program: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(program);
    for var in ["http_proxy", "https_proxy", "all_proxy", "no_proxy"] {
        command.env_remove(var).env_remove(var.to_uppercase());
    }
    command.kill_on_drop(true);
    command
}

/// Runs a client command, bounded in time.
pub async fn run(command: &mut tokio::process::Command) -> std::process::Output {
    tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .expect("the client finished within 30s")
        .expect("the client runs")
}

/// Sends `CONNECT target` (plus `extra` header lines) and reads the response head.
pub async fn connect(addr: SocketAddr, target: &str, extra: &str) -> (TcpStream, String) {
    let mut stream = egress_testkit::client::connect(addr).await.unwrap();
    let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{extra}\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let head = read_head(&mut stream).await;
    (stream, head)
}

/// Reads up to the end of a response head, byte by byte so nothing after it is taken.
pub async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let read = async {
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                break;
            }
            head.push(byte[0]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("a response head within 10s");
    String::from_utf8_lossy(&head).into_owned()
}

/// A rustls client through an open tunnel, trusting the test CA.
pub async fn tls_get(
    proxy: &Proxy,
    stream: TcpStream,
    server_name: &str,
) -> std::io::Result<String> {
    let config = proxy.ca.client_config(&[b"http/1.1"], None);
    let connector = TlsConnector::from(Arc::clone(&config));
    let name = ServerName::try_from(server_name.to_owned()).unwrap();
    let mut tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, stream))
        .await
        .expect("the handshake ends within 10s")?;
    let request = format!("GET /get HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    // The response is what matters; a close without close_notify after it is fine.
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut response)).await;
    Ok(String::from_utf8_lossy(&response).into_owned())
}
