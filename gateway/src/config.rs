//! The bootstrap configuration: `--config gateway.yaml`, every key also a flag.
//!
//! Everything is optional; a gateway started with no file and no flag serves the policy
//! directory `./state/policies` (created with the embedded default policy when missing,
//! so admin writes never touch the repository's `policies/`),
//! writes its audit log to `./audit.log`, its admin API to 127.0.0.1:15000 and its stats
//! (metrics and probes) to 0.0.0.0:15090.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The embedded default policy, written to an empty policy directory at first start.
pub const DEFAULT_POLICY: &str = include_str!("../../policies/default.yaml");

/// The bootstrap configuration after defaults are applied.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The policy directory (the file store), watched for changes.
    pub policies: PathBuf,
    /// The admin API.
    pub admin: AdminConfig,
    /// The stats listener: metrics and probes, without a token.
    pub stats: StatsConfig,
    /// The audit log.
    pub audit: AuditConfig,
    /// Name resolution.
    pub dns: DnsConfig,
    /// Limits on what clients may send.
    pub limits: LimitsConfig,
    /// How long SIGTERM waits for work in flight.
    #[serde(with = "humantime_serde_compat")]
    pub drain_timeout: Duration,
    /// The gateway's own logs.
    pub log: LogConfig,
    /// Where the policy lives: the policy directory (default) or etcd, for a fleet.
    pub store: StoreConfig,
    /// This replica's name in the fleet (default: the host name).
    pub id: Option<String>,
    /// Every listener binds this address (with its declared port) instead of the
    /// policy's: several replicas sharing one policy on one host, each on its own address.
    pub bind_address: Option<std::net::IpAddr>,
    /// After SIGTERM or a drain, listeners keep accepting this long while readiness
    /// already says 503, so load balancers stop sending first.
    #[serde(with = "humantime_serde_compat")]
    pub drain_delay: Duration,
    /// Runtime worker threads (default: the cores the process may run on; 1 runs
    /// everything on one thread).
    pub workers: Option<usize>,
    /// Seed an empty etcd prefix from this policy directory (`--seed-from`).
    #[serde(skip)]
    pub seed_from: Option<PathBuf>,
    /// Bind every listener on this address with an ephemeral port instead of what the
    /// policy declares: how tests run many gateways side by side.
    #[serde(skip)]
    pub listen_override: Option<std::net::IpAddr>,
}

/// `store:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// The etcd policy store; absent = the policy directory.
    pub etcd: Option<EtcdConfig>,
}

/// `store: {etcd: ...}`: the policy set shared by a fleet through etcd.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EtcdConfig {
    /// Client URLs, e.g. `http://10.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// Every key of the policy set lives under this prefix.
    pub prefix: String,
    /// Client TLS (`https://` endpoints).
    pub tls: Option<EtcdTls>,
    /// etcd user name (with `password_file`).
    pub username: Option<String>,
    /// A file holding the user's password.
    pub password_file: Option<PathBuf>,
    /// How long connecting (and each request) may take.
    #[serde(with = "humantime_serde_compat")]
    pub dial_timeout: Duration,
    /// The last applied policy is kept here, so a replica that starts while etcd is
    /// down serves it.
    pub cache_dir: PathBuf,
}

/// `store.etcd.tls`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdTls {
    /// The CA that signed etcd's server certificate (PEM).
    pub ca: PathBuf,
    /// A client certificate (PEM), when etcd asks for one.
    pub cert: Option<PathBuf>,
    /// Its key (PEM).
    pub key: Option<PathBuf>,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        Self {
            endpoints: vec!["http://127.0.0.1:2379".to_owned()],
            prefix: "/egress/".to_owned(),
            tls: None,
            username: None,
            password_file: None,
            dial_timeout: Duration::from_secs(5),
            cache_dir: PathBuf::from("state/policy-cache"),
        }
    }
}

