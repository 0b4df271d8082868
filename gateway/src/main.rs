//! `egress-gateway`: parse flags, load the bootstrap config, init logging, run, and map
//! the outcome to an exit code.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use egress_gateway::config::{Config, LogFormat};

/// An egress gateway: lets out of the mesh only what policy allows, and audits it.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Flags {
    /// Bootstrap configuration file (YAML); flags override its keys.
    #[arg(long, short = 'c', env = "EGRESS_CONFIG")]
    config: Option<PathBuf>,
    /// Policy directory (every *.yaml in it; created with the default policy if missing;
    /// default ./state/policies).
    #[arg(long)]
    policies: Option<PathBuf>,
    /// Admin API address.
    #[arg(long)]
    admin_address: Option<SocketAddr>,
    /// Stats listener address (/metrics, /healthz, /readyz without a token).
    #[arg(long)]
    stats_address: Option<SocketAddr>,
    /// Run no stats listener (the admin API still serves the same routes).
    #[arg(long)]
    no_stats: bool,
    /// Also export Istio's metric names (istio_requests_total, ...).
    #[arg(long)]
    stats_istio_names: bool,
    /// Admin token file.
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
    /// Audit log file, or - for standard output.
    #[arg(long)]
    audit_path: Option<String>,
    /// Audit format: istio, envoy, json, or a format string of Envoy command operators.
    #[arg(long)]
    audit_format: Option<String>,
    /// DNS server to ask (repeatable); default: the system's resolver configuration.
    #[arg(long = "dns-server")]
    dns_servers: Vec<SocketAddr>,
    /// How long SIGTERM waits for work in flight (e.g. 30s).
    #[arg(long, value_parser = humantime::parse_duration)]
    drain_timeout: Option<std::time::Duration>,
    /// Format of the gateway's own logs (RUST_LOG sets the level).
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// Share the policy through etcd at these client URLs (comma-separated), as
    /// `store.etcd.endpoints`.
    #[arg(long, env = "EGRESS_ETCD_ENDPOINTS", value_delimiter = ',')]
    etcd_endpoints: Vec<String>,
    /// The etcd key prefix (`store.etcd.prefix`, default /egress/).
    #[arg(long, env = "EGRESS_ETCD_PREFIX")]
    etcd_prefix: Option<String>,
    /// Where the last applied etcd policy is cached (`store.etcd.cache_dir`).
    #[arg(long, env = "EGRESS_ETCD_CACHE_DIR")]
    etcd_cache_dir: Option<PathBuf>,
    /// Seed an empty etcd prefix from this policy directory (ignored when it holds a policy).
    #[arg(long, env = "EGRESS_SEED_FROM")]
    seed_from: Option<PathBuf>,
    /// This replica's id in the fleet (default: the host name).
    #[arg(long, env = "EGRESS_ID")]
    id: Option<String>,
    /// Bind every listener on this address (with its declared port).
    #[arg(long, env = "EGRESS_BIND_ADDRESS")]
    bind_address: Option<std::net::IpAddr>,
    /// How long listeners keep accepting after SIGTERM while readiness says 503 (e.g. 5s).
    #[arg(long, value_parser = humantime::parse_duration)]
    drain_delay: Option<std::time::Duration>,
    /// Runtime worker threads (default: the cores the process may run on).
    #[arg(long, env = "EGRESS_WORKERS")]
    workers: Option<usize>,
    /// Check the policy directory and exit: 0 when valid, 1 with every error otherwise.
    #[arg(long)]
    check: bool,
}

