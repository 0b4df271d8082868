//! Start a gateway from a policy, for tests: every listener on an ephemeral loopback
//! port, the admin API likewise, the audit log in a temporary directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::app::{self, Gateway, StartError};
use crate::config::Config;

/// A gateway running for a test.
#[derive(Debug)]
pub struct TestGateway {
    gateway: Option<Gateway>,
    dir: tempfile::TempDir,
    audit_path: PathBuf,
}

/// Options for [`TestGateway`].
#[derive(Debug, Clone)]
pub struct TestGatewayBuilder {
    policy: String,
    config: Config,
    audit_path: Option<PathBuf>,
}

impl TestGatewayBuilder {
    /// Name servers to ask (a test DNS server).
    pub fn dns(mut self, servers: Vec<SocketAddr>) -> Self {
        self.config.dns.servers = servers;
        self
    }

    /// The audit format (`istio`, `envoy`, `json`, a format string).
    pub fn audit_format(mut self, format: &str) -> Self {
        self.config.audit.format = format.to_owned();
        self
    }

    /// Writes the audit log at `path` instead of the temporary directory.
    pub fn audit_path(mut self, path: PathBuf) -> Self {
        self.audit_path = Some(path);
        self
    }

    /// Changes the bootstrap configuration further.
    pub fn configure(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(&mut self.config);
        self
    }

    /// Starts the gateway.
    ///
    /// Fails as [`app::start`] does (invalid policy, bad audit format, ...).
    pub async fn try_start(self) -> Result<TestGateway, StartError> {
        let dir = tempfile::tempdir().map_err(|source| StartError::PolicyDir {
            path: "a temporary directory".to_owned(),
            source,
        })?;
        let policies = dir.path().join("policies");
        let audit_path = self
            .audit_path
            .clone()
            .unwrap_or_else(|| dir.path().join("audit.log"));
        let write = |source| StartError::PolicyDir {
            path: policies.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&policies).map_err(write)?;
        std::fs::write(policies.join("policy.yaml"), &self.policy).map_err(write)?;
        let mut config = self.config;
        config.policies = policies;
        config.audit.path = audit_path.display().to_string();
        config.admin.address = SocketAddr::from(([127, 0, 0, 1], 0));
        config.stats.address = SocketAddr::from(([127, 0, 0, 1], 0));
        if config.admin.token_file.is_none() {
            config.admin.token_file = Some(dir.path().join("admin.token"));
        }
        config.listen_override = Some([127, 0, 0, 1].into());
        let gateway = app::start(config).await?;
        Ok(TestGateway {
            gateway: Some(gateway),
            dir,
            audit_path,
        })
    }

    /// Starts the gateway, panicking with the error when it cannot start.
    #[expect(
        clippy::panic,
        reason = "a test helper: failing to start fails the test"
    )]
    pub async fn start(self) -> TestGateway {
        match self.try_start().await {
            Ok(gateway) => gateway,
            Err(e) => panic!("the test gateway did not start: {e}"),
        }
    }
}

impl TestGateway {
    /// Options for a gateway serving `policy` (YAML). Listener ports in the policy are
    /// ignored: each listener gets an ephemeral port on 127.0.0.1.
    pub fn builder(policy: &str) -> TestGatewayBuilder {
        let config = Config {
            drain_timeout: Duration::from_secs(5),
            drain_delay: Duration::ZERO,
            ..Config::default()
        };
        TestGatewayBuilder {
            policy: policy.to_owned(),
            config,
            audit_path: None,
        }
    }

    /// Starts a gateway serving `policy` with default options.
    pub async fn start(policy: &str) -> TestGateway {
        Self::builder(policy).start().await
    }

    fn gateway(&self) -> &Gateway {
        match &self.gateway {
            Some(gateway) => gateway,
            None => unreachable_after_shutdown(),
        }
    }

    /// The address of the named listener.
    #[expect(
        clippy::panic,
        reason = "a test helper: an unknown listener is a test bug"
    )]
    pub fn addr(&self, listener: &str) -> SocketAddr {
        self.gateway()
            .listener_addr(listener)
            .unwrap_or_else(|| panic!("the policy declares no listener named {listener}"))
    }

    /// The admin API's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.gateway().admin_addr()
    }

    /// The stats listener's address (on an ephemeral loopback port unless disabled).
    #[expect(
        clippy::panic,
        reason = "a test helper: asking for a disabled stats listener is a test bug"
    )]
    pub fn stats_addr(&self) -> SocketAddr {
        self.gateway()
            .stats_addr()
            .unwrap_or_else(|| panic!("the stats listener is disabled"))
    }

    /// The running gateway.
    pub fn inner(&self) -> &Gateway {
        self.gateway()
    }

    /// The admin token file (created in the test's directory unless configured).
    pub fn admin_token_file(&self) -> &Path {
        self.gateway().token_file()
    }

    /// The first token of the admin token file.
    pub fn admin_token(&self) -> String {
        let text = std::fs::read_to_string(self.admin_token_file()).unwrap_or_default();
        text.lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| l.split_once(':').map_or(l, |(_, t)| t).to_owned())
            .unwrap_or_default()
    }

    /// The policy directory.
    pub fn policy_dir(&self) -> PathBuf {
        self.dir.path().join("policies")
    }

    /// Replaces `name` in the policy directory atomically, as a GitOps tool would.
    #[expect(
        clippy::expect_used,
        reason = "a test helper: a failed write fails the test"
    )]
    pub fn write_policy(&self, name: &str, yaml: &str) {
        let dir = self.policy_dir();
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, yaml).expect("write the policy file");
        std::fs::rename(&tmp, dir.join(name)).expect("move the policy file into place");
    }

    /// The policy version in force.
    pub fn policy_version(&self) -> u64 {
        self.gateway().store().version()
    }

    /// Waits until the policy version reaches `version`; false after `deadline`.
    pub async fn wait_for_version(&self, version: u64, deadline: Duration) -> bool {
        let end = Instant::now() + deadline;
        while Instant::now() < end {
            if self.policy_version() >= version {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// The audit log's path.
    pub fn audit_path(&self) -> &Path {
        &self.audit_path
    }

    /// Every audit line written so far.
    pub fn audit_lines(&self) -> Vec<String> {
        self.gateway().audit_sink().flush(Duration::from_secs(2));
        std::fs::read_to_string(&self.audit_path)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Waits until at least `count` audit lines are written, and returns them all.
    /// Lines are written when a request finishes, which can be just after its response
    /// reached the client.
    pub async fn wait_audit_lines(&self, count: usize) -> Vec<String> {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let lines = self.audit_lines();
            if lines.len() >= count || Instant::now() >= end {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Drains and stops the gateway; returns whether everything in flight finished.
    pub async fn shutdown(mut self) -> bool {
        match self.gateway.take() {
            Some(gateway) => gateway.shutdown().await,
            None => true,
        }
    }
}

#[expect(
    clippy::panic,
    reason = "a test helper used after shutdown is a test bug"
)]
fn unreachable_after_shutdown() -> ! {
    panic!("the test gateway was shut down")
}
