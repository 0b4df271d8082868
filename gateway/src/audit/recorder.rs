//! The one recording point of a request or connection: it writes the audit line and
//! counts the metrics when finished, and also when dropped unfinished — hyper drops a
//! request's future when the client leaves, and `Drop` always runs, so every request
//! gets its line (flagged DC then).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::{AuditRecord, Auditor, ResponseFlags};
use crate::error::EgressError;
use crate::metrics::{code_label, IstioRecord, Metrics};

/// Where finished records go: the audit log and the metrics.
#[derive(Debug)]
pub struct Recording {
    /// Formats and writes lines.
    pub auditor: Auditor,
    /// Counts them.
    pub metrics: Metrics,
    /// The request and response headers the audit format prints: all a record keeps.
    headers_used: (Vec<http::HeaderName>, Vec<http::HeaderName>),
}

impl Recording {
    /// Records with `auditor`'s format and counts in `metrics`.
    pub fn new(auditor: Auditor, metrics: Metrics) -> Self {
        let headers_used = auditor.format().headers_used();
        Self {
            auditor,
            metrics,
            headers_used,
        }
    }
}

/// An open record; finish it with [`Recorder::finish`], or drop it for a client that left.
#[derive(Debug)]
pub struct Recorder {
    pending: Box<Pending>,
    done: bool,
}

#[derive(Debug)]
struct Pending {
    record: AuditRecord,
    started: Instant,
    recording: Arc<Recording>,
    listener: Arc<str>,
    decision: &'static str,
    /// Why it was denied, for `egress_denials_total`.
    denial: Option<&'static str>,
    /// Why it was refused before a decision, for `egress_bad_requests_total`.
    bad_request: Option<&'static str>,
    /// When its tunnel started relaying, if it is a tunnel that did.
    tunnel_since: Option<Instant>,
    bytes_received: Option<Arc<AtomicU64>>,
    bytes_sent: Option<Arc<AtomicU64>>,
}

impl Recorder {
    /// Starts a record for a request or connection on `listener`.
    pub fn start(recording: Arc<Recording>, listener: Arc<str>) -> Self {
        Self {
            pending: Box::new(Pending {
                record: AuditRecord::new(),
                started: Instant::now(),
                recording,
                listener,
                decision: "none",
                denial: None,
                bad_request: None,
                tunnel_since: None,
                bytes_received: None,
                bytes_sent: None,
            }),
            done: false,
        }
    }

    /// The record, to fill in as the request travels.
    pub fn record(&mut self) -> &mut AuditRecord {
        &mut self.pending.record
    }

    /// Keeps the request headers the audit format prints.
    pub fn capture_request_headers(&mut self, headers: &http::HeaderMap) {
        let pending = &mut *self.pending;
        let names = &pending.recording.headers_used.0;
        pending.record.request_headers.copy_from(names, headers);
    }

    /// Keeps the response headers the audit format prints.
    pub fn capture_response_headers(&mut self, headers: &http::HeaderMap) {
        let pending = &mut *self.pending;
        let names = &pending.recording.headers_used.1;
        pending.record.response_headers.copy_from(names, headers);
    }

    /// Sets the decision label counted in the metrics (`allow`, `deny`, `would_deny`).
    pub fn set_decision(&mut self, label: &'static str) {
        self.pending.decision = label;
    }

    /// Notes what an error of the egress path means for the record and its metrics:
    /// its flag, its transport failure, the upstream tried; a denial (by policy or by
    /// the address guard) counts as `decision="deny"` whatever the rule said, and a bad
    /// request is counted by its reason. The details field is the caller's: HTTP and
    /// tunnel lines put them in different fields.
    pub fn note_failure(&mut self, error: &EgressError) {
        let p = &mut *self.pending;
        p.record.response_flags.insert(error.flags());
        p.record.upstream_transport_failure_reason = error.transport_failure();
        if p.record.upstream_host.is_none() {
            p.record.upstream_host = error.upstream_addr();
        }
        if let Some(reason) = error.denial_reason() {
            p.decision = "deny";
            p.denial = Some(reason);
        }
        if let Some(reason) = error.bad_request_reason() {
            p.bad_request = Some(reason);
        }
    }

    /// Counts the request or connection in `egress_bad_requests_total` under `reason`
    /// when it is recorded.
    pub fn bad_request(&mut self, reason: &'static str) {
        self.pending.bad_request = Some(reason);
    }

