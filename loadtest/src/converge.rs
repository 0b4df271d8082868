//! Fleet convergence: how long after a write's 200 every replica enforces it.
//!
//! The tool starts a real etcd and N gateway processes sharing one policy (each on its
//! own 127.0.0.x), then makes `changes` writes through the first replica, each a rule for
//! a host no rule allowed before. From the moment the write answers 200, one client per
//! replica asks for that host through the replica's own listener, back to back, until it
//! is allowed: the slowest replica's time is the write's convergence.

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use egress_testkit::etcd::TestEtcd;
use egress_testkit::{KeepAliveClient, StubUpstream, TestDns};
use http::Method;
use serde::Serialize;

const TOKEN: &str = "converge-0123456789abcdef";
const PREFIX: &str = "/converge/";

/// What to measure.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Gateway processes.
    pub replicas: u8,
    /// Writes measured.
    pub changes: usize,
    /// Filler rules in the policy besides the ones the writes add.
    pub rules: usize,
    /// The egress-gateway binary.
    pub gateway: PathBuf,
}

/// The figures of one plan, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Replicas.
    pub replicas: u8,
    /// Filler rules.
    pub rules: usize,
    /// Writes measured.
    pub changes: usize,
    /// Median time from a write's 200 until every replica enforces it.
    pub median_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// The slowest write.
    pub max_ms: f64,
    /// Median time the write itself took (request to 200).
    pub write_median_ms: f64,
}

impl Report {
    /// One line for people.
    pub fn human(&self) -> String {
        format!(
            "{} replicas, {} filler rules, {} changes: converged after the write's 200 in median {:.1} ms, p90 {:.1} ms, max {:.1} ms (the write itself: median {:.1} ms)\n",
            self.replicas,
            self.rules,
            self.changes,
            self.median_ms,
            self.p90_ms,
            self.max_ms,
            self.write_median_ms
        )
    }
}

struct Replica {
    child: Child,
    admin: SocketAddr,
    http: SocketAddr,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The seed policy: one http listener and `rules` filler rules.
fn seed_policy(port: u16, rules: usize) -> String {
    let mut text = format!(
        "defaults: {{mode: deny, allow_private: true}}\nlisteners: [{{name: http, port: {port}, protocol: http}}]\nrules:\n"
    );
    if rules == 0 {
        text.push_str("  []\n");
    }
    for i in 0..rules {
        text.push_str(&format!(
            "  - {{name: filler-{i}, hosts: [f{i}.filler.test], ports: [80]}}\n"
        ));
    }
    text
}

/// Measures `plan`.
///
/// Fails when etcd or a gateway does not start, or a write fails.
pub async fn measure(plan: &Plan) -> anyhow::Result<Report> {
    if !plan.gateway.is_file() {
        bail!(
            "{} is missing: build it with `cargo build --release -p egress-gateway` or pass --gateway PATH",
            plan.gateway.display()
        );
    }
    // The replicas run in directories of their own.
    let gateway = std::fs::canonicalize(&plan.gateway)?;
    let etcd = TestEtcd::try_start()?;
    let dns = TestDns::start().await;
    let upstream = StubUpstream::start().await;
    let hosts: Vec<String> = (0..plan.changes)
        .map(|i| format!("c{i}.converge.test"))
        .collect();
    for host in &hosts {
        dns.set(host, ["127.0.0.1".parse()?]);
    }
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("admin.token"),
        format!("converge:{TOKEN}\n"),
    )?;
    let seed = dir.path().join("seed");
    std::fs::create_dir(&seed)?;
    let port = free_port()?;
    std::fs::write(seed.join("policy.yaml"), seed_policy(port, plan.rules))?;

    let mut replicas = Vec::new();
    for n in 0..plan.replicas {
        let seed = (n == 0).then_some(seed.as_path());
        let replica = spawn(
            &gateway,
            dir.path(),
            n,
            &etcd.endpoint(),
            dns.addr(),
            port,
            seed,
        )?;
        wait_ready(&replica)
            .await
            .with_context(|| format!("replica {n}"))?;
        replicas.push(replica);
    }
    let version = version(&replicas[0]).await?;
    for replica in &replicas {
        wait_version(replica, version).await?;
    }

