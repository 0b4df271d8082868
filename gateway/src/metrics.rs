//! Every collector of the gateway, on one registry that is passed in.
//!
//! Labels come from bounded sets only: listener and rule names (from the policy),
//! decisions, status codes, Envoy flags and address classes. Destination hosts never
//! become labels, so denied traffic cannot blow up cardinality.

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::audit::AuditSink;

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
    /// The policy version in force.
    pub policy_version: IntGauge,
    /// Policy reloads by result (applied / rejected).
    pub policy_reloads: IntCounterVec,
    /// Bytes relayed, by listener and direction (received / sent).
    pub bytes: IntCounterVec,
    /// Malformed or oversized requests refused before a decision.
    pub bad_requests: IntCounter,
    /// Listeners of the policy that could not bind, by listener.
    pub listener_bind_errors: IntCounterVec,
    /// 1 while the policy store answers (always 1 for the policy directory).
    pub store_up: IntGauge,
    /// Live replicas registered in the fleet (etcd store only).
    pub fleet_members: IntGauge,
    /// The latest policy revision seen in the store minus the one in force.
    pub revision_lag: IntGauge,
}

/// A bounded label for an HTTP status code: the code itself for 100-599 (and 0, no
/// response), else "other". Formatted on the stack: this runs for every request.
fn code_label(code: u16, digits: &mut itoa::Buffer) -> &str {
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
                "Body or tunnel bytes, by listener and direction",
            ),
            &["listener", "direction"],
        )?;
        let bad_requests = IntCounter::new(
            "egress_bad_requests_total",
            "Malformed, oversized or too slow requests refused before a decision",
        )?;
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
        registry.register(Box::new(bad_requests.clone()))?;
        Ok(Self {
            registry,
            requests,
            request_duration,
            connections_active,
            address_refused,
            policy_version,
            policy_reloads,
            bytes,
            bad_requests,
            listener_bind_errors,
            store_up,
            fleet_members,
            revision_lag,
        })
    }

    /// Adds the audit writer's counters (lines written, dropped).
    ///
    /// Fails only if they are already registered.
    pub fn register_audit(&self, sink: Arc<AuditSink>) -> prometheus::Result<()> {
        self.registry.register(Box::new(AuditCollector::new(sink)?))
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

    /// The Prometheus text exposition of every collector.
    pub fn render(&self) -> String {
        let encoder = prometheus::TextEncoder::new();
        encoder
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# error encoding metrics: {e}\n"))
    }
}

/// Reads the audit sink's counters at scrape time, so the writer thread touches no
/// Prometheus state per line.
struct AuditCollector {
    sink: Arc<AuditSink>,
    written: IntCounter,
    dropped: IntCounter,
    descs: Vec<Desc>,
}

impl AuditCollector {
    fn new(sink: Arc<AuditSink>) -> prometheus::Result<Self> {
        let written = IntCounter::new("egress_audit_lines_written_total", "Audit lines written")?;
        let dropped = IntCounter::new(
            "egress_audit_lines_dropped_total",
            "Audit lines dropped because the writer could not keep up",
        )?;
        let descs = written
            .desc()
            .into_iter()
            .chain(dropped.desc())
            .cloned()
            .collect();
        Ok(Self {
            sink,
            written,
            dropped,
            descs,
        })
    }
}

impl Collector for AuditCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let sync = |counter: &IntCounter, now: u64| {
            let seen = counter.get();
            if now > seen {
                counter.inc_by(now - seen);
            }
        };
        sync(&self.written, self.sink.written());
        sync(&self.dropped, self.sink.dropped());
        let mut families = self.written.collect();
        families.extend(self.dropped.collect());
        families
    }
}
