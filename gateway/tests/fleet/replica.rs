//! Gateway processes sharing one policy through a real etcd, each on its own loopback
//! address (`bind_address`), the admin API beside it, one stub upstream and test DNS
//! behind them all.

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use egress_testkit::etcd::{TestEtcd, Tls};
use egress_testkit::{KeepAliveClient, StubUpstream, TestDns};
use http::Method;

const BIN: &str = env!("CARGO_BIN_EXE_egress-gateway");
/// The admin token every replica accepts.
pub const TOKEN: &str = "fleet-test-token";
/// The key prefix the tests use.
pub const PREFIX: &str = "/fleet-test/";

/// A policy allowing `hosts` on an http listener on `port` and a connect listener on
/// `connect_port`.
pub fn policy(port: u16, connect_port: u16, hosts: &[&str]) -> String {
    let rules: Vec<String> = hosts
        .iter()
        .map(|h| format!("  - {{name: {}, hosts: [{h}]}}\n", h.replace('.', "-")))
        .collect();
    format!(
        "defaults: {{mode: deny, allow_private: true}}\nlisteners: [{{name: http, port: {port}, protocol: http}}, {{name: connect, port: {connect_port}, protocol: connect}}]\nrules:\n{}",
        if rules.is_empty() { "  []\n".to_owned() } else { rules.concat() }
    )
}

