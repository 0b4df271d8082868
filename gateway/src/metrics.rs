//! Every collector of the gateway, on one registry that is passed in.
//!
//! Labels come from bounded sets only: listener and rule names (from the policy),
//! decisions, status codes, Envoy flags, address classes and reasons the code names.
//! Destination hosts never become labels, so denied traffic cannot blow up
//! cardinality. A labelled counter whose label values are known up front starts at 0
//! for each of them, so a ratio over it has a value before the first event.

mod audit;
mod dns_server;
mod istio;
mod labels;
mod upstream;

use std::sync::Arc;
use std::time::SystemTime;

use prometheus::{
    Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

pub use dns_server::DnsServerMetrics;
pub use istio::{IstioMetrics, IstioRecord};
pub use labels::{BAD_REQUEST_REASONS, TLS_INBOUND_FAILURES};
pub use upstream::{ConnectFailure, ConnectMetrics, DnsMetrics, LookupResult};

use crate::audit::AuditSink;
use crate::guard::AddressClass;
use crate::policy::Policy;

/// The gateway's collectors.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Requests (HTTP) and connections (TCP) by listener, decision, rule, code and flags.
    pub requests: IntCounterVec,
    /// Request duration in seconds, by listener and decision.
    pub request_duration: HistogramVec,
    /// Connections open now, by listener.
    pub connections_active: IntGaugeVec,
    /// Destinations refused by the address guard, by class.
    pub address_refused: IntCounterVec,
    /// Requests and connections denied, by reason (see [`crate::error::DENIAL_REASONS`]).
    pub denials: IntCounterVec,
    /// The policy version in force.
    pub policy_version: IntGauge,
    /// Policy reloads by result (applied / rejected).
    pub policy_reloads: IntCounterVec,
    /// Rules of the policy in force.
    pub policy_rules: IntGauge,
    /// Listeners of the policy in force.
    pub policy_listeners: IntGauge,
    /// When the policy in force was applied, in Unix seconds.
    pub policy_last_reload: Gauge,
    /// Bytes relayed, by listener, rule and direction (received / sent).
    pub bytes: IntCounterVec,
    /// HTTP request body sizes, by listener.
    pub request_size: HistogramVec,
    /// HTTP response body sizes, by listener.
    pub response_size: HistogramVec,
    /// Malformed or oversized requests refused before a decision, by reason.
    pub bad_requests: IntCounterVec,
    /// TLS handshakes that failed, by side (inbound / origination) and reason.
    pub tls_handshake_failures: IntCounterVec,
    /// Upstream connects: duration and failures.
    pub upstream: ConnectMetrics,
    /// Destination name lookups: results and duration.
    pub dns: DnsMetrics,
    /// Queries answered by dns listeners.
    pub dns_queries: DnsServerMetrics,
    /// Tunnels that started relaying, by listener and rule.
    pub tunnels_opened: IntCounterVec,
    /// Tunnels that ended, by listener and rule.
    pub tunnels_closed: IntCounterVec,
    /// How long tunnels lasted, by listener and rule.
    pub tunnel_duration: HistogramVec,
    /// Admin API requests, by route, method and response code.
    pub admin_requests: IntCounterVec,
    /// Admin API requests refused for their token, by reason.
    pub admin_auth_failures: IntCounterVec,
    /// When the certificate each TLS-terminating listener serves expires, Unix seconds.
    pub certificate_expiry: GaugeVec,
    /// Listeners of the policy that could not bind, by listener.
    pub listener_bind_errors: IntCounterVec,
    /// Istio's names for the request and TCP metrics, when `stats.istio_names` asks.
    pub istio: Option<IstioMetrics>,
    /// 1 while the policy store answers (always 1 for the policy directory).
    pub store_up: IntGauge,
    /// Live replicas registered in the fleet (etcd store only).
    pub fleet_members: IntGauge,
    /// The latest policy revision seen in the store minus the one in force.
    pub revision_lag: IntGauge,
    /// Connections refused by a connection limit, by listener and limit.
    pub connections_refused: IntCounterVec,
    /// Requests and tunnels a rule's limit refused, by rule and limit.
    pub rule_limited: IntCounterVec,
}

