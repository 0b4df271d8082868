//! The command line: flags of each subcommand and how they become plans.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser};

use egress_loadtest::scenario::{Scenario, Workload};
use egress_loadtest::targets::TargetKind;

/// Measure egress-gateway against the direct path and its peers (nginx, HAProxy, Squid).
#[derive(Debug, Parser)]
#[command(version, about)]
pub enum Cli {
    /// Serve the stub upstreams on loopback until interrupted.
    Upstream(UpstreamArgs),
    /// Run one scenario against one target and report.
    Run(RunArgs),
    /// Run one scenario against several targets the tool starts, side by side.
    Compare(CompareArgs),
    /// The gateway's memory once listening and per idle CONNECT tunnel.
    Idle(IdleArgs),
    /// A fleet on a real etcd: time from a write's 200 until every replica enforces it.
    Converge(ConvergeArgs),
}

/// `converge`.
#[derive(Debug, Args)]
pub struct ConvergeArgs {
    /// Replica counts to measure (comma-separated), e.g. 3,10.
    #[arg(long, value_delimiter = ',', default_value = "3")]
    pub replicas: Vec<u8>,
    /// Writes measured per configuration.
    #[arg(long, default_value_t = 50)]
    pub changes: usize,
    /// Filler rule counts of the policy (comma-separated), e.g. 0,100000.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pub rules: Vec<usize>,
    /// The egress-gateway binary.
    #[arg(long, default_value = "target/release/egress-gateway")]
    pub gateway: PathBuf,
    /// The reports as JSON on standard output.
    #[arg(long)]
    pub json: bool,
}

/// `idle`.
#[derive(Debug, Args)]
pub struct IdleArgs {
    /// Idle tunnels to open (each needs two open files in this process and two in the
    /// gateway).
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub tunnels: usize,
    /// Time left for memory to settle before each reading.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub settle: Duration,
    /// The egress-gateway binary.
    #[arg(long, default_value = "target/release/egress-gateway")]
    pub gateway: PathBuf,
    /// The report as JSON on standard output.
    #[arg(long)]
    pub json: bool,
}

/// `upstream`.
#[derive(Debug, Args)]
pub struct UpstreamArgs {
    /// Body size of `/` and `/delay/MS` (`/bytes/N` serves N).
    #[arg(long, default_value_t = 64)]
    pub body_bytes: u64,
    /// HTTP/1.1 and h2c address.
    #[arg(long, default_value = "127.0.0.1:18080")]
    pub http: SocketAddr,
    /// TLS address (HTTP/1.1 inside).
    #[arg(long, default_value = "127.0.0.1:18443")]
    pub tls: SocketAddr,
    /// TCP echo address.
    #[arg(long, default_value = "127.0.0.1:18007")]
    pub echo: SocketAddr,
    /// TCP sink address.
    #[arg(long, default_value = "127.0.0.1:18009")]
    pub sink: SocketAddr,
    /// Write the CA certificate of the TLS stub here (PEM), for clients that verify.
    #[arg(long)]
    pub ca_out: Option<PathBuf>,
}

/// What each request is: the same for every target.
#[derive(Debug, Clone, Args)]
pub struct WorkloadArgs {
    /// The protocol.
    #[arg(long, value_enum, default_value_t = Scenario::Http1)]
    pub scenario: Scenario,
    /// Response body size (connect-echo: bytes each way per request).
    #[arg(long, default_value_t = 64)]
    pub body_bytes: usize,
    /// Percentage of requests sent to a destination the proxy denies.
    #[arg(long, default_value_t = 0)]
    pub deny_percent: u8,
    /// A new connection (TCP, TLS session, tunnel) for every request.
    #[arg(long)]
    pub new_connection: bool,
}

/// How much load.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Connections, each with one request in flight.
    #[arg(long, short = 'c', default_value_t = 50)]
    pub connections: usize,
    /// Open loop: total requests per second, latency corrected for coordinated
    /// omission. Without it: closed loop, as fast as the target answers.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Measured time per run (at most 1h).
    #[arg(long, short = 'd', default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Unmeasured time before each run.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// A request with no complete answer after this long fails as `timeout`.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub workload: WorkloadArgs,
    #[command(flatten)]
    pub load: LoadArgs,
    /// The proxy listener for the scenario (loopback only).
    #[arg(long, short = 't')]
    pub target: SocketAddr,
    /// The target is the stub upstream itself: no proxy, no CONNECT.
    #[arg(long)]
    pub direct: bool,
    /// Connect scenarios: the upstream port named in `CONNECT allowed.test:PORT`
    /// (the stub's TLS port for connect-tls, its echo port for connect-echo).
    #[arg(long, default_value_t = 0)]
    pub connect_port: u16,
    /// Stop after this many requests (besides the duration).
    #[arg(long)]
    pub requests: Option<u64>,
    /// Pin the load generator to these CPUs (taskset list, e.g. `1`).
    #[arg(long)]
    pub cpus: Option<String>,
    /// The report as JSON on standard output.
    #[arg(long)]
    pub json: bool,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
}