/// A port free on `ip`.
fn free_port(ip: IpAddr) -> u16 {
    TcpListener::bind(SocketAddr::new(ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The loopback network of this test process, `127.a.b.0/24`: listeners bind with
/// SO_REUSEPORT, so gateways of two tests on the same address and port would share
/// it silently; each test (nextest runs one per process) gets addresses of its own.
fn subnet() -> [u8; 2] {
    let pid = std::process::id();
    [1 + ((pid / 250) % 250) as u8, (pid % 250) as u8]
}

/// Replica `n`'s address in this process's subnet.
fn replica_ip(n: u8) -> IpAddr {
    let [a, b] = subnet();
    IpAddr::from([127, a, b, n + 1])
}

/// Everything replicas share.
pub struct Fleet {
    pub etcd: TestEtcd,
    pub dns: TestDns,
    pub upstream: StubUpstream,
    pub dir: tempfile::TempDir,
    /// The http listener's port, the same on every replica.
    pub port: u16,
    /// The connect listener's port.
    pub connect_port: u16,
    /// The certificates when etcd speaks TLS.
    pub tls: Option<Tls>,
    _certs: Option<tempfile::TempDir>,
}

impl Fleet {
    pub async fn start() -> Fleet {
        Self::start_with(None).await
    }

    /// A fleet whose etcd speaks TLS and asks for client certificates (made now).
    pub async fn start_tls() -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().to_owned();
        let ca = egress_testkit::TestCa::new();
        let ca_file = ca.write_cert(&certs, "ca.pem").unwrap();
        let (cert, key) = ca
            .issue_server(&["127.0.0.1"])
            .write_to(&certs, "etcd")
            .unwrap();
        let (client_cert, client_key) = ca
            .issue_client("spiffe://cluster.local/ns/egress/sa/gateway")
            .write_to(&certs, "client")
            .unwrap();
        let mut fleet = Self::start_with(Some(Tls {
            cert,
            key,
            ca: ca_file,
            client_cert,
            client_key,
        }))
        .await;
        fleet._certs = Some(dir);
        fleet
    }

    async fn start_with(tls: Option<Tls>) -> Fleet {
        let etcd = TestEtcd::try_start_with(tls.clone()).unwrap_or_else(|e| panic!("{e}"));
        let dns = TestDns::start().await;
        for host in ["api.example.com", "other.example.com", "third.example.com"] {
            dns.set(host, ["127.0.0.1".parse().unwrap()]);
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("admin.token"), format!("test:{TOKEN}\n")).unwrap();
        let mut perms = std::fs::metadata(dir.path().join("admin.token"))
            .unwrap()
            .permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
        std::fs::set_permissions(dir.path().join("admin.token"), perms).unwrap();
        Fleet {
            etcd,
            dns,
            upstream: StubUpstream::start().await,
            dir,
            port: free_port(replica_ip(1)),
            connect_port: free_port(replica_ip(1)),
            tls,
            _certs: None,
        }
    }

    /// A policy directory for `--seed-from`, allowing `hosts`.
    pub fn seed(&self, hosts: &[&str]) -> PathBuf {
        let seed = self.dir.path().join("seed");
        std::fs::create_dir_all(&seed).unwrap();
        std::fs::write(seed.join("policy.yaml"), self.policy(hosts)).unwrap();
        seed
    }

    /// The test policy allowing `hosts` on this fleet's ports.
    pub fn policy(&self, hosts: &[&str]) -> String {
        policy(self.port, self.connect_port, hosts)
    }

    /// Options for replica `n` (on 127.0.0.`n+1`) talking to etcd at `endpoint`.
    pub fn replica(&self, n: u8) -> ReplicaBuilder {
        ReplicaBuilder {
            id: format!("replica-{n}"),
            ip: replica_ip(n),
            endpoint: self.etcd.endpoint(),
            seed: None,
            drain_delay: "0s".to_owned(),
            fleet_dir: self.dir.path().to_owned(),
            dns: self.dns.addr(),
            port: self.port,
            connect_port: self.connect_port,
            dir_name: None,
            auth: None,
            tls: self.tls.clone(),
        }
    }

    /// The host header for `host` on the stub upstream.
    pub fn authority(&self, host: &str) -> String {
        format!("{host}:{}", self.upstream.port())
    }
}

pub struct ReplicaBuilder {
    id: String,
    ip: IpAddr,
    endpoint: String,
    seed: Option<PathBuf>,
    drain_delay: String,
    fleet_dir: PathBuf,
    dns: SocketAddr,
    port: u16,
    connect_port: u16,
    dir_name: Option<String>,
    auth: Option<(String, String)>,
    tls: Option<Tls>,
}

impl ReplicaBuilder {
    /// Logs in to etcd as `user` with `password` (from a password file).
    pub fn auth(mut self, user: &str, password: &str) -> Self {
        self.auth = Some((user.to_owned(), password.to_owned()));
        self
    }

    pub fn endpoint(mut self, endpoint: String) -> Self {
        self.endpoint = endpoint;
        self
    }

    pub fn seed_from(mut self, dir: PathBuf) -> Self {
        self.seed = Some(dir);
        self
    }

    pub fn drain_delay(mut self, delay: &str) -> Self {
        self.drain_delay = delay.to_owned();
        self
    }

    /// Keeps this process's files (audit log, cache, log) in a directory of its own, as
    /// a second process of the same replica on one node would.
    pub fn dir_name(mut self, name: &str) -> Self {
        self.dir_name = Some(name.to_owned());
        self
    }

    /// Starts the process (it may not be ready yet).
    pub fn spawn(self) -> Replica {
        let dir = self
            .fleet_dir
            .join(self.dir_name.as_deref().unwrap_or(&self.id));
        std::fs::create_dir_all(&dir).unwrap();
        let admin = SocketAddr::new(self.ip, free_port(self.ip));
        let config = dir.join("gateway.yaml");
        let auth = match &self.auth {
            Some((user, password)) => {
                let file = dir.join("etcd.password");
                std::fs::write(&file, format!("{password}\n")).unwrap();
                format!(", username: {user}, password_file: \"{}\"", file.display())
            }
            None => String::new(),
        };
        let auth = match &self.tls {
            Some(tls) => format!(
                "{auth}, tls: {{ca: \"{}\", cert: \"{}\", key: \"{}\"}}",
                tls.ca.display(),
                tls.client_cert.display(),
                tls.client_key.display()
            ),
            None => auth,
        };
        std::fs::write(
            &config,
            format!(
                "store: {{etcd: {{endpoints: [\"{endpoint}\"], prefix: \"{PREFIX}\", dial_timeout: 2s, cache_dir: \"{cache}\"{auth}}}}}\n\
                 id: {id}\n\
                 bind_address: {ip}\n\
                 drain_delay: {delay}\n\
                 drain_timeout: 10s\n\
                 admin: {{address: \"{admin}\", token_file: \"{token}\"}}\n\
                 audit: {{path: \"{audit}\"}}\n\
                 dns: {{servers: [\"{dns}\"]}}\n",
                endpoint = self.endpoint,
                cache = dir.join("cache").display(),
                id = self.id,
                ip = self.ip,
                delay = self.drain_delay,
                token = self.fleet_dir.join("admin.token").display(),
                audit = dir.join("audit.log").display(),
                dns = self.dns,
            ),
        )
        .unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("stderr.log"))
            .unwrap();
        let mut cmd = Command::new(BIN);
        cmd.arg("--config").arg(&config);
        if let Some(seed) = &self.seed {
            cmd.arg("--seed-from").arg(seed);
        }
        cmd.current_dir(&dir)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        Replica {
            child: Some(cmd.spawn().unwrap()),
            id: self.id,
            admin,
            http: SocketAddr::new(self.ip, self.port),
            connect: SocketAddr::new(self.ip, self.connect_port),
            dir,
        }
    }

    /// Starts the process and waits until `/readyz` answers 200.
    pub async fn start(self) -> Replica {
        let replica = self.spawn();
        replica.wait_ready().await;
        replica
    }
}

/// One gateway process.
pub struct Replica {
    child: Option<Child>,
    pub id: String,
    pub admin: SocketAddr,
    pub http: SocketAddr,
    pub connect: SocketAddr,
    pub dir: PathBuf,
}

/// An admin API answer.
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub etag: Option<String>,
}

