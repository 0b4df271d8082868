//! What the tunnel tests share: a gateway whose `tls` listener fronts a TLS stub
//! upstream, and an HTTP/1.1 client over TLS that keeps its connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use egress_gateway::config::Config;
use egress_gateway::testing::TestGateway;
use egress_testkit::{StubUpstream, TestCa, TestDns};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::ServerName;

use crate::common::{IstioLine, LOOPBACK};

/// A gateway with a `tls` listener in front of a TLS stub upstream whose certificate
/// names `api.example.com`, `other.example.com` and `*.test.example`.
pub struct TlsScenario {
    pub gateway: TestGateway,
    pub upstream: StubUpstream,
    /// Kept alive for the gateway's lookups.
    _dns: TestDns,
    pub ca: TestCa,
}

/// Allows api.example.com and other.example.com (each by its own rule) on the stub's
/// port through the `tls` listener.
pub const TWO_RULES: &str = r#"
defaults: {mode: deny, allow_private: true}
listeners: [{name: tls, port: 8443, protocol: tls, target_port: {PORT}}]
rules:
  - {name: api, hosts: [api.example.com], ports: [{PORT}]}
  - {name: other, hosts: [other.example.com], ports: [{PORT}]}
"#;

impl TlsScenario {
    pub async fn start(policy: &str) -> TlsScenario {
        Self::start_with(policy, |_| {}).await
    }

    /// `policy` may use `{PORT}` for the stub's port.
    pub async fn start_with(policy: &str, configure: impl FnOnce(&mut Config)) -> TlsScenario {
        let ca = TestCa::new();
        let cert = ca.issue_server(&["api.example.com", "other.example.com", "*.test.example"]);
        let upstream = StubUpstream::start_tls(&cert).await;
        let dns = TestDns::start().await;
        for name in [
            "api.example.com",
            "other.example.com",
            "a.test.example",
            "www.163.com",
        ] {
            dns.set(name, [LOOPBACK]);
        }
        let policy = policy.replace("{PORT}", &upstream.port().to_string());
        let gateway = TestGateway::builder(&policy)
            .dns(vec![dns.addr()])
            .configure(configure)
            .start()
            .await;
        TlsScenario {
            gateway,
            upstream,
            _dns: dns,
            ca,
        }
    }

    pub fn tls(&self) -> SocketAddr {
        self.gateway.addr("tls")
    }

    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        self.ca.client_config(&[b"http/1.1"], None)
    }

    /// An HTTP/1.1 keep-alive client over TLS to `name`, through the `tls` listener.
    pub async fn client(&self, name: &str) -> std::io::Result<TlsHttp> {
        TlsHttp::connect(self.tls(), name, self.client_config()).await
    }

    pub async fn audit_lines(&self) -> Vec<IstioLine> {
        self.gateway
            .audit_lines()
            .iter()
            .map(|l| IstioLine::parse(l))
            .collect()
    }

    /// Waits until an audit line satisfies `pred`, and returns it.
    pub async fn wait_line(&self, pred: impl Fn(&IstioLine) -> bool) -> IstioLine {
        let mut found = None;
        let seen = egress_testkit::wait_until_async(Duration::from_secs(10), || {
            let lines = self.gateway.audit_lines();
            found = lines.iter().map(|l| IstioLine::parse(l)).find(|l| pred(l));
            std::future::ready(found.is_some())
        })
        .await;
        assert!(
            seen,
            "no such audit line in {:#?}",
            self.gateway.audit_lines()
        );
        found.unwrap()
    }
}

/// HTTP/1.1 over TLS on one connection.
pub struct TlsHttp {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    name: String,
}

impl TlsHttp {
    pub async fn connect(
        addr: SocketAddr,
        name: &str,
        config: Arc<rustls::ClientConfig>,
    ) -> std::io::Result<TlsHttp> {
        let tcp = egress_testkit::client::connect(addr)
            .await
            .map_err(std::io::Error::other)?;
        let server_name = ServerName::try_from(name.to_owned()).map_err(std::io::Error::other)?;
        let tls = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_rustls::TlsConnector::from(config).connect(server_name, tcp),
        )
        .await
        .map_err(std::io::Error::other)??;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(TlsHttp {
            sender,
            name: name.to_owned(),
        })
    }

    /// `GET path`: the status and body, or the error when the connection is gone.
    pub async fn get(&mut self, path: &str) -> Result<(u16, Bytes), String> {
        let request = http::Request::get(path)
            .header("host", &self.name)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let exchange = async {
            self.sender.ready().await.map_err(|e| e.to_string())?;
            let response = self
                .sender
                .send_request(request)
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?;
            Ok((status, body.to_bytes()))
        };
        tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .map_err(|_| "timed out".to_owned())?
    }

    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}