/// A bounded label for an HTTP status code: the code itself for 100-599 (and 0, no
/// response), else "other". Formatted on the stack: this runs for every request.
pub(crate) fn code_label(code: u16, digits: &mut itoa::Buffer) -> &str {
    if (100..600).contains(&code) || code == 0 {
        digits.format(code)
    } else {
        "other"
    }
}

impl Metrics {
    /// Registers every collector on `registry`.
    ///
    /// Fails only if a collector of the same name is already registered there.
    pub fn new(registry: Registry) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(
                "egress_requests_total",
                "HTTP requests and TCP connections, by listener, decision, rule, response code and Envoy flags",
            ),
            &["listener", "decision", "rule", "response_code", "response_flags"],
        )?;
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "egress_request_duration_seconds",
                "Time from request start to its last byte, by listener and decision",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["listener", "decision"],
        )?;
        let connections_active = IntGaugeVec::new(
            Opts::new(
                "egress_connections_active",
                "Downstream connections open now",
            ),
            &["listener"],
        )?;
        let address_refused = IntCounterVec::new(
            Opts::new(
                "egress_address_refused_total",
                "Destinations refused because they resolved to a special-purpose address",
            ),
            &["class"],
        )?;
        let policy_version = IntGauge::new("egress_policy_version", "The policy version in force")?;
        let policy_reloads = IntCounterVec::new(
            Opts::new(
                "egress_policy_reloads_total",
                "Policy changes seen, by result",
            ),
            &["result"],
        )?;
        let bytes = IntCounterVec::new(
            Opts::new(
                "egress_bytes_total",
                "Body or tunnel bytes, by listener, rule and direction",
            ),
            &["listener", "rule", "direction"],
        )?;
        let sizes = || {
            prometheus::exponential_buckets(64.0, 4.0, 11).map(|mut b| {
                b.insert(0, 0.0);
                b
            })
        };
        let request_size = HistogramVec::new(
            HistogramOpts::new(
                "egress_request_size_bytes",
                "HTTP request body sizes, by listener",
            )
            .buckets(sizes()?),
            &["listener"],
        )?;
        let response_size = HistogramVec::new(
            HistogramOpts::new(
                "egress_response_size_bytes",
                "HTTP response body sizes, by listener",
            )
            .buckets(sizes()?),
            &["listener"],
        )?;
        let bad_requests = IntCounterVec::new(
            Opts::new(
                "egress_bad_requests_total",
                "Malformed, oversized or too slow requests refused before a decision, by reason",
            ),
            &["reason"],
        )?;
        let denials = IntCounterVec::new(
            Opts::new(
                "egress_denials_total",
                "Requests and connections denied, by reason: a deny rule (rule), no rule allowing it (no_rule), or the address guard (address_refused)",
            ),
            &["reason"],
        )?;
        let policy_rules = IntGauge::new("egress_policy_rules", "Rules of the policy in force")?;
        let policy_listeners = IntGauge::new(
            "egress_policy_listeners",
            "Listeners of the policy in force",
        )?;
        let policy_last_reload = Gauge::new(
            "egress_policy_last_reload_timestamp_seconds",
            "When the policy in force was applied (start-up or the last reload), in Unix seconds",
        )?;
        let tunnels_opened = IntCounterVec::new(
            Opts::new(
                "egress_tunnels_opened_total",
                "Tunnels (tls, tcp, CONNECT) that started relaying, by listener and rule",
            ),
            &["listener", "rule"],
        )?;
        let tunnels_closed = IntCounterVec::new(
            Opts::new(
                "egress_tunnels_closed_total",
                "Tunnels that ended, by listener and rule",
            ),
            &["listener", "rule"],
        )?;
        let tunnel_duration = HistogramVec::new(
            HistogramOpts::new(
                "egress_tunnel_duration_seconds",
                "How long tunnels relayed, by listener and rule",
            )
            .buckets(vec![
                0.01, 0.1, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0, 86400.0,
            ]),
            &["listener", "rule"],
        )?;
        let admin_requests = IntCounterVec::new(
            Opts::new(
                "egress_admin_requests_total",
                "Admin API requests, by route, method and response code",
            ),
            &["route", "method", "code"],
        )?;
        let admin_auth_failures = IntCounterVec::new(
            Opts::new(
                "egress_admin_auth_failures_total",
                "Admin API requests refused for their bearer token, by reason",
            ),
            &["reason"],
        )?;
        let certificate_expiry = GaugeVec::new(
            Opts::new(
                "egress_tls_certificate_expiry_timestamp_seconds",
                "When the certificate a TLS-terminating listener serves expires (its notAfter), in Unix seconds",
            ),
            &["listener"],
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new(
                "egress_build_info",
                "Always 1; the labels say which build of the gateway runs",
            ),
            &["version", "rust_version"],
        )?;
        build_info
            .with_label_values(&[
                env!("CARGO_PKG_VERSION"),
                option_env!("CARGO_PKG_RUST_VERSION").unwrap_or("unknown"),
            ])
            .set(1);
        for collector in [
            Box::new(bad_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(denials.clone()),
            Box::new(request_size.clone()),
            Box::new(response_size.clone()),
            Box::new(policy_rules.clone()),
            Box::new(policy_listeners.clone()),
            Box::new(policy_last_reload.clone()),
            Box::new(tunnels_opened.clone()),
            Box::new(tunnels_closed.clone()),
            Box::new(tunnel_duration.clone()),
            Box::new(admin_requests.clone()),
            Box::new(admin_auth_failures.clone()),
            Box::new(certificate_expiry.clone()),
            Box::new(build_info),
        ] {
            registry.register(collector)?;
        }
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let tls_handshake_failures = IntCounterVec::new(
            Opts::new(
                "egress_tls_handshake_failures_total",
                "TLS handshakes that failed, by side (inbound from clients, origination to upstreams) and reason",
            ),
            &["side", "reason"],
        )?;
        registry.register(Box::new(tls_handshake_failures.clone()))?;
        for reason in TLS_INBOUND_FAILURES {
            tls_handshake_failures.with_label_values(&["inbound", reason]);
        }
        let upstream = ConnectMetrics::new(&registry, &tls_handshake_failures)?;
        let dns = DnsMetrics::new(&registry)?;
        let dns_queries = DnsServerMetrics::new(&registry)?;
        let listener_bind_errors = IntCounterVec::new(
            Opts::new(
                "egress_listener_bind_errors_total",
                "Listeners of the policy that could not bind (the rest of the policy applied), by listener",
            ),
            &["listener"],
        )?;
        let store_up = IntGauge::new(
            "egress_policy_store_up",
            "1 while the policy store answers; 0 while etcd is unreachable (the last good policy keeps serving)",
        )?;
        let fleet_members = IntGauge::new(
            "egress_fleet_members",
            "Live replicas registered under the etcd prefix",
        )?;
        let revision_lag = IntGauge::new(
            "egress_policy_revision_lag",
            "The latest policy revision seen in the store minus the revision in force",
        )?;
        let connections_refused = IntCounterVec::new(
            Opts::new(
                "egress_connections_refused_total",
                "Connections refused by a connection limit, by listener and reason (max_connections, max_connections_per_source)",
            ),
            &["listener", "reason"],
        )?;
        registry.register(Box::new(connections_refused.clone()))?;
        let rule_limited = IntCounterVec::new(
            Opts::new(
                "egress_rule_limited_total",
                "Requests and tunnels refused by a rule's limit, by rule and limit (rate_limit: 429 RL; max_concurrent: 503 UO)",
            ),
            &["rule", "limit"],
        )?;
        registry.register(Box::new(rule_limited.clone()))?;
        registry.register(Box::new(listener_bind_errors.clone()))?;
        registry.register(Box::new(store_up.clone()))?;
        registry.register(Box::new(fleet_members.clone()))?;
        registry.register(Box::new(revision_lag.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(request_duration.clone()))?;
        registry.register(Box::new(connections_active.clone()))?;
        registry.register(Box::new(address_refused.clone()))?;
        registry.register(Box::new(policy_version.clone()))?;
        registry.register(Box::new(policy_reloads.clone()))?;
        registry.register(Box::new(bytes.clone()))?;
        // Zero from start-up for every known label value: dashboards divide by these.
        for result in ["applied", "rejected"] {
            policy_reloads.with_label_values(&[result]);
        }
        for class in AddressClass::ALL {
            address_refused.with_label_values(&[class.as_str()]);
        }
        for reason in BAD_REQUEST_REASONS {
            bad_requests.with_label_values(&[reason]);
        }
        for reason in crate::error::DENIAL_REASONS {
            denials.with_label_values(&[reason]);
        }
        for reason in egress_admin::auth::FAILURE_REASONS {
            admin_auth_failures.with_label_values(&[reason]);
        }
        Ok(Self {
            registry,
            requests,
            request_duration,
            connections_active,
            address_refused,
            denials,
            policy_version,
            policy_reloads,
            policy_rules,
            policy_listeners,
            policy_last_reload,
            bytes,
            request_size,
            response_size,
            bad_requests,
            tls_handshake_failures,
            upstream,
            dns,
            dns_queries,
            tunnels_opened,
            tunnels_closed,
            tunnel_duration,
            admin_requests,
            admin_auth_failures,
            certificate_expiry,
            listener_bind_errors,
            istio: None,
            store_up,
            fleet_members,
            revision_lag,
            connections_refused,
            rule_limited,
        })
    }

    /// Also exports Istio's names (`istio_requests_total`, ...); call before cloning.
    ///
    /// Fails only if they are already registered.
    pub fn enable_istio_names(&mut self) -> prometheus::Result<()> {
        self.istio = Some(IstioMetrics::new(&self.registry)?);
        Ok(())
    }

    /// Adds the audit writer's counters (lines written, dropped).
    ///
    /// Fails only if they are already registered.
    pub fn register_audit(&self, sink: Arc<AuditSink>) -> prometheus::Result<()> {
        self.registry
            .register(Box::new(audit::AuditCollector::new(sink)?))
    }

    /// Records that `policy`, at `version`, is in force from now: the version, its
    /// rule and listener counts, and the time.
    pub fn policy_applied(&self, policy: &Policy, version: u64) {
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.policy_version
            .set(i64::try_from(version).unwrap_or(i64::MAX));
        self.policy_rules.set(count(policy.rules().len()));
        self.policy_listeners.set(count(policy.listeners().len()));
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        self.policy_last_reload.set(now.as_secs_f64());
    }

    /// Counts a connection refused by a connection limit (`max_connections`,
    /// `max_connections_per_source`).
    pub fn connection_refused(&self, listener: &str, reason: &str) {
        self.connections_refused
            .with_label_values(&[listener, reason])
            .inc();
    }

    /// Makes a listener's refusal counter exist at 0 for `reason`.
    pub fn connection_refused_at_zero(&self, listener: &str, reason: &str) {
        self.connections_refused
            .with_label_values(&[listener, reason]);
    }

    /// Counts a request or connection refused before a decision, for `reason` (one of
    /// [`BAD_REQUEST_REASONS`]; any other is counted as `other`, so the label set stays
    /// the one exported at start-up).
    pub fn bad_request(&self, reason: &str) {
        let known = BAD_REQUEST_REASONS.contains(&reason);
        debug_assert!(known, "{reason} is missing from BAD_REQUEST_REASONS");
        let label = if known { reason } else { "other" };
        self.bad_requests.with_label_values(&[label]).inc();
    }

    /// Counts one finished request or connection.
    pub fn observe(
        &self,
        listener: &str,
        decision: &str,
        rule: &str,
        code: u16,
        flags: &str,
        seconds: f64,
    ) {
        let mut digits = itoa::Buffer::new();
        let code = code_label(code, &mut digits);
        self.requests
            .with_label_values(&[listener, decision, rule, code, flags])
            .inc();
        self.request_duration
            .with_label_values(&[listener, decision])
            .observe(seconds);
    }

    /// Counts an inbound TLS handshake that failed for `reason` (one of
    /// [`TLS_INBOUND_FAILURES`]).
    pub fn tls_inbound_failed(&self, reason: &'static str) {
        debug_assert!(
            TLS_INBOUND_FAILURES.contains(&reason),
            "{reason} is missing from TLS_INBOUND_FAILURES"
        );
        self.tls_handshake_failures
            .with_label_values(&["inbound", reason])
            .inc();
    }

    /// The Prometheus text exposition of every collector.
    pub fn render(&self) -> String {
        let encoder = prometheus::TextEncoder::new();
        encoder
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# error encoding metrics: {e}\n"))
    }
}