impl Replica {
    /// The process's own log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.readyz().await.is_some_and(|(status, _)| status == 200) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{} never became ready; its log:\n{}", self.id, self.log());
    }

    /// `/readyz`: status and body, `None` when it does not answer.
    pub async fn readyz(&self) -> Option<(u16, String)> {
        let mut client = KeepAliveClient::connect(self.admin).await.ok()?;
        let response = client.get("/readyz").await.ok()?;
        Some((response.status.as_u16(), response.text()))
    }

    /// An admin request with the token.
    pub async fn admin(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Answer {
        let auth = format!("Bearer {TOKEN}");
        let mut all = vec![("authorization", auth.as_str())];
        all.extend_from_slice(headers);
        let mut client = KeepAliveClient::connect(self.admin)
            .await
            .unwrap_or_else(|e| panic!("{}: admin API at {}: {e}", self.id, self.admin))
            .with_timeout(Duration::from_secs(20));
        let response = client
            .request(method, path, &all, body.to_owned())
            .await
            .unwrap_or_else(|e| panic!("{}: {path}: {e}", self.id));
        Answer {
            status: response.status.as_u16(),
            etag: response.header("etag").map(str::to_owned),
            body: response.text(),
        }
    }

    /// `PUT /rules/NAME` allowing one host.
    pub async fn put_rule(&self, name: &str, host: &str) -> Answer {
        let body = format!("hosts: [{host}]\n");
        self.admin(
            Method::PUT,
            &format!("/rules/{name}"),
            &[("content-type", "application/yaml")],
            &body,
        )
        .await
    }

    /// The version in force, from `GET /policy/history`.
    pub async fn version(&self) -> u64 {
        let answer = self.admin(Method::GET, "/policy/history", &[], "").await;
        let history: serde_json::Value = serde_json::from_str(&answer.body).unwrap_or_else(|e| {
            panic!(
                "{}: GET /policy/history answered {} {:?}: {e}",
                self.id, answer.status, answer.body
            )
        });
        history["current"].as_u64().unwrap()
    }

    /// Waits until the version in force is `version`.
    pub async fn wait_version(&self, version: u64, within: Duration) {
        let deadline = Instant::now() + within;
        let mut seen = 0;
        while Instant::now() < deadline {
            seen = self.version().await;
            if seen == version {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "{} still serves version {seen}, not {version}; its log:\n{}",
            self.id,
            self.log()
        );
    }

    /// The status of `GET /` through this replica's http listener for `authority`.
    pub async fn request(&self, authority: &str) -> u16 {
        let mut client = KeepAliveClient::connect(self.http)
            .await
            .unwrap_or_else(|e| panic!("{}: http listener at {}: {e}", self.id, self.http));
        client
            .request(Method::GET, "/", &[("host", authority)], "")
            .await
            .unwrap_or_else(|e| panic!("{}: request: {e}", self.id))
            .status
            .as_u16()
    }

    /// The metrics exposition.
    pub async fn metrics(&self) -> String {
        let mut client = KeepAliveClient::connect(self.admin).await.unwrap();
        client.get("/metrics").await.unwrap().text()
    }

    /// Runs `egressctl ARGS` against this replica: exit status and standard output.
    pub fn egressctl(&self, args: &[&str], token_dir: &Path) -> (ExitStatus, String) {
        // Built beside the gateway by the workspace build.
        let ctl = Path::new(BIN).with_file_name("egressctl");
        assert!(
            ctl.exists(),
            "{} is not built (cargo build --workspace)",
            ctl.display()
        );
        let out = Command::new(ctl)
            .arg("--admin")
            .arg(self.admin.to_string())
            .arg("--token-file")
            .arg(token_dir.join("admin.token"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
        }
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + within;
        let mut in_time = false;
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                in_time = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !in_time {
            let _ = child.kill();
        }
        let status = child.wait().unwrap();
        assert!(
            in_time,
            "{} did not exit within {within:?}; its log:\n{}",
            self.id,
            self.log()
        );
        status
    }

    /// Kills the process at once.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The audit lines written so far.
    pub fn audit_lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("audit.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}