    let mut converged = Vec::new();
    let mut writes = Vec::new();
    for host in &hosts {
        let name = host.replace('.', "-");
        let body = format!("hosts: [{host}]\n");
        let started = Instant::now();
        let answer = admin(&replicas[0], Method::PUT, &format!("/rules/{name}"), &body).await?;
        if answer.0 != 200 {
            bail!("PUT /rules/{name}: {} {}", answer.0, answer.1);
        }
        let written = Instant::now();
        writes.push(written - started);
        let authority = format!("{host}:{}", upstream.port());
        let mut waits = Vec::new();
        for replica in &replicas {
            waits.push(until_allowed(replica.http, authority.clone()));
        }
        let mut slowest = Duration::ZERO;
        for done in futures_join(waits).await {
            slowest = slowest.max(done?.saturating_duration_since(written));
        }
        converged.push(slowest);
    }
    Ok(Report {
        replicas: plan.replicas,
        rules: plan.rules,
        changes: plan.changes,
        median_ms: percentile(&converged, 0.5),
        p90_ms: percentile(&converged, 0.9),
        max_ms: percentile(&converged, 1.0),
        write_median_ms: percentile(&writes, 0.5),
    })
}

async fn futures_join(
    waits: Vec<impl std::future::Future<Output = anyhow::Result<Instant>> + Send + 'static>,
) -> Vec<anyhow::Result<Instant>> {
    let handles: Vec<_> = waits.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap_or_else(|e| Err(e.into())));
    }
    out
}

fn percentile(values: &[Duration], q: f64) -> f64 {
    let mut ms: Vec<f64> = values.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    if ms.is_empty() {
        return 0.0;
    }
    let index = ((ms.len() as f64 - 1.0) * q).round() as usize;
    ms[index.min(ms.len() - 1)]
}

fn spawn(
    gateway: &Path,
    dir: &Path,
    n: u8,
    endpoint: &str,
    dns: SocketAddr,
    port: u16,
    seed: Option<&Path>,
) -> anyhow::Result<Replica> {
    let ip = IpAddr::from([127, 0, 0, n + 2]);
    let own = dir.join(format!("replica-{n}"));
    std::fs::create_dir_all(&own)?;
    let admin = SocketAddr::new(ip, free_port()?);
    let config = own.join("gateway.yaml");
    std::fs::write(
        &config,
        format!(
            "store: {{etcd: {{endpoints: [\"{endpoint}\"], prefix: \"{PREFIX}\", cache_dir: \"{cache}\"}}}}\n\
             id: replica-{n}\nbind_address: {ip}\ndrain_delay: 0s\n\
             admin: {{address: \"{admin}\", token_file: \"{token}\", max_body_bytes: 67108864}}\n\
             audit: {{path: \"{audit}\"}}\ndns: {{servers: [\"{dns}\"]}}\n",
            cache = own.join("cache").display(),
            token = dir.join("admin.token").display(),
            audit = own.join("audit.log").display(),
        ),
    )?;
    let mut cmd = Command::new(gateway);
    cmd.arg("--config").arg(&config);
    if let Some(seed) = seed {
        cmd.arg("--seed-from").arg(seed);
    }
    let log = std::fs::File::create(own.join("stderr.log"))?;
    let child = cmd
        .current_dir(&own)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("start {}", gateway.display()))?;
    Ok(Replica {
        child,
        admin,
        http: SocketAddr::new(ip, port),
    })
}

async fn admin(
    replica: &Replica,
    method: Method,
    path: &str,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    let auth = format!("Bearer {TOKEN}");
    let mut client = KeepAliveClient::connect(replica.admin)
        .await?
        .with_timeout(Duration::from_secs(120));
    let response = client
        .request(
            method,
            path,
            &[
                ("authorization", auth.as_str()),
                ("content-type", "application/yaml"),
            ],
            body.to_owned(),
        )
        .await?;
    Ok((response.status.as_u16(), response.text()))
}

async fn version(replica: &Replica) -> anyhow::Result<u64> {
    let (_, body) = admin(replica, Method::GET, "/policy/history", "").await?;
    let history: serde_json::Value = serde_json::from_str(&body)?;
    history["current"]
        .as_u64()
        .context("no current version in /policy/history")
}

async fn wait_ready(replica: &Replica) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if let Ok(mut client) = KeepAliveClient::connect(replica.admin).await {
            if client.get("/readyz").await.is_ok_and(|r| r.status == 200) {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("not ready within 120 s")
}

async fn wait_version(replica: &Replica, want: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if version(replica).await? >= want {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("version {want} not reached within 120 s")
}

/// Asks for `authority` through `http` back to back until it is allowed; returns when.
async fn until_allowed(http: SocketAddr, authority: String) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut client = KeepAliveClient::connect(http).await?;
    while Instant::now() < deadline {
        if client.is_closed() {
            client = KeepAliveClient::connect(http).await?;
        }
        let response = client
            .request(Method::GET, "/", &[("host", authority.as_str())], "")
            .await?;
        if response.status == 200 {
            return Ok(Instant::now());
        }
    }
    bail!("{authority} still denied by {http} after 120 s")
}
