//! The gateway as the admin API sees it: the [`egress_admin::Control`] the admin router
//! serves — the policy store's reads and writes, decisions on request, open
//! connections, the live audit tail, readiness and draining.

mod suggest;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use egress_admin::api::{
    Applied, Change, CheckAnswer, CheckRequest, ConnectionInfo, Detail, DrainReport, Fleet,
    FleetMember, Format, History, HistoryEntry, ImportAnswer, ImportNote, PolicyText, PolicyView,
    WriteOptions,
};
use egress_admin::ControlError;
use tokio::sync::broadcast;

use crate::audit::AuditSink;
use crate::connections::Kind;
use crate::listen::Context;
use crate::metrics::Metrics;
use crate::policy::edit::{as_one_yaml, merge, parse_rule, set_rule, to_yaml};
use crate::policy::store::write::{Candidate, WriteError};
use crate::policy::store::PolicyStore;
use crate::policy::{compile, Policy, PolicyErrors, PolicyFile};

mod check;

/// The comment heading a `policy.yaml` the admin API generated.
const WRITTEN: &str = "written through the egress-gateway admin API";

/// What the admin API controls.
#[derive(Debug)]
pub struct GatewayControl {
    /// The shared state of every listener: connections, drain, tasks.
    pub ctx: Arc<Context>,
    /// The policy in force.
    pub store: Arc<PolicyStore>,
    /// The audit writer, for the live tail.
    pub sink: Arc<AuditSink>,
    /// Readiness; false once draining.
    pub ready: Arc<AtomicBool>,
    /// Every collector.
    pub metrics: Metrics,
    /// How long a drain waits for work in flight.
    pub drain_timeout: Duration,
    /// The running listeners, for `/readyz` details.
    pub listeners: Arc<crate::app::RunningListeners>,
    /// The audit log file, for `/policy/suggest`; `None` when it goes to stdout.
    pub audit_path: Option<std::path::PathBuf>,
}