/// `admin:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Where the admin API listens.
    pub address: SocketAddr,
    /// Bearer tokens, one per line, optionally `name:token`; created with a random
    /// token when missing. Default: `admin.token` in the working directory.
    pub token_file: Option<PathBuf>,
    /// The largest request body the admin API accepts, in bytes.
    pub max_body_bytes: usize,
    /// How many policy versions the history keeps.
    pub history: usize,
}

/// `stats:`: `/metrics`, `/healthz` and `/readyz` on an address of their own, so that a
/// cluster's Prometheus and kubelet reach them without reaching the policy API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatsConfig {
    /// Whether the stats listener runs at all; the admin API serves the same three
    /// routes either way.
    pub enabled: bool,
    /// Where it listens. Istio's port, on every interface: what a scrape reaches.
    pub address: SocketAddr,
    /// Also export Istio's metric names and labels (`istio_requests_total`, ...), so
    /// dashboards built for istio-egressgateway keep working.
    pub istio_names: bool,
}

/// `audit:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// A file, or `-` for standard output.
    pub path: String,
    /// `istio`, `envoy`, `json`, or a format string of Envoy command operators.
    pub format: String,
    /// Also write every line to standard output (when `path` is a file).
    pub stdout: bool,
    /// Lines queued for the writer before new ones are dropped (and counted).
    pub buffer_lines: usize,
    /// Long tunnels write an interim line this often.
    #[serde(with = "humantime_serde_compat")]
    pub flush_interval: Duration,
    /// `interval` (default): lines are synced to disk every second, so a power loss
    /// loses at most about a second of them; `never`: the kernel writes them back.
    pub fsync: Fsync,
    /// `fail_open` (default): when lines cannot be written, traffic goes on and every
    /// lost line is counted; `fail_closed`: nothing is let out until they can.
    pub on_error: OnError,
    /// Rotate the file once it reaches this many bytes (besides SIGHUP for logrotate).
    pub max_bytes: Option<u64>,
    /// Rotated files kept with `max_bytes` (`audit.log.1` newest).
    pub keep: usize,
}

/// `audit.on_error`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Serve, and count what could not be written.
    #[default]
    FailOpen,
    /// Refuse to let anything out (503 `OM`) while lines cannot be written.
    FailClosed,
}

/// `audit.fsync`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// Every second.
    #[default]
    Interval,
    /// Left to the kernel.
    Never,
}

/// `dns:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// Name servers (UDP, with TCP fallback); empty = the system's configuration.
    pub servers: Vec<SocketAddr>,
    /// How long one query waits for an answer (a lookup as a whole never outlives the
    /// rule's `connect_timeout`).
    #[serde(with = "humantime_serde_compat")]
    pub timeout: Duration,
    /// Tries per name server.
    pub attempts: usize,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            timeout: Duration::from_secs(2),
            attempts: 2,
        }
    }
}

/// `limits:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request head (request line and headers) accepted, in bytes.
    pub max_header_bytes: usize,
    /// A client must send its whole request head within this time.
    #[serde(with = "humantime_serde_compat")]
    pub header_timeout: Duration,
    /// A keep-alive connection with no request for this long is closed.
    #[serde(with = "humantime_serde_compat")]
    pub idle_timeout: Duration,
    /// The accept queue of every listening socket; default the system's
    /// `net.core.somaxconn`.
    pub backlog: Option<u32>,
    /// Connections open at once on one listener; more are refused (503 `UO`).
    pub max_connections: Option<usize>,
    /// Connections open at once from one client address on one listener.
    pub max_connections_per_source: Option<usize>,
    /// Connections open at once with one client identity (a client certificate's URI
    /// SAN) on one listener, whatever addresses they come from.
    pub max_connections_per_identity: Option<usize>,
    /// Queries a second one client may send a `dns` listener (and as many at once);
    /// more are answered REFUSED, flag `RL`.
    pub dns_queries_per_source: u32,
    /// DNS-over-TCP connections open at once on one `dns` listener; more are closed.
    pub dns_tcp_connections: usize,
}