fn config(flags: &Flags) -> Result<Config, String> {
    let mut config = match &flags.config {
        Some(path) => Config::from_file(path).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    if let Some(v) = &flags.policies {
        config.policies = v.clone();
    }
    if let Some(v) = flags.admin_address {
        config.admin.address = v;
    }
    if let Some(v) = flags.stats_address {
        config.stats.address = v;
    }
    if flags.no_stats {
        config.stats.enabled = false;
    }
    if flags.stats_istio_names {
        config.stats.istio_names = true;
    }
    if let Some(v) = &flags.admin_token_file {
        config.admin.token_file = Some(v.clone());
    }
    if let Some(v) = &flags.audit_path {
        config.audit.path = v.clone();
    }
    if let Some(v) = &flags.audit_format {
        config.audit.format = v.clone();
    }
    if !flags.dns_servers.is_empty() {
        config.dns.servers = flags.dns_servers.clone();
    }
    if let Some(v) = flags.drain_timeout {
        config.drain_timeout = v;
    }
    if let Some(v) = flags.log_format {
        config.log.format = v;
    }
    if !flags.etcd_endpoints.is_empty() {
        config
            .store
            .etcd
            .get_or_insert_with(Default::default)
            .endpoints = flags.etcd_endpoints.clone();
    }
    if let Some(v) = &flags.etcd_prefix {
        config
            .store
            .etcd
            .get_or_insert_with(Default::default)
            .prefix = v.clone();
    }
    if let Some(v) = &flags.etcd_cache_dir {
        config
            .store
            .etcd
            .get_or_insert_with(Default::default)
            .cache_dir = v.clone();
    }
    if let Some(v) = &flags.seed_from {
        if config.store.etcd.is_none() {
            return Err(
                "--seed-from seeds the etcd store: set store.etcd (or --etcd-endpoints) too"
                    .to_owned(),
            );
        }
        config.seed_from = Some(v.clone());
    }
    if let Some(v) = &flags.id {
        config.id = Some(v.clone());
    }
    if let Some(v) = flags.bind_address {
        config.bind_address = Some(v);
    }
    if let Some(v) = flags.drain_delay {
        config.drain_delay = v;
    }
    if let Some(v) = flags.workers {
        config.workers = Some(v);
    }
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal: a file or journald gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> ExitCode {
    // Without it, pages freed by a compile go back to the system only when the process
    // allocates again, which an idle gateway may not do for a long time.
    #[cfg(target_os = "linux")]
    let _ = tikv_jemalloc_ctl::background_thread::write(true);
    let flags = Flags::parse();
    let config = match config(&flags) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("egress-gateway: {e}");
            return ExitCode::from(2);
        }
    };
    init_logs(config.log.format);
    if flags.check {
        return match egress_gateway::policy::load_dir(&config.policies) {
            Ok(policy) => {
                println!(
                    "{}: valid ({} rules)",
                    config.policies.display(),
                    policy.rules().len()
                );
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::FAILURE
            }
        };
    }
    // Given one core (a pinned gateway), one thread serves best: a multi-threaded runtime
    // would add a worker thread beside the main one and pay its cross-thread scheduling
    // on every wake-up (2.7% of the CPU per small HTTP request).
    let workers = config
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(workers);
        builder
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("egress-gateway: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let signals = match egress_gateway::app::Signals::install() {
            Ok(signals) => signals,
            Err(e) => {
                eprintln!("egress-gateway: cannot install signal handlers: {e}");
                return ExitCode::FAILURE;
            }
        };
        let json = config.log.format == LogFormat::Json;
        let gateway = match egress_gateway::app::start(config).await {
            Ok(gateway) => gateway,
            Err(e) if json => {
                tracing::error!(error = %e, "cannot start");
                return ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!("egress-gateway: {e}");
                return ExitCode::FAILURE;
            }
        };
        // With JSON logs every line on stderr is JSON, the start-up line included.
        if json {
            tracing::info!(
                version = env!("CARGO_PKG_VERSION"),
                serving = %gateway.describe(),
                "started"
            );
        } else {
            eprintln!(
                "egress-gateway {}: {}",
                env!("CARGO_PKG_VERSION"),
                gateway.describe()
            );
        }
        if gateway.run_until(signals).await {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(3)
        }
    })
}

/// jemalloc, with its background thread purging freed pages: compiling a large policy
/// peaks far above what it keeps (100k rules: about 250 MB while parsing, 40 MB kept),
/// and glibc's allocator kept most of that peak (99 MiB RSS against 55 MiB here).
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
