//! Istio's standard metric names and labels (`stats: {istio_names: true}`), so that
//! dashboards built for istio-egressgateway keep working after the switch.
//!
//! The gateway reports as the source of outbound traffic, as Istio's egress gateway
//! does. Labels are filled from what the gateway knows and stay bounded:
//! `destination_service` and `destination_service_name` are the deciding rule's name
//! (`none` without one), never the host asked for; what the gateway cannot know
//! (workloads, namespaces of the other side) is `unknown`, as Istio writes it.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// The labels of every Istio metric here, in this order; TCP metrics have no
/// `response_code`.
const HTTP_LABELS: &[&str] = &[
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "destination_workload",
    "destination_workload_namespace",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "request_protocol",
    "response_flags",
    "connection_security_policy",
    "response_code",
];
const TCP_LABELS: &[&str] = HTTP_LABELS.split_at(HTTP_LABELS.len() - 1).0;

/// What the gateway calls itself as `source_workload`.
const WORKLOAD: &str = "egress-gateway";
const UNKNOWN: &str = "unknown";

/// The Istio-named collectors.
#[derive(Debug, Clone)]
pub struct IstioMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    sent: IntCounterVec,
    received: IntCounterVec,
    opened: IntCounterVec,
    closed: IntCounterVec,
}

/// One finished HTTP request or TCP connection, as the Istio metrics see it.
#[derive(Debug, Clone, Copy)]
pub struct IstioRecord<'a> {
    /// The deciding rule, or `none`.
    pub rule: &'a str,
    /// `http`, `grpc` or `tcp`.
    pub protocol: &'a str,
    /// The response code label (HTTP only).
    pub code: &'a str,
    /// Envoy's response flags, `-` for none.
    pub flags: &'a str,
}

impl IstioRecord<'_> {
    fn labels<'b>(&'b self, code: Option<&'b str>) -> [&'b str; 12] {
        [
            "source",
            WORKLOAD,
            UNKNOWN,
            UNKNOWN,
            UNKNOWN,
            self.rule,
            self.rule,
            UNKNOWN,
            self.protocol,
            self.flags,
            UNKNOWN,
            code.unwrap_or(""),
        ]
    }
}

impl IstioMetrics {
    /// Registers `istio_requests_total`, `istio_request_duration_milliseconds` and the
    /// `istio_tcp_*` counters on `registry`.
    ///
    /// Fails only if they are already registered.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new("istio_requests_total", "HTTP requests (Istio's name)"),
            HTTP_LABELS,
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "istio_request_duration_milliseconds",
                "HTTP request duration in milliseconds (Istio's name and buckets)",
            )
            .buckets(vec![
                0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
                10000.0, 30000.0, 60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
            ]),
            HTTP_LABELS,
        )?;
        let tcp = |name: &str, help: &str| IntCounterVec::new(Opts::new(name, help), TCP_LABELS);
        let sent = tcp(
            "istio_tcp_sent_bytes_total",
            "Bytes sent to the client on TCP connections and tunnels (Istio's name)",
        )?;
        let received = tcp(
            "istio_tcp_received_bytes_total",
            "Bytes received from the client on TCP connections and tunnels (Istio's name)",
        )?;
        let opened = tcp(
            "istio_tcp_connections_opened_total",
            "TCP connections and tunnels opened (Istio's name)",
        )?;
        let closed = tcp(
            "istio_tcp_connections_closed_total",
            "TCP connections and tunnels closed (Istio's name)",
        )?;
        for collector in [&requests, &sent, &received, &opened, &closed] {
            registry.register(Box::new(collector.clone()))?;
        }
        registry.register(Box::new(duration.clone()))?;
        Ok(Self {
            requests,
            duration,
            sent,
            received,
            opened,
            closed,
        })
    }

    /// Counts one finished HTTP request that took `seconds`.
    pub fn request(&self, record: &IstioRecord<'_>, seconds: f64) {
        let labels = record.labels(Some(record.code));
        self.requests.with_label_values(&labels).inc();
        self.duration
            .with_label_values(&labels)
            .observe(seconds * 1000.0);
    }

    /// Counts a TCP connection or tunnel opened.
    pub fn tcp_opened(&self, record: &IstioRecord<'_>) {
        let labels = record.labels(None);
        self.opened
            .with_label_values(&labels[..TCP_LABELS.len()])
            .inc();
    }

    /// Counts a TCP connection or tunnel closed, with its bytes.
    pub fn tcp_closed(&self, record: &IstioRecord<'_>, received: u64, sent: u64) {
        let labels = record.labels(None);
        let labels = &labels[..TCP_LABELS.len()];
        self.closed.with_label_values(labels).inc();
        if received > 0 {
            self.received.with_label_values(labels).inc_by(received);
        }
        if sent > 0 {
            self.sent.with_label_values(labels).inc_by(sent);
        }
    }
}
