//! A real etcd server for tests: `etcd` from the Debian package `etcd-server`, started
//! on free loopback ports with its data in a temporary directory, stopped (killed) when
//! dropped. [`TestEtcd::stop`] and [`TestEtcd::restart`] keep the data, so a test can
//! take the store away and bring it back.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A running etcd.
#[derive(Debug)]
pub struct TestEtcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client: SocketAddr,
    peer: SocketAddr,
    tls: Option<Tls>,
}

/// Certificate files for an etcd that speaks TLS and asks clients for certificates.
#[derive(Debug, Clone)]
pub struct Tls {
    /// The server certificate (PEM), for 127.0.0.1.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// The CA that signed it and that client certificates must chain to.
    pub ca: PathBuf,
    /// A client certificate etcdctl uses.
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
}

/// Why etcd could not start.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// The binary is not installed.
    #[error("etcd is not installed ({0}); install the Debian package etcd-server (scripts/test.sh does)")]
    Missing(std::io::Error),
    /// It started but never answered.
    #[error("etcd did not answer on {0} within 20 s")]
    NoAnswer(SocketAddr),
    /// Something else.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

fn free_addr() -> std::io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

impl TestEtcd {
    /// Starts etcd, panicking with the reason when it cannot.
    #[expect(clippy::panic, reason = "a test helper: no etcd fails the test")]
    pub fn start() -> TestEtcd {
        match Self::try_start() {
            Ok(etcd) => etcd,
            Err(e) => panic!("{e}"),
        }
    }

    /// Starts etcd on free loopback ports.
    ///
    /// Fails when etcd is not installed or does not answer.
    pub fn try_start() -> Result<TestEtcd, EtcdError> {
        Self::try_start_with(None)
    }

    /// Starts etcd speaking TLS on its client port with `tls`, asking clients for a
    /// certificate.
    ///
    /// Fails when etcd is not installed or does not answer.
    pub fn try_start_with(tls: Option<Tls>) -> Result<TestEtcd, EtcdError> {
        let mut etcd = TestEtcd {
            child: None,
            dir: tempfile::tempdir()?,
            client: free_addr()?,
            peer: free_addr()?,
            tls,
        };
        etcd.spawn()?;
        Ok(etcd)
    }

    fn spawn(&mut self) -> Result<(), EtcdError> {
        let client = self.endpoint();
        let peer = format!("http://{}", self.peer);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))?;
        let mut command = Command::new("etcd");
        if let Some(tls) = &self.tls {
            command
                .arg(format!("--cert-file={}", tls.cert.display()))
                .arg(format!("--key-file={}", tls.key.display()))
                .arg(format!("--trusted-ca-file={}", tls.ca.display()))
                .arg("--client-cert-auth");
        }
        let child = command
            .arg("--name=test")
            .arg(format!("--data-dir={}", self.data_dir().display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .arg("--log-level=error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(EtcdError::Missing)?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            #[expect(
                clippy::disallowed_methods,
                reason = "waits for the etcd this started on loopback to listen"
            )]
            let listening = TcpStream::connect_timeout(&self.client, Duration::from_millis(200));
            if listening.is_ok()
                && self
                    .etcdctl(&["endpoint", "health"])
                    .is_ok_and(|o| o.status.success())
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(EtcdError::NoAnswer(self.client))
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The client URL, e.g. `http://127.0.0.1:23791` (`https://` with TLS).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.client)
    }

    /// The client address.
    pub fn addr(&self) -> SocketAddr {
        self.client
    }

    /// Runs `etcdctl` (API v3) against this server.
    ///
    /// Fails when etcdctl cannot run.
    pub fn etcdctl(&self, args: &[&str]) -> std::io::Result<Output> {
        let mut command = Command::new("etcdctl");
        if let Some(tls) = &self.tls {
            command
                .arg(format!("--cacert={}", tls.ca.display()))
                .arg(format!("--cert={}", tls.client_cert.display()))
                .arg(format!("--key={}", tls.client_key.display()));
        }
        command
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint()))
            .arg("--dial-timeout=2s")
            .args(args)
            .stdin(Stdio::null())
            .output()
    }

    /// Runs `etcdctl` and returns its standard output, panicking when it fails.
    #[expect(
        clippy::panic,
        reason = "a test helper: a failed etcdctl fails the test"
    )]
    pub fn ctl(&self, args: &[&str]) -> String {
        match self.etcdctl(args) {
            Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
            Ok(out) => panic!(
                "etcdctl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => panic!("cannot run etcdctl (Debian package etcd-client): {e}"),
        }
    }

    /// The current revision of the store.
    pub fn revision(&self) -> i64 {
        let out = self.ctl(&["endpoint", "status", "-w", "json"]);
        let status: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        status[0]["Status"]["header"]["revision"]
            .as_i64()
            .unwrap_or_default()
    }

    /// Stops etcd (SIGKILL), keeping its data.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports and data.
    ///
    /// Fails when it does not answer.
    pub fn restart(&mut self) -> Result<(), EtcdError> {
        self.stop();
        self.spawn()
    }
}

impl Drop for TestEtcd {
    fn drop(&mut self) {
        self.stop();
    }
}
