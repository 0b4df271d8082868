//! The audit writer's counters and queue, read at scrape time, so the writer thread
//! touches no Prometheus state per line.

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};

use crate::audit::AuditSink;

/// Copies the sink's own counters into Prometheus ones when scraped.
pub(super) struct AuditCollector {
    sink: Arc<AuditSink>,
    written: IntCounter,
    /// By reason: queue_full (the writer could not keep up), write_error (a full disk).
    dropped: IntCounterVec,
    write_errors: IntCounter,
    queued: IntGauge,
    capacity: IntGauge,
    descs: Vec<Desc>,
}

impl AuditCollector {
    pub(super) fn new(sink: Arc<AuditSink>) -> prometheus::Result<Self> {
        let written = IntCounter::new("egress_audit_lines_written_total", "Audit lines written")?;
        let dropped = IntCounterVec::new(
            Opts::new(
                "egress_audit_lines_dropped_total",
                "Audit lines not written, by reason: queue_full (the writer could not keep up) or write_error (the log could not be written)",
            ),
            &["reason"],
        )?;
        for reason in ["queue_full", "write_error"] {
            dropped.with_label_values(&[reason]);
        }
        let write_errors = IntCounter::new(
            "egress_audit_write_errors_total",
            "Audit writes (or flushes) that failed to reach a target, e.g. on a full disk",
        )?;
        let queued = IntGauge::new(
            "egress_audit_queue_lines",
            "Audit lines waiting for the writer now",
        )?;
        let capacity = IntGauge::new(
            "egress_audit_queue_capacity_lines",
            "Audit lines the queue holds before it drops them (audit.buffer_lines)",
        )?;
        capacity.set(i64::try_from(sink.capacity()).unwrap_or(i64::MAX));
        let descs = [
            written.desc(),
            dropped.desc(),
            write_errors.desc(),
            queued.desc(),
            capacity.desc(),
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
        Ok(Self {
            sink,
            written,
            dropped,
            write_errors,
            queued,
            capacity,
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
        sync(
            &self.dropped.with_label_values(&["queue_full"]),
            self.sink.dropped(),
        );
        sync(
            &self.dropped.with_label_values(&["write_error"]),
            self.sink.lost(),
        );
        sync(&self.write_errors, self.sink.write_errors());
        self.queued
            .set(i64::try_from(self.sink.queued()).unwrap_or(i64::MAX));
        let mut families = self.written.collect();
        families.extend(self.dropped.collect());
        families.extend(self.write_errors.collect());
        families.extend(self.queued.collect());
        families.extend(self.capacity.collect());
        families
    }
}
