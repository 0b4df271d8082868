//! The targets of a comparison: the direct path (the stub upstream itself) and the
//! proxies the tool starts, each from a fresh temporary directory, pinned to the proxy
//! CPUs with taskset, and stopped (SIGTERM, then SIGKILL) when dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

mod command;

use crate::peers::{self, Addresses};
use crate::proc_stat;
use crate::scenario::{Listener, Scenario};
use crate::upstream::UpstreamAddrs;

/// Something a scenario can be sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// The stub upstream, no proxy: the ceiling.
    Direct,
    /// egress-gateway.
    Gateway,
    /// nginx (Debian package).
    Nginx,
    /// HAProxy (Debian package).
    Haproxy,
    /// Squid (Debian package).
    Squid,
}

impl TargetKind {
    /// Its name in tables.
    pub fn name(self) -> &'static str {
        match self {
            TargetKind::Direct => "direct",
            TargetKind::Gateway => "gateway",
            TargetKind::Nginx => "nginx",
            TargetKind::Haproxy => "haproxy",
            TargetKind::Squid => "squid",
        }
    }

    /// Whether this target can serve `scenario` as an egress proxy: nginx and HAProxy
    /// have no CONNECT, Squid neither h2c nor SNI passthrough.
    pub fn supports(self, scenario: Scenario) -> bool {
        let listener = scenario.listener();
        match self {
            TargetKind::Direct | TargetKind::Gateway => true,
            TargetKind::Nginx | TargetKind::Haproxy => listener != Listener::Connect,
            TargetKind::Squid => matches!(listener, Listener::Http | Listener::Connect),
        }
    }
}

/// What starting a target needs.
#[derive(Debug, Clone)]
pub struct StartEnv {
    /// The `egress-gateway` binary.
    pub gateway_bin: PathBuf,
    /// CPUs for the proxy (`taskset -c`), e.g. `0`.
    pub proxy_cpus: Option<String>,
    /// Filler rules added to the gateway's policy (see [`crate::policy_load`]).
    pub policy_rules: usize,
}

/// The gateway's policy file as the tool wrote it, for reload tests to edit.
#[derive(Debug, Clone)]
pub struct GatewayPolicy {
    /// `policies/policy.yaml` in the target's directory.
    pub path: PathBuf,
    /// Its text.
    pub text: String,
    /// The listeners its rules name.
    pub listeners: Vec<&'static str>,
    /// The admin listener (`/metrics`).
    pub admin: SocketAddr,
}