/// `log:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` (default) or `json`.
    pub format: LogFormat,
}

/// The gateway's own log format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            policies: PathBuf::from("state/policies"),
            admin: AdminConfig::default(),
            stats: StatsConfig::default(),
            audit: AuditConfig::default(),
            dns: DnsConfig::default(),
            limits: LimitsConfig::default(),
            drain_timeout: Duration::from_secs(30),
            log: LogConfig::default(),
            store: StoreConfig::default(),
            id: None,
            bind_address: None,
            drain_delay: Duration::from_secs(5),
            workers: None,
            seed_from: None,
            listen_override: None,
        }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            address: SocketAddr::from(([127, 0, 0, 1], 15000)),
            token_file: None,
            max_body_bytes: 4 * 1024 * 1024,
            history: 50,
        }
    }
}

impl Default for StatsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            address: SocketAddr::from(([0, 0, 0, 0], 15090)),
            istio_names: false,
        }
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            path: "audit.log".to_owned(),
            format: "istio".to_owned(),
            stdout: false,
            buffer_lines: 65_536,
            flush_interval: Duration::from_secs(60),
            fsync: Fsync::Interval,
            on_error: OnError::FailOpen,
            max_bytes: None,
            keep: 5,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_header_bytes: 64 * 1024,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(3600),
            backlog: None,
            max_connections: None,
            max_connections_per_source: None,
            max_connections_per_identity: None,
            dns_queries_per_source: 1000,
            dns_tcp_connections: 256,
        }
    }
}

/// A bootstrap configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid configuration.
    #[error("{path}:{line}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line (0 when unknown).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A value is out of range.
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Reads a configuration file.
    ///
    /// Fails when the file cannot be read, is not YAML, has unknown keys or bad values.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_yaml(&text, path)
    }

    /// Parses a configuration from YAML text; `path` is only used in errors.
    ///
    /// Fails on invalid YAML, unknown keys or bad values.
    pub fn from_yaml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let config: Config = serde_yaml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            line: e.location().map_or(0, |l| l.line()),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that serde cannot.
    ///
    /// Fails naming the key and the limit.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.limits.max_header_bytes < 8192 {
            return Err(ConfigError::Invalid(format!(
                "limits.max_header_bytes: {} is below the minimum of 8192",
                self.limits.max_header_bytes
            )));
        }
        if self.admin.max_body_bytes < 1024 {
            return Err(ConfigError::Invalid(format!(
                "admin.max_body_bytes: {} is below the minimum of 1024",
                self.admin.max_body_bytes
            )));
        }
        if self.admin.history == 0 {
            return Err(ConfigError::Invalid(
                "admin.history: must keep at least 1 version".to_owned(),
            ));
        }
        if self.audit.buffer_lines == 0 {
            return Err(ConfigError::Invalid(
                "audit.buffer_lines: must be at least 1".to_owned(),
            ));
        }
        if let Some(etcd) = &self.store.etcd {
            if etcd.endpoints.is_empty() {
                return Err(ConfigError::Invalid(
                    "store.etcd.endpoints: name at least one etcd client URL".to_owned(),
                ));
            }
            if !etcd.prefix.starts_with('/') {
                return Err(ConfigError::Invalid(format!(
                    "store.etcd.prefix: {:?} must start with /",
                    etcd.prefix
                )));
            }
            if etcd.username.is_some() != etcd.password_file.is_some() {
                return Err(ConfigError::Invalid(
                    "store.etcd: username and password_file go together".to_owned(),
                ));
            }
            if let Some(tls) = &etcd.tls {
                if tls.cert.is_some() != tls.key.is_some() {
                    return Err(ConfigError::Invalid(
                        "store.etcd.tls: cert and key go together".to_owned(),
                    ));
                }
            }
        }
        if self.dns.attempts == 0 || self.dns.timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "dns: timeout and attempts must be more than zero".to_owned(),
            ));
        }
        if self.workers == Some(0) {
            return Err(ConfigError::Invalid(
                "workers: must be at least 1".to_owned(),
            ));
        }
        if self.audit.max_bytes.is_some_and(|b| b < 4096) {
            return Err(ConfigError::Invalid(
                "audit.max_bytes: rotate at 4096 bytes or more".to_owned(),
            ));
        }
        if self.audit.path.is_empty() {
            return Err(ConfigError::Invalid(
                "audit.path: empty; use \"-\" for standard output".to_owned(),
            ));
        }
        Ok(())
    }
}

