//! Wiring and lifecycle: build the parts from the bootstrap config, start the listeners
//! and the admin API, follow policy changes (listeners included), and drain on shutdown.

mod listeners;

pub use listeners::Listeners as RunningListeners;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audit::{AuditFormat, AuditSink, AuditTarget, Auditor, FormatError, Recording};
use crate::config::{Config, DEFAULT_POLICY};
use crate::connections::Connections;
use crate::control::GatewayControl;
use crate::egress::Egress;
use crate::listen::{Context, ListenError};
use crate::metrics::Metrics;
use crate::policy::store::etcd::{self, follow::OpenError, Etcd};
use crate::policy::store::{PolicyStore, PolicyWatcher};
use crate::policy::PolicyErrors;
use crate::resolve::{ResolveError, Resolver};
use crate::upstream::Pool;
use listeners::Listeners;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The policy directory could not be created or seeded.
    #[error("policy directory {path}: {source}")]
    PolicyDir {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The policy set is invalid.
    #[error("invalid policy:\n{0}")]
    Policy(#[from] PolicyErrors),
    /// A listener could not be bound.
    #[error(transparent)]
    Listen(#[from] ListenError),
    /// The audit format does not parse.
    #[error("audit.format: {0}")]
    AuditFormat(#[from] FormatError),
    /// The audit log cannot be opened.
    #[error("audit.path {path}: {source}")]
    AuditLog {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The resolver could not be configured.
    #[error("dns: {0}")]
    Dns(#[from] ResolveError),
    /// The admin address could not be bound.
    #[error("admin.address {addr}: cannot bind: {source}")]
    Admin {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The stats address could not be bound.
    #[error("stats.address {addr}: cannot bind: {source}")]
    Stats {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The policy directory cannot be watched.
    #[error("cannot watch the policy directory: {0}")]
    Watch(#[from] notify::Error),
    /// The etcd store could not be set up.
    #[error("store.etcd: {0}")]
    Etcd(String),
    /// The seed for an empty etcd prefix is invalid.
    #[error(transparent)]
    Seed(#[from] OpenError),
    /// Metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The admin token file cannot be read, created or parsed.
    #[error(transparent)]
    AdminToken(#[from] egress_admin::auth::TokenError),
}

/// The signals the daemon answers, installed before anything listens, so a signal
/// that arrives during start-up is handled rather than killing the process.
#[derive(Debug)]
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers for SIGTERM, SIGINT and SIGHUP.
    ///
    /// Fails when a handler cannot be installed.
    pub fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    ctx: Arc<Context>,
    store: Arc<PolicyStore>,
    sink: Arc<AuditSink>,
    listeners: Arc<Listeners>,
    admin_addr: SocketAddr,
    stats_addr: Option<SocketAddr>,
    background: Vec<JoinHandle<()>>,
    ready: Arc<AtomicBool>,
    drain_timeout: Duration,
    drain_delay: Duration,
    audit_path: String,
    token_file: PathBuf,
    /// Stops the admin API, after draining: it answers `/readyz` (503) while work drains.
    admin_stop: CancellationToken,
    _watcher: Option<PolicyWatcher>,
}

/// The admin tokens: `admin.token_file`, or `admin.token` in the working directory,
/// created with a random token when missing.
fn admin_tokens(config: &Config) -> Result<(egress_admin::Tokens, PathBuf), StartError> {
    let path = config
        .admin
        .token_file
        .clone()
        .unwrap_or_else(|| PathBuf::from("admin.token"));
    let (tokens, created) = egress_admin::Tokens::load_or_create(&path)?;
    if created {
        tracing::info!(path = %path.display(), "created the admin token file with a new random token");
    }
    Ok((tokens, path))
}

/// Creates the policy directory with the embedded default policy when it is missing.
fn seed_policy_dir(dir: &Path) -> Result<(), StartError> {
    if dir.exists() {
        return Ok(());
    }
    let fail = |source| StartError::PolicyDir {
        path: dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    std::fs::write(dir.join("default.yaml"), DEFAULT_POLICY).map_err(fail)?;
    tracing::info!(dir = %dir.display(), "created the policy directory with the default policy");
    Ok(())
}

fn audit_targets(config: &Config) -> Vec<AuditTarget> {
    let mut targets = Vec::new();
    if config.audit.path == "-" {
        targets.push(AuditTarget::Stdout);
    } else {
        targets.push(AuditTarget::File(config.audit.path.clone().into()));
        if config.audit.stdout {
            targets.push(AuditTarget::Stdout);
        }
    }
    targets
}

/// Builds every part and starts serving.
///
/// Fails when the policy is invalid, a port is taken, or the audit log cannot be opened;
/// the error names the file, line, port or path.
pub async fn start(config: Config) -> Result<Gateway, StartError> {
    let store = open_store(&config).await?;
    let (tokens, token_file) = admin_tokens(&config)?;
    let format = AuditFormat::parse(&config.audit.format)?;
    let sink = Arc::new(
        AuditSink::open_with(
            audit_targets(&config),
            config.audit.buffer_lines,
            match config.audit.fsync {
                crate::config::Fsync::Interval => Some(crate::audit::SYNC_INTERVAL),
                crate::config::Fsync::Never => None,
            },
            config
                .audit
                .max_bytes
                .map(|max_bytes| crate::audit::Rotation {
                    max_bytes,
                    keep: config.audit.keep,
                }),
        )
        .map_err(|source| StartError::AuditLog {
            path: config.audit.path.clone(),
            source,
        })?,
    );
    let mut metrics = Metrics::new(prometheus::Registry::new())?;
    if config.stats.istio_names {
        metrics.enable_istio_names()?;
    }
    metrics.register_audit(Arc::clone(&sink))?;
    metrics.policy_applied(&store.current(), store.version());
    metrics.store_up.set(1);
    let resolver = Resolver::with_patience(
        &config.dns.servers,
        crate::resolve::Patience {
            timeout: config.dns.timeout,
            attempts: config.dns.attempts,
        },
    )?;
    let ctx = Arc::new(Context {
        egress: Egress {
            store: Arc::clone(&store.store),
            resolver,
            audit_gate: (config.audit.on_error == crate::config::OnError::FailClosed)
                .then(|| Arc::clone(&sink)),
            pool: Pool::new(metrics.upstream.clone()),
            metrics: metrics.clone(),
            rule_limits: Default::default(),
        },
        recording: Arc::new(Recording::new(
            Auditor::new(format, Arc::clone(&sink)),
            metrics.clone(),
        )),
        limits: config.limits.clone(),
        drain: CancellationToken::new(),
        tasks: TaskTracker::new(),
        connections: Connections::new(),
        audit_flush_interval: config.audit.flush_interval,
        certificates: crate::listen::certificates::Certificates::default(),
    });

    let backlog = crate::listen::backlog(config.limits.backlog);
    let listeners = Arc::new(Listeners::new(
        Arc::clone(&ctx),
        metrics.clone(),
        config.bind_address,
        config.listen_override,
        backlog,
    ));
    let first = listeners.apply(store.current().listeners());
    if let Some(error) = first.failed.into_iter().next() {
        listeners.stop();
        return Err(error.into());
    }
    let admin_listener =
        crate::listen::reuseport_listener(config.admin.address, backlog).map_err(|source| {
            StartError::Admin {
                addr: config.admin.address,
                source,
            }
        })?;
    let admin_addr = admin_listener.local_addr().unwrap_or(config.admin.address);
    // SO_REUSEPORT like the admin API: a second process on the node takes over.
    let stats_listener = match config.stats.enabled {
        true => Some(
            crate::listen::reuseport_listener(config.stats.address, backlog).map_err(|source| {
                StartError::Stats {
                    addr: config.stats.address,
                    source,
                }
            })?,
        ),
        false => None,
    };
    let stats_addr = stats_listener
        .as_ref()
        .map(|l| l.local_addr().unwrap_or(config.stats.address));
    let store_handle = Arc::clone(&store.store);
    let watcher = match store.backing() {
        crate::policy::store::Backing::Dir(_) => Some(store.store.watch()?),
        _ => None,
    };
    if listeners.addrs().is_empty() && store.loaded() {
        tracing::warn!("the policy declares no listener: nothing will be served");
    }

    let ready = Arc::new(AtomicBool::new(true));
    let control = Arc::new(GatewayControl {
        ctx: Arc::clone(&ctx),
        store: Arc::clone(&store_handle),
        sink: Arc::clone(&sink),
        ready: Arc::clone(&ready),
        metrics: metrics.clone(),
        drain_timeout: config.drain_timeout,
        listeners: Arc::clone(&listeners),
        audit_path: (config.audit.path != "-").then(|| config.audit.path.clone().into()),
    });
    let options = egress_admin::Options {
        tokens: Arc::new(tokens),
        body_limit: config.admin.max_body_bytes,
    };
    let admin_stop = CancellationToken::new();
    let mut background = Vec::new();
    if let Some(listener) = stats_listener {
        // Stopped with the admin API, after draining, so probes see 503 while work drains.
        let stopped = admin_stop.clone();
        let control = Arc::clone(&control) as Arc<dyn egress_admin::Control>;
        background.push(tokio::spawn(async move {
            let shutdown = async move { stopped.cancelled().await };
            if let Err(e) = egress_admin::serve_stats(listener, control, shutdown).await {
                tracing::error!(error = %e, "stats listener stopped");
            }
        }));
    }
    let stopped = admin_stop.clone();
    background.extend([
        tokio::spawn(async move {
            let shutdown = async move { stopped.cancelled().await };
            let served = egress_admin::serve(admin_listener, control, options, shutdown).await;
            if let Err(e) = served {
                tracing::error!(error = %e, "admin API stopped");
            }
        }),
        tokio::spawn(follow_policy(
            Arc::clone(&store_handle),
            metrics.clone(),
            Arc::clone(&listeners),
            Arc::clone(&ctx.connections),
        )),
        tokio::spawn(purge_pool(Arc::clone(&ctx.egress.pool))),
    ]);
    if let Some(etcd) = store_handle.etcd() {
        etcd.describe_me(|me| {
            me.admin = admin_addr.to_string();
            me.version = store_handle.version();
            me.listeners = listener_names(&listeners);
        });
        background.push(tokio::spawn(etcd::follow::follow(
            Arc::clone(&store_handle),
            store.revision,
        )));
        background.push(tokio::spawn(etcd::follow::register(Arc::clone(etcd))));
    }

    Ok(Gateway {
        ctx,
        store: store_handle,
        sink,
        listeners,
        admin_addr,
        stats_addr,
        background,
        ready,
        drain_timeout: config.drain_timeout,
        drain_delay: config.drain_delay,
        audit_path: config.audit.path.clone(),
        token_file,
        admin_stop,
        _watcher: watcher,
    })
}

/// The store opened, with the etcd revision read at start-up (where the watch goes on).
struct Opened {
    store: Arc<PolicyStore>,
    revision: Option<u64>,
}

impl std::ops::Deref for Opened {
    type Target = PolicyStore;
    fn deref(&self) -> &PolicyStore {
        &self.store
    }
}

/// The policy directory (seeded with the default policy when missing), or etcd.
async fn open_store(config: &Config) -> Result<Opened, StartError> {
    let Some(settings) = &config.store.etcd else {
        seed_policy_dir(&config.policies)?;
        let store = PolicyStore::open_keeping(config.policies.clone(), config.admin.history)?;
        return Ok(Opened {
            store,
            revision: None,
        });
    };
    let id = config.id.clone().unwrap_or_else(host_name);
    let etcd = Etcd::new(settings.clone(), id, config.admin.history)
        .map_err(|e| StartError::Etcd(e.to_string()))?;
    let (store, revision) = etcd::follow::open(Arc::new(etcd), config.seed_from.as_deref()).await?;
    Ok(Opened { store, revision })
}

/// The host name, the default replica id.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "egress-gateway".to_owned())
}

fn listener_names(listeners: &Listeners) -> BTreeMap<String, String> {
    listeners
        .addrs()
        .into_iter()
        .map(|(name, addr)| (name, addr.to_string()))
        .collect()
}

/// Keeps the version gauge current, closes open tunnels that a new policy denies, and
/// brings the listeners in step with the policy.
async fn follow_policy(
    store: Arc<PolicyStore>,
    metrics: Metrics,
    listeners: Arc<Listeners>,
    connections: Arc<Connections>,
) {
    let mut versions = store.subscribe();
    while versions.changed().await.is_ok() {
        let version = *versions.borrow_and_update();
        let policy = store.current();
        metrics.policy_applied(&policy, version);
        metrics.policy_reloads.with_label_values(&["applied"]).inc();
        let revoked = connections.redecide(&policy);
        if revoked > 0 {
            tracing::info!(
                version,
                revoked,
                "closed open tunnels the new policy denies"
            );
        }
        let applied = listeners.apply(policy.listeners());
        if !applied.is_empty() {
            for error in &applied.failed {
                tracing::error!(%error, "listener not bound; the rest of the policy applies");
            }
            tracing::info!(
                version,
                added = ?applied.added,
                changed = ?applied.changed,
                removed = ?applied.removed,
                "listeners changed"
            );
        }
        if let Some(etcd) = store.etcd() {
            etcd.describe_me(|me| {
                me.version = version;
                me.listeners = listener_names(&listeners);
            });
        }
    }
}

async fn purge_pool(pool: Arc<Pool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(15));
    loop {
        tick.tick().await;
        pool.purge();
    }
}

impl Gateway {
    /// The address a listener is bound to.
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners.addrs().get(name).copied()
    }

    /// Every bound listener.
    pub fn listeners(&self) -> BTreeMap<String, SocketAddr> {
        self.listeners.addrs()
    }

    /// The admin API's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The stats listener's address, when it runs.
    pub fn stats_addr(&self) -> Option<SocketAddr> {
        self.stats_addr
    }

    /// The policy store.
    pub fn store(&self) -> &Arc<PolicyStore> {
        &self.store
    }

    /// The audit writer.
    pub fn audit_sink(&self) -> &Arc<AuditSink> {
        &self.sink
    }

    /// The admin token file in use.
    pub fn token_file(&self) -> &Path {
        &self.token_file
    }

    /// A one-line summary for people: where it listens and logs.
    pub fn describe(&self) -> String {
        let listeners: Vec<String> = self
            .listeners
            .addrs()
            .iter()
            .map(|(name, addr)| format!("{name} on {addr}"))
            .collect();
        format!(
            "listening: {}; admin on {} (tokens: {}); stats on {}; audit log: {}; policy: {} (version {})",
            if listeners.is_empty() {
                "nothing".to_owned()
            } else {
                listeners.join(", ")
            },
            self.admin_addr,
            self.token_file.display(),
            self.stats_addr
                .map_or_else(|| "nothing (disabled)".to_owned(), |a| a.to_string()),
            if self.audit_path == "-" {
                "stdout"
            } else {
                &self.audit_path
            },
            self.store.describe(),
            self.store.version(),
        )
    }

    /// Serves until SIGTERM or SIGINT, reopening the audit log on SIGHUP, then drains.
    /// Returns whether everything in flight finished in time.
    pub async fn run_until(self, mut signals: Signals) -> bool {
        loop {
            tokio::select! {
                _ = signals.term.recv() => break,
                _ = signals.int.recv() => break,
                _ = signals.hup.recv() => {
                    tracing::info!("SIGHUP: reopening the audit log");
                    self.sink.reopen();
                }
            }
        }
        self.shutdown().await
    }

    /// Drains: readiness turns false, listeners stop accepting, work in flight finishes
    /// up to the drain timeout, the audit log is flushed. Returns whether everything in
    /// flight finished in time.
    pub async fn shutdown(self) -> bool {
        self.ready.store(false, Ordering::Release);
        tracing::info!(delay = ?self.drain_delay, timeout = ?self.drain_timeout, "draining");
        if let Some(etcd) = self.store.etcd() {
            etcd.describe_me(|me| me.draining = true);
        }
        // Readiness says 503 now; accepting goes on a while, so that load balancers
        // and kube-proxy stop sending before the port closes.
        tokio::time::sleep(self.drain_delay).await;
        self.listeners.stop();
        let drained = self.ctx.drain(self.drain_timeout).await;
        if let Some(etcd) = self.store.etcd() {
            etcd.leave().await;
        }
        self.admin_stop.cancel();
        for task in &self.background {
            task.abort();
        }
        let sink = Arc::clone(&self.sink);
        let _ = tokio::task::spawn_blocking(move || sink.close(Duration::from_secs(5))).await;
        drained
    }
}