/// Why a target did not start.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// Its binary is missing.
    #[error("{what} not found: {hint}")]
    Missing {
        /// The binary.
        what: String,
        /// How to get it.
        hint: &'static str,
    },
    /// A file of its configuration could not be written.
    #[error("write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// It could not be spawned.
    #[error("start {what}: {source}")]
    Spawn {
        /// The binary.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// It exited before listening.
    #[error("{what} exited ({status}) before listening; its logs are in {dir}:\n{tail}")]
    Exited {
        /// The target.
        what: &'static str,
        /// Its exit status.
        status: String,
        /// Its working directory (kept).
        dir: String,
        /// The end of its logs.
        tail: String,
    },
    /// It did not listen in time.
    #[error("{what} did not listen on {addr} within {limit:?}; its logs are in {dir}:\n{tail}")]
    NotListening {
        /// The target.
        what: &'static str,
        /// The listener waited for.
        addr: SocketAddr,
        /// How long.
        limit: Duration,
        /// Its working directory (kept).
        dir: String,
        /// The end of its logs.
        tail: String,
    },
    /// A template did not render.
    #[error(transparent)]
    Template(#[from] peers::TemplateError),
}

/// A target ready for load.
#[derive(Debug)]
pub struct Running {
    /// Which target.
    pub kind: TargetKind,
    addresses: Addresses,
    upstream_echo: SocketAddr,
    child: Option<Child>,
    dir: tempfile::TempDir,
    ticks: u64,
    policy: Option<GatewayPolicy>,
}

impl Running {
    /// Starts `kind` for `scenario` in front of `upstreams`.
    ///
    /// Fails when its binary is missing, its configuration cannot be written, or it does
    /// not listen within 20 s.
    pub fn start(
        kind: TargetKind,
        scenario: Scenario,
        upstreams: UpstreamAddrs,
        env: &StartEnv,
    ) -> Result<Running, TargetError> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("egress-loadtest-{}-", kind.name()))
            .tempdir()
            .map_err(|source| TargetError::Write {
                path: "a temporary directory".into(),
                source,
            })?;
        let addresses = Addresses {
            http: free_port(),
            h2c: free_port(),
            tls: free_port(),
            connect: free_port(),
            upstream_http: upstreams.http,
            upstream_tls: upstreams.tls,
        };
        let mut running = Running {
            kind,
            addresses,
            upstream_echo: upstreams.echo,
            child: None,
            dir,
            ticks: proc_stat::ticks_per_second(),
            policy: None,
        };
        if kind == TargetKind::Direct {
            return Ok(running);
        }
        let command = running.command(scenario, env)?;
        running.spawn(command, env)?;
        if let Some(addr) = running.address(scenario) {
            running.wait_listening(addr, Duration::from_secs(20))?;
        }
        Ok(running)
    }

    /// Where to send `scenario`; `None` when this target does not serve it.
    pub fn address(&self, scenario: Scenario) -> Option<SocketAddr> {
        let a = &self.addresses;
        if self.kind == TargetKind::Direct {
            return Some(match scenario {
                Scenario::Http1 | Scenario::H2c => a.upstream_http,
                Scenario::Tls | Scenario::ConnectTls => a.upstream_tls,
                Scenario::ConnectEcho => self.upstream_echo,
            });
        }
        if !self.kind.supports(scenario) {
            return None;
        }
        Some(match scenario.listener() {
            // The gateway serves h2c on its http listener.
            Listener::H2c if self.kind == TargetKind::Gateway => a.http,
            Listener::H2c => a.h2c,
            Listener::Http => a.http,
            Listener::Tls => a.tls,
            Listener::Connect => a.connect,
        })
    }

    /// The gateway's policy file and admin listener; `None` for the other targets.
    pub fn gateway_policy(&self) -> Option<&GatewayPolicy> {
        self.policy.as_ref()
    }

    /// Resident memory of the proxy's main process, KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        self.pid().and_then(proc_stat::rss_kib)
    }

    /// CPU time the proxy's processes used so far; `None` for the direct path.
    pub fn cpu_time(&self) -> Option<proc_stat::CpuTime> {
        let pid = self.child.as_ref()?.id();
        Some(proc_stat::cpu_time(pid, self.ticks))
    }

    /// CPU ticks of the proxy's main process by thread name.
    pub fn thread_ticks(&self) -> std::collections::BTreeMap<String, u64> {
        self.pid().map(proc_stat::threads).unwrap_or_default()
    }

    /// Clock ticks per second of the figures of [`Running::thread_ticks`].
    pub fn ticks_per_second(&self) -> u64 {
        self.ticks
    }

    /// The proxy's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its working directory (configuration and logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Leaves the working directory in place when the target stops.
    pub fn keep_dir(&mut self) {
        self.dir.disable_cleanup(true);
    }

    fn spawn(&mut self, command: Command, env: &StartEnv) -> Result<(), TargetError> {
        let mut command = match &env.proxy_cpus {
            Some(cpus) => {
                let mut pinned = Command::new("taskset");
                pinned.arg("-c").arg(cpus).arg(command.get_program());
                pinned.args(command.get_args());
                for (k, v) in command.get_envs() {
                    if let Some(v) = v {
                        pinned.env(k, v);
                    }
                }
                pinned
            }
            None => command,
        };
        // HAProxy's access log is its standard output; the others' go to their files.
        let stdout = self.log_file("stdout.log")?;
        let stderr = self.log_file("stderr.log")?;
        let child = command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|source| TargetError::Spawn {
                what: self.kind.name().to_owned(),
                source,
            })?;
        // taskset execs the proxy in place: the child's pid is the proxy's.
        self.child = Some(child);
        Ok(())
    }

    fn log_file(&self, name: &str) -> Result<std::fs::File, TargetError> {
        let path = self.dir.path().join(name);
        std::fs::File::create(&path).map_err(|source| TargetError::Write {
            path: path.display().to_string(),
            source,
        })
    }

    #[expect(
        clippy::disallowed_methods,
        reason = "waits for the proxy this started on loopback to listen"
    )]
    fn wait_listening(&mut self, addr: SocketAddr, limit: Duration) -> Result<(), TargetError> {
        let end = Instant::now() + limit;
        loop {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_none()
                && std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            {
                return Ok(());
            }
            if exited.is_some() || Instant::now() >= end {
                // Keep the directory so its logs can be read.
                self.dir.disable_cleanup(true);
                let dir = self.dir.path();
                let (what, tail) = (self.kind.name(), log_tail(dir));
                let dir = dir.display().to_string();
                return Err(match exited {
                    Some(status) => TargetError::Exited {
                        what,
                        status: status.to_string(),
                        dir,
                        tail,
                    },
                    None => TargetError::NotListening {
                        what,
                        addr,
                        limit,
                        dir,
                        tail,
                    },
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SIGTERM first: nginx's master stops its workers, the gateway drains.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A free loopback port (bound, then released for the proxy to take).
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// The last lines of every log in `dir`.
fn log_tail(dir: &Path) -> String {
    let mut out = String::new();
    for name in ["stderr.log", "stdout.log", "error.log", "cache.log"] {
        if let Ok(text) = std::fs::read_to_string(dir.join(name)) {
            let lines: Vec<&str> = text.lines().collect();
            for line in &lines[lines.len().saturating_sub(10)..] {
                out.push_str(&format!("{name}: {line}\n"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_serve_only_what_they_can_as_egress_proxies() {
        use Scenario::*;
        assert!(TargetKind::Gateway.supports(ConnectEcho));
        assert!(TargetKind::Nginx.supports(Tls) && !TargetKind::Nginx.supports(ConnectTls));
        assert!(TargetKind::Haproxy.supports(H2c) && !TargetKind::Haproxy.supports(ConnectEcho));
        assert!(TargetKind::Squid.supports(Http1) && TargetKind::Squid.supports(ConnectTls));
        assert!(!TargetKind::Squid.supports(Tls) && !TargetKind::Squid.supports(H2c));
    }
}