/// `compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    #[command(flatten)]
    pub workload: WorkloadArgs,
    #[command(flatten)]
    pub load: LoadArgs,
    /// Targets, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "direct,gateway,nginx,haproxy,squid"
    )]
    pub targets: Vec<TargetKind>,
    /// Runs per target; the table shows medians.
    #[arg(long, short = 'r', default_value_t = 3)]
    pub repetitions: usize,
    /// The egress-gateway binary.
    #[arg(long, default_value = "target/release/egress-gateway")]
    pub gateway: PathBuf,
    /// PROXY:GENERATOR CPU lists for taskset: the proxy under test on the first, the
    /// load generator and stub upstream on the second.
    #[arg(long, default_value = "0:1")]
    pub cpus: String,
    /// Do not pin anything.
    #[arg(long)]
    pub no_pin: bool,
    /// Directory for table.md, results.json and latency.svg
    /// (default: target/loadtest-results/SCENARIO-TIMESTAMP).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Keep each proxy's configuration and access log.
    #[arg(long)]
    pub keep_logs: bool,
    /// The results as JSON on standard output instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also run the gateway with this many extra rules in its policy (half exact hosts,
    /// half wildcards, none matching the scenario), as the row `gateway+N rules`.
    #[arg(long, default_value_t = 0)]
    pub policy_rules: usize,
    /// Rewrite each gateway's policy file this often during its measured runs (a new
    /// marker rule, temporary file renamed over it) and report the reloads.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub reload_every: Option<Duration>,
}

impl WorkloadArgs {
    /// The workload (connect port filled in later when the tool starts the upstreams).
    pub fn workload(&self, connect_port: u16) -> Workload {
        Workload {
            scenario: self.scenario,
            new_connection: self.new_connection,
            body_bytes: self.body_bytes,
            deny_percent: self.deny_percent,
            connect_port,
        }
    }
}

/// A taskset CPU list: digits, commas and dashes.
pub fn check_cpu_list(list: &str) -> anyhow::Result<&str> {
    if list.is_empty()
        || !list
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b',' || b == b'-')
    {
        anyhow::bail!("cpu list {list:?}: expected taskset's form, e.g. 0 or 1-3 or 0,2");
    }
    Ok(list)
}

/// `PROXY:GENERATOR` → the two lists.
pub fn split_cpus(spec: &str) -> anyhow::Result<(String, String)> {
    let Some((proxy, generator)) = spec.split_once(':') else {
        anyhow::bail!("--cpus {spec:?}: expected PROXY:GENERATOR, e.g. 0:1");
    };
    Ok((
        check_cpu_list(proxy)?.to_owned(),
        check_cpu_list(generator)?.to_owned(),
    ))
}

/// Pins this process (every thread it has so far: call before the runtime starts) to
/// `cpus`.
pub fn pin_self(cpus: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &std::process::id().to_string()])
        .stdout(std::process::Stdio::null())
        .status()?;
    if !status.success() {
        anyhow::bail!(
            "taskset -c {cpus} failed ({status}); is CPU {cpus} online? --no-pin skips pinning"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_specs() {
        assert_eq!(split_cpus("0:1").unwrap(), ("0".into(), "1".into()));
        assert_eq!(split_cpus("0-1:2,3").unwrap(), ("0-1".into(), "2,3".into()));
        assert!(split_cpus("0").is_err());
        assert!(split_cpus("a:1").is_err());
        assert!(check_cpu_list("").is_err());
    }

    #[test]
    fn flags_parse() {
        let cli = Cli::try_parse_from([
            "egress-loadtest",
            "compare",
            "--scenario",
            "tls",
            "--targets",
            "gateway,nginx",
            "-c",
            "10",
            "--duration",
            "2s",
        ])
        .unwrap();
        let Cli::Compare(args) = cli else {
            panic!("compare")
        };
        assert_eq!(args.targets, [TargetKind::Gateway, TargetKind::Nginx]);
        assert_eq!(args.load.duration, Duration::from_secs(2));
        assert_eq!(args.workload.scenario, Scenario::Tls);
        assert_eq!(args.policy_rules, 0);
        assert_eq!(args.reload_every, None);
        let cli = Cli::try_parse_from([
            "egress-loadtest",
            "compare",
            "--policy-rules",
            "100000",
            "--reload-every",
            "1s",
        ])
        .unwrap();
        let Cli::Compare(args) = cli else {
            panic!("compare")
        };
        assert_eq!(args.policy_rules, 100_000);
        assert_eq!(args.reload_every, Some(Duration::from_secs(1)));
        let cli = Cli::try_parse_from(["egress-loadtest", "idle", "-n", "9000"]).unwrap();
        let Cli::Idle(args) = cli else { panic!("idle") };
        assert_eq!(args.tunnels, 9000);
    }
}
