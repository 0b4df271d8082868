//! The `dns` listeners' collectors: queries by type, answer and decision, and how long
//! each took to answer. Query types outside a fixed set are counted as `other`, so a
//! client sending every type number cannot add series.

use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// Query types that get a label of their own.
pub const QTYPES: [&str; 12] = [
    "A", "AAAA", "CNAME", "MX", "TXT", "SRV", "NS", "SOA", "PTR", "HTTPS", "SVCB", "ANY",
];

/// Counters and histograms of the DNS listeners.
#[derive(Debug, Clone)]
pub struct DnsServerMetrics {
    queries: IntCounterVec,
    duration: HistogramVec,
}

impl DnsServerMetrics {
    /// Registers `egress_dns_queries_total` and `egress_dns_query_duration_seconds`.
    ///
    /// Fails only if they are already registered.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let queries = IntCounterVec::new(
            Opts::new(
                "egress_dns_queries_total",
                "Queries to dns listeners, by listener, query type, response code and decision (allow, deny, would_deny, forward, rate_limited, malformed)",
            ),
            &["listener", "qtype", "rcode", "decision"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "egress_dns_query_duration_seconds",
                "Time from a query's arrival to its answer, by listener",
            )
            .buckets(vec![
                0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0, 5.0,
            ]),
            &["listener"],
        )?;
        registry.register(Box::new(queries.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        Ok(Self { queries, duration })
    }

    /// Counts one query on `listener`, answered with `rcode` after `elapsed`.
    pub fn observe(
        &self,
        listener: &str,
        qtype: &str,
        rcode: &str,
        decision: &str,
        elapsed: Duration,
    ) {
        let qtype = QTYPES
            .iter()
            .find(|t| **t == qtype)
            .copied()
            .unwrap_or(if qtype == "-" { "-" } else { "other" });
        self.queries
            .with_label_values(&[listener, qtype, rcode, decision])
            .inc();
        self.duration
            .with_label_values(&[listener])
            .observe(elapsed.as_secs_f64());
    }
}