    /// The tunnel starts relaying: counted as opened now (by listener and the rule
    /// recorded so far), and as closed, with its duration, when the record is written.
    pub fn tunnel_opened(&mut self) {
        let p = &mut *self.pending;
        let rule = p.record.route_name.as_deref().unwrap_or("none");
        p.recording
            .metrics
            .tunnels_opened
            .with_label_values(&[&p.listener, rule])
            .inc();
        if let Some(istio) = &p.recording.metrics.istio {
            istio.tcp_opened(&IstioRecord {
                rule,
                protocol: "tcp",
                code: "",
                flags: "-",
            });
        }
        p.tunnel_since = Some(Instant::now());
    }

    /// Counters read at finish time for BYTES_RECEIVED and BYTES_SENT, for bodies and
    /// tunnels that count as they stream.
    pub fn count_bytes(&mut self, received: Option<Arc<AtomicU64>>, sent: Option<Arc<AtomicU64>>) {
        self.pending.bytes_received = received;
        self.pending.bytes_sent = sent;
    }

    /// The time since the record started.
    pub fn elapsed(&self) -> std::time::Duration {
        self.pending.started.elapsed()
    }

    /// Writes the line and counts the metrics.
    pub fn finish(mut self) {
        self.write();
    }

    fn write(&mut self) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let p = &mut *self.pending;
        let elapsed = p.started.elapsed();
        p.record.duration = Some(elapsed);
        if let Some(counter) = &p.bytes_received {
            p.record.bytes_received = counter.load(Ordering::Relaxed);
        }
        if let Some(counter) = &p.bytes_sent {
            p.record.bytes_sent = counter.load(Ordering::Relaxed);
        }
        p.recording.auditor.record(&p.record);
        let metrics = &p.recording.metrics;
        // Most requests have no flag: no String for them.
        let mut flags = String::new();
        let flags = if p.record.response_flags.is_empty() {
            "-"
        } else {
            p.record.response_flags.write_short(&mut flags);
            flags.as_str()
        };
        let rule = p.record.route_name.as_deref().unwrap_or("none");
        metrics.observe(
            &p.listener,
            p.decision,
            rule,
            p.record.response_code,
            flags,
            elapsed.as_secs_f64(),
        );
        if let Some(reason) = p.denial {
            metrics.denials.with_label_values(&[reason]).inc();
        }
        if let Some(reason) = p.bad_request {
            metrics.bad_request(reason);
        }
        if let Some(since) = p.tunnel_since {
            let labels = [&*p.listener, rule];
            metrics.tunnels_closed.with_label_values(&labels).inc();
            metrics
                .tunnel_duration
                .with_label_values(&labels)
                .observe(since.elapsed().as_secs_f64());
        }
        for (direction, bytes) in [
            ("received", p.record.bytes_received),
            ("sent", p.record.bytes_sent),
        ] {
            if bytes > 0 {
                metrics
                    .bytes
                    .with_label_values(&[&p.listener, rule, direction])
                    .inc_by(bytes);
            }
        }
        if let Some(istio) = &metrics.istio {
            let mut digits = itoa::Buffer::new();
            let record = IstioRecord {
                rule,
                protocol: "http",
                code: code_label(p.record.response_code, &mut digits),
                flags,
            };
            // A request answered before any tunnel is HTTP; the rest is TCP.
            let http = p.tunnel_since.is_none()
                && (p.record.method.is_some() || p.record.response_code != 0);
            if http {
                istio.request(&record, elapsed.as_secs_f64());
            } else {
                let record = IstioRecord {
                    protocol: "tcp",
                    ..record
                };
                if p.tunnel_since.is_none() {
                    istio.tcp_opened(&record);
                }
                istio.tcp_closed(&record, p.record.bytes_received, p.record.bytes_sent);
            }
        }
        // HTTP requests only: a tunnel's bytes are not one message.
        if p.record.method.is_some() && p.tunnel_since.is_none() {
            let listener = [&*p.listener];
            let (received, sent) = (p.record.bytes_received as f64, p.record.bytes_sent as f64);
            metrics
                .request_size
                .with_label_values(&listener)
                .observe(received);
            metrics
                .response_size
                .with_label_values(&listener)
                .observe(sent);
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if !self.done {
            let p = &mut self.pending;
            p.record
                .response_flags
                .insert(ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION);
            if p.record.response_code_details.is_none() {
                p.record.response_code_details = Some("downstream_remote_disconnect".into());
            }
        }
        self.write();
    }
}