/// Durations written as `500ms`, `3s`, `1h` in the bootstrap file.
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "{text:?} is not a duration like 500ms, 3s, 1h: {e}"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_all_defaults() {
        let c = Config::from_yaml("", Path::new("g.yaml")).unwrap();
        assert_eq!(c.policies, PathBuf::from("state/policies"));
        assert_eq!(c.admin.address.to_string(), "127.0.0.1:15000");
        assert_eq!(c.audit.format, "istio");
        assert!(c.stats.enabled);
        assert_eq!(c.stats.address.to_string(), "0.0.0.0:15090");
        assert_eq!(c.drain_timeout, Duration::from_secs(30));
    }

    #[test]
    fn design_example_parses() {
        let text = r#"
policies: ./policies
admin: {address: "127.0.0.1:15000", token_file: ./admin.token}
stats: {address: "0.0.0.0:15090"}
audit: {path: ./audit.log, format: istio}
dns: {servers: ["127.0.0.1:5353"]}
drain_timeout: 30s
"#;
        let c = Config::from_yaml(text, Path::new("g.yaml")).unwrap();
        assert_eq!(c.dns.servers, vec!["127.0.0.1:5353".parse().unwrap()]);
        assert_eq!(c.audit.path, "./audit.log");
        assert_eq!(c.stats.address.to_string(), "0.0.0.0:15090");
    }

    #[test]
    fn stats_can_be_turned_off_and_rejects_unknown_keys() {
        let c = Config::from_yaml("stats: {enabled: false}\n", Path::new("g.yaml")).unwrap();
        assert!(!c.stats.enabled);
        assert!(
            !c.stats.istio_names,
            "Istio's names are off unless asked for"
        );
        let c = Config::from_yaml("stats: {istio_names: true}\n", Path::new("g.yaml")).unwrap();
        assert!(c.stats.istio_names);
        let err = Config::from_yaml("stats: {port: 15090}\n", Path::new("g.yaml")).unwrap_err();
        assert!(err.to_string().contains("port"), "{err}");
    }

    #[test]
    fn unknown_key_names_file_and_line() {
        let err = Config::from_yaml("policies: x\nadmn: {}\n", Path::new("g.yaml")).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("g.yaml:2:"), "{text}");
        assert!(text.contains("admn"), "{text}");
    }

    #[test]
    fn etcd_store_parses_with_defaults() {
        let text = "store: {etcd: {endpoints: [\"http://127.0.0.1:2379\"]}}\nbind_address: 127.0.0.2\ndrain_delay: 0s\n";
        let c = Config::from_yaml(text, Path::new("g.yaml")).unwrap();
        let etcd = c.store.etcd.unwrap();
        assert_eq!(etcd.prefix, "/egress/");
        assert_eq!(etcd.dial_timeout, Duration::from_secs(5));
        assert_eq!(c.bind_address, Some("127.0.0.2".parse().unwrap()));
        assert_eq!(c.drain_delay, Duration::ZERO);
        let err =
            Config::from_yaml("store: {etcd: {endpoints: []}}\n", Path::new("g.yaml")).unwrap_err();
        assert!(err.to_string().contains("store.etcd.endpoints"), "{err}");
    }

    #[test]
    fn bad_duration_is_explained() {
        let err = Config::from_yaml("drain_timeout: soon\n", Path::new("g.yaml")).unwrap_err();
        assert!(
            err.to_string().contains("\"soon\" is not a duration"),
            "{err}"
        );
    }
}