impl egress_admin::Control for GatewayControl {
    fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && self.store.loaded()
    }

    fn details(&self) -> Vec<String> {
        let mut out = self.store.details();
        out.extend(self.listeners.details());
        out.extend(self.sink.details());
        out
    }

    fn dns_allocations(&self) -> egress_admin::api::DnsAllocations {
        let policy = self.store.current();
        egress_admin::api::DnsAllocations {
            version: self.store.version(),
            allocations: policy
                .allocations()
                .iter()
                .map(|a| egress_admin::api::DnsAllocation {
                    host: a.host.to_owned(),
                    address: a.address.to_string(),
                    range: a.range.to_string(),
                })
                .collect(),
        }
    }

    fn fleet(&self) -> Result<Fleet, ControlError> {
        let Some(etcd) = self.store.etcd() else {
            // A store of its own: a fleet of one, converged by definition.
            let version = self.store.version();
            return Ok(Fleet {
                store: self.store.describe(),
                latest: version,
                answered_by: "this gateway".to_owned(),
                members: vec![FleetMember {
                    id: "this gateway".to_owned(),
                    admin: String::new(),
                    listeners: self
                        .listeners
                        .addrs()
                        .into_iter()
                        .map(|(name, addr)| (name, addr.to_string()))
                        .collect(),
                    version,
                    converged: true,
                    build: env!("CARGO_PKG_VERSION").to_owned(),
                    started: String::new(),
                    draining: !self.ready.load(Ordering::Acquire),
                }],
            });
        };
        let latest = etcd.latest().max(self.store.version());
        Ok(Fleet {
            store: self.store.describe(),
            latest,
            answered_by: etcd.id().to_owned(),
            members: etcd
                .members()
                .into_iter()
                .map(|m| FleetMember {
                    converged: m.version == latest,
                    id: m.id,
                    admin: m.admin,
                    listeners: m.listeners,
                    version: m.version,
                    build: m.build,
                    started: m.started,
                    draining: m.draining,
                })
                .collect(),
        })
    }

    fn metrics(&self) -> String {
        // The watcher counts refused changes; bring the counter up to date at scrape.
        let rejected = self.metrics.policy_reloads.with_label_values(&["rejected"]);
        let refused = self.store.rejected();
        if refused > rejected.get() {
            rejected.inc_by(refused - rejected.get());
        }
        if let Some(etcd) = self.store.etcd() {
            self.metrics.store_up.set(i64::from(etcd.up()));
            self.metrics
                .fleet_members
                .set(i64::try_from(etcd.members().len()).unwrap_or(i64::MAX));
            let lag = etcd.latest().saturating_sub(self.store.version());
            self.metrics
                .revision_lag
                .set(i64::try_from(lag).unwrap_or(i64::MAX));
        }
        // Listeners come and go with the policy: only the running ones are exported.
        let expiry = &self.metrics.certificate_expiry;
        expiry.reset();
        for (listener, at) in self.ctx.certificates.expiries() {
            expiry.with_label_values(&[&listener]).set(at as f64);
        }
        self.metrics.render()
    }

    fn policy(&self, format: Format) -> PolicyView {
        let policy = self.store.current();
        let version = self.store.version();
        let text = match format {
            Format::Yaml => as_one_yaml(policy.sources(), &format!("policy version {version}")),
            Format::Json => {
                serde_json::to_string_pretty(&merge(policy.sources())).unwrap_or_default() + "\n"
            }
        };
        PolicyView { version, text }
    }

    fn change(&self, change: Change, options: WriteOptions) -> Result<Applied, ControlError> {
        let store = &self.store;
        let written = store
            .write(
                &options.author,
                options.if_match,
                options.dry_run,
                |current| candidate(change.clone(), current, store),
            )
            .map_err(control_error)?;
        Ok(Applied {
            version: written.version,
            changed: written.changed,
            dry_run: options.dry_run,
            summary: written.summary,
        })
    }

    fn history(&self) -> History {
        History {
            current: self.store.version(),
            versions: self
                .store
                .history()
                .into_iter()
                .map(|m| HistoryEntry {
                    version: m.version,
                    time: m.time,
                    author: m.author,
                    summary: m.summary,
                })
                .collect(),
        }
    }

    fn check(
        &self,
        request: CheckRequest,
    ) -> Pin<Box<dyn Future<Output = Result<CheckAnswer, ControlError>> + Send>> {
        let policy = self.store.current();
        let version = self.store.version();
        let ctx = Arc::clone(&self.ctx);
        Box::pin(async move { check::check(&ctx.egress, &policy, version, &request).await })
    }

    fn suggest(
        &self,
        min_count: u64,
        group_wildcards: bool,
        since: Option<String>,
    ) -> Result<egress_admin::suggest::Suggestion, ControlError> {
        suggest::suggest(
            self,
            self.audit_path.as_deref(),
            min_count,
            group_wildcards,
            since,
        )
    }

    fn import_istio(&self, text: &str) -> Result<ImportAnswer, ControlError> {
        let imported =
            crate::import::istio(text).map_err(|e| ControlError::Internal(e.to_string()))?;
        Ok(ImportAnswer {
            dropped: imported.dropped(),
            rules: imported.rules,
            listeners: imported.listeners,
            notes: imported
                .notes
                .into_iter()
                .map(|n| ImportNote {
                    resource: n.resource,
                    field: n.field,
                    message: n.message,
                    dropped: n.dropped,
                })
                .collect(),
            policy: imported.policy,
        })
    }

    fn connections(&self) -> Vec<ConnectionInfo> {
        self.ctx
            .connections
            .snapshot()
            .iter()
            .map(|entry| {
                let target = entry.target();
                ConnectionInfo {
                    id: entry.id,
                    listener: entry.listener.to_string(),
                    kind: match entry.kind {
                        Kind::Http => "http",
                        Kind::Tunnel => "tunnel",
                    }
                    .to_owned(),
                    source: entry.source.addr.to_string(),
                    identity: entry.source.identity.clone(),
                    destination: target.as_ref().map(|(d, _)| d.to_string()),
                    rule: target.and_then(|(_, rule)| rule),
                    started: rfc3339(entry.started),
                    age_seconds: entry.age().as_secs_f64(),
                    bytes_received: entry.bytes_received.load(Ordering::Relaxed),
                    bytes_sent: entry.bytes_sent.load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    fn audit_tail(&self) -> broadcast::Receiver<Arc<str>> {
        self.sink.subscribe()
    }

    fn drain(&self) -> Pin<Box<dyn Future<Output = DrainReport> + Send>> {
        let ready = Arc::clone(&self.ready);
        let ctx = Arc::clone(&self.ctx);
        let timeout = self.drain_timeout;
        Box::pin(async move {
            let started = Instant::now();
            ready.store(false, Ordering::Release);
            tracing::info!(?timeout, "draining, as asked through the admin API");
            let drained = ctx.drain(timeout).await;
            DrainReport {
                drained,
                in_flight: ctx.connections.len(),
                waited_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            }
        })
    }

    fn admin_request(&self, route: &'static str, method: &'static str, code: u16) {
        let mut digits = itoa::Buffer::new();
        self.metrics
            .admin_requests
            .with_label_values(&[route, method, digits.format(code)])
            .inc();
    }

    fn admin_auth_failed(&self, reason: &'static str) {
        self.metrics
            .admin_auth_failures
            .with_label_values(&[reason])
            .inc();
    }
}

/// The text a change proposes for `policy.yaml`.
fn candidate(
    change: Change,
    current: &Policy,
    store: &PolicyStore,
) -> Result<Candidate, WriteError> {
    let generated = |text: String, note: Option<String>| Candidate {
        text,
        body_lines: false,
        note,
    };
    match change {
        Change::Replace(PolicyText { text, .. }) if text.trim().is_empty() => {
            Err(WriteError::BadRequest(
                "the body is empty; send the whole policy set (an empty set would declare no listener and deny everything; send `rules: []` to mean it)".to_owned(),
            ))
        }
        Change::Replace(PolicyText {
            text,
            format: egress_admin::api::Format::Yaml,
        }) => Ok(Candidate {
            text,
            body_lines: true,
            note: None,
        }),
        Change::Replace(PolicyText { text, .. }) => {
            // Checked as sent first, so that error lines point into the JSON.
            let files = [PolicyFile {
                name: "request body".to_owned(),
                text: text.into(),
            }];
            compile(&files).map_err(|errors| WriteError::Invalid {
                errors,
                body_lines: true,
            })?;
            Ok(generated(to_yaml(&merge(&files), WRITTEN), None))
        }
        Change::SetRule { name, rule } => {
            let rule = parse_rule(&rule.text, &name).map_err(|e| WriteError::Invalid {
                errors: PolicyErrors(vec![e]),
                body_lines: true,
            })?;
            let mut doc = merge(current.sources());
            set_rule(&mut doc, rule);
            Ok(generated(to_yaml(&doc, WRITTEN), None))
        }
        Change::DeleteRule(name) => {
            let mut doc = merge(current.sources());
            let before = doc.rules.len();
            doc.rules.retain(|r| r.name != name);
            if doc.rules.len() == before {
                return Err(WriteError::NotFound(format!(
                    "no rule named {name:?}; GET /policy lists the rules"
                )));
            }
            Ok(generated(to_yaml(&doc, WRITTEN), None))
        }
        Change::Rollback(version) => {
            let files = store.kept(version)?.ok_or_else(|| {
                WriteError::NotFound(format!(
                    "version {version} is not kept; GET /policy/history lists the versions kept"
                ))
            })?;
            let text = as_one_yaml(&files, &format!("policy version {version}, restored"));
            Ok(generated(text, Some(format!("rollback to version {version}"))))
        }
    }
}

fn control_error(e: WriteError) -> ControlError {
    match e {
        WriteError::Invalid { errors, body_lines } => {
            let count = errors.0.len();
            ControlError::Invalid {
                message: format!(
                    "invalid policy: {count} error{}; nothing changed",
                    if count == 1 { "" } else { "s" }
                ),
                details: errors
                    .0
                    .into_iter()
                    .map(|e| Detail {
                        path: e.path,
                        line: e.line.filter(|_| body_lines),
                        message: e.message,
                    })
                    .collect(),
            }
        }
        WriteError::BadRequest(m) => ControlError::BadRequest(m),
        WriteError::Stale { expected, current } => ControlError::Stale { expected, current },
        WriteError::ReadOnly(m) => ControlError::ReadOnly(m),
        WriteError::NotFound(m) => ControlError::NotFound(m),
        WriteError::Io(m) => ControlError::Internal(m),
        WriteError::Unavailable(m) => ControlError::Unavailable(m),
    }
}

fn rfc3339(at: std::time::SystemTime) -> String {
    time::OffsetDateTime::from(at)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
