//! What a run measured: counts that add up (requests = ok + denied + errors), rates,
//! latency percentiles, and the proxy's CPU when known; for people and as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::histogram::{format_micros, Latencies, Percentiles};
use crate::scenario::{format_bytes, ErrorKind, Outcome};
use crate::schedule::Timing;

/// Counts and histograms of a run, or of one connection of it (merged at the end).
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Requests that ended, whatever the outcome.
    pub requests: u64,
    /// Allowed and served.
    pub ok: u64,
    /// Denied as expected.
    pub denied: u64,
    /// Failed, by kind.
    pub errors: BTreeMap<ErrorKind, u64>,
    /// Bytes received.
    pub bytes: u64,
    /// Latency from the intended send time (open loop) or the send (closed loop).
    pub latency: Latencies,
    /// Latency from the actual send.
    pub service: Latencies,
}

impl Tally {
    /// Counts one request.
    pub fn record(&mut self, outcome: Outcome, timing: Timing) {
        self.requests += 1;
        match outcome {
            Outcome::Ok(bytes) => {
                self.ok += 1;
                self.bytes += bytes;
            }
            Outcome::Denied(bytes) => {
                self.denied += 1;
                self.bytes += bytes;
            }
            Outcome::Error(kind) => *self.errors.entry(kind).or_default() += 1,
        }
        self.latency.record(timing.latency);
        self.service.record(timing.service);
    }

    /// Adds another tally.
    pub fn merge(&mut self, other: &Tally) {
        self.requests += other.requests;
        self.ok += other.ok;
        self.denied += other.denied;
        for (kind, n) in &other.errors {
            *self.errors.entry(*kind).or_default() += n;
        }
        self.bytes += other.bytes;
        self.latency.merge(&other.latency);
        self.service.merge(&other.service);
    }

    /// Failed requests.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// The proxy's CPU time during the measured window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ProxyCpu {
    /// utime + stime of the proxy's processes, seconds.
    pub seconds: f64,
    /// Of those, stime: kernel mode, seconds.
    pub kernel_seconds: f64,
    /// Per request (or per connection, when each request opens one), microseconds.
    pub per_request_us: f64,
    /// The kernel-mode part of `per_request_us`.
    pub kernel_per_request_us: f64,
    /// Per MiB received by the load generator, milliseconds.
    pub per_mib_ms: f64,
    /// Share of one core over the window (1.0 = one core busy).
    pub cores: f64,
}

impl ProxyCpu {
    /// The CPU figures of the proxy's time (`user_seconds` in user mode,
    /// `kernel_seconds` in the kernel) against what a run did.
    pub fn of(user_seconds: f64, kernel_seconds: f64, report: &Report) -> ProxyCpu {
        let seconds = user_seconds + kernel_seconds;
        let mib = report.bytes as f64 / (1024.0 * 1024.0);
        ProxyCpu {
            seconds,
            kernel_seconds,
            per_request_us: per(seconds * 1e6, report.requests as f64),
            kernel_per_request_us: per(kernel_seconds * 1e6, report.requests as f64),
            per_mib_ms: per(seconds * 1e3, mib),
            cores: per(seconds, report.elapsed_s),
        }
    }
}

fn per(value: f64, unit: f64) -> f64 {
    if unit > 0.0 {
        value / unit
    } else {
        0.0
    }
}

/// The report of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The target's name (`gateway`, `nginx`, an address).
    pub target: String,
    /// The workload's description.
    pub workload: String,
    /// `closed` or `open`.
    pub mode: &'static str,
    /// Connections.
    pub connections: usize,
    /// Open loop: the requested rate, requests per second.
    pub rate: Option<f64>,
    /// Measured wall time, seconds.
    pub elapsed_s: f64,
    /// Requests that ended (ok + denied + errors).
    pub requests: u64,
    /// Allowed and served.
    pub ok: u64,
    /// Denied as expected.
    pub denied: u64,
    /// Failed.
    pub errors: u64,
    /// Failed, by kind.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Requests per second.
    pub requests_per_s: f64,
    /// Bytes received.
    pub bytes: u64,
    /// Bytes received per second.
    pub bytes_per_s: f64,
    /// Latency (open loop: corrected for coordinated omission).
    pub latency: Percentiles,
    /// Open loop: latency from the actual send, uncorrected, for comparison.
    pub service_time: Option<Percentiles>,
    /// The proxy's CPU, when the tool started the proxy.
    pub proxy_cpu: Option<ProxyCpu>,
    /// CPU seconds of the proxy's main process by thread name (`/proc/PID/task`),
    /// where the time goes (workers, audit writer, ...).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub proxy_threads: BTreeMap<String, f64>,
    /// The latency histogram, for merging and plots.
    #[serde(skip)]
    pub histogram: Latencies,
}

impl Report {
    /// The report of `tally` measured over `elapsed_s`.
    pub fn new(
        target: &str,
        workload: String,
        connections: usize,
        rate: Option<f64>,
        elapsed_s: f64,
        tally: Tally,
    ) -> Report {
        Report {
            target: target.to_owned(),
            workload,
            mode: if rate.is_some() { "open" } else { "closed" },
            connections,
            rate,
            elapsed_s,
            requests: tally.requests,
            ok: tally.ok,
            denied: tally.denied,
            errors: tally.error_count(),
            errors_by_kind: tally
                .errors
                .iter()
                .map(|(kind, n)| (kind.key(), *n))
                .collect(),
            requests_per_s: per(tally.requests as f64, elapsed_s),
            bytes: tally.bytes,
            bytes_per_s: per(tally.bytes as f64, elapsed_s),
            latency: tally.latency.percentiles(),
            service_time: rate.map(|_| tally.service.percentiles()),
            proxy_cpu: None,
            proxy_threads: BTreeMap::new(),
            histogram: tally.latency,
        }
    }

    /// The report for people.
    pub fn human(&self) -> String {
        let mut out = String::new();
        let load = describe_load(self.rate);
        let _ = writeln!(
            out,
            "{}: {}, {} connections, {load}, {:.1} s",
            self.target, self.workload, self.connections, self.elapsed_s
        );
        let _ = writeln!(
            out,
            "  requests   {} (ok {}, denied {}, errors {})",
            self.requests, self.ok, self.denied, self.errors
        );
        let _ = writeln!(
            out,
            "  throughput {:.0} req/s, {}/s received",
            self.requests_per_s,
            format_bytes(self.bytes_per_s as u64)
        );
        let _ = writeln!(out, "  latency    {}", latency_line(&self.latency));
        if let Some(service) = &self.service_time {
            let _ = writeln!(
                out,
                "  (corrected for coordinated omission; send to answer: {})",
                latency_line(service)
            );
        }
        if !self.errors_by_kind.is_empty() {
            let kinds: Vec<String> = self
                .errors_by_kind
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            let _ = writeln!(out, "  errors     {}", kinds.join(", "));
        }
        if let Some(cpu) = &self.proxy_cpu {
            let _ = writeln!(
                out,
                "  proxy cpu  {:.1} µs/request (kernel {:.1}), {:.2} ms/MiB, {:.2} cores",
                cpu.per_request_us, cpu.kernel_per_request_us, cpu.per_mib_ms, cpu.cores
            );
        }
        out
    }
}

/// `p50 412µs  p90 ...  max ...`.
pub fn latency_line(p: &Percentiles) -> String {
    format!(
        "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        format_micros(p.p50_us),
        format_micros(p.p90_us),
        format_micros(p.p99_us),
        format_micros(p.p999_us),
        format_micros(p.max_us)
    )
}

/// "closed loop", or "open loop at N req/s".
pub fn describe_load(rate: Option<f64>) -> String {
    match rate {
        Some(rate) => format!("open loop at {rate:.0} req/s"),
        None => "closed loop".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn timing(us: u64) -> Timing {
        Timing {
            latency: Duration::from_micros(us),
            service: Duration::from_micros(us),
        }
    }

    fn sample() -> Tally {
        let mut t = Tally::default();
        t.record(Outcome::Ok(100), timing(500));
        t.record(Outcome::Ok(100), timing(700));
        t.record(Outcome::Denied(20), timing(300));
        t.record(Outcome::Error(ErrorKind::Status(502)), timing(900));
        t
    }

    #[test]
    fn counts_add_up_after_merge() {
        let mut a = sample();
        a.merge(&sample());
        assert_eq!(a.requests, 8);
        assert_eq!(a.ok + a.denied + a.error_count(), a.requests);
        assert_eq!(a.bytes, 440);
        assert_eq!(a.latency.count(), 8);
    }

    #[test]
    fn report_rates_and_error_keys() {
        let r = Report::new("gateway", "http1".into(), 2, None, 2.0, sample());
        assert_eq!(r.requests, 4);
        assert_eq!(r.errors, 1);
        assert_eq!(r.errors_by_kind.get("status_502"), Some(&1));
        assert!((r.requests_per_s - 2.0).abs() < 1e-9);
        assert!((r.bytes_per_s - 110.0).abs() < 1e-9);
        assert_eq!(r.mode, "closed");
        assert!(r.service_time.is_none());
    }

    #[test]
    fn human_report_shows_every_part() {
        let mut r = Report::new(
            "gateway",
            "http1 keep-alive".into(),
            2,
            Some(100.0),
            2.0,
            sample(),
        );
        r.proxy_cpu = Some(ProxyCpu::of(0.0006, 0.0004, &r));
        let text = r.human();
        assert!(
            text.starts_with(
                "gateway: http1 keep-alive, 2 connections, open loop at 100 req/s, 2.0 s"
            ),
            "{text}"
        );
        assert!(
            text.contains("requests   4 (ok 2, denied 1, errors 1)"),
            "{text}"
        );
        assert!(
            text.contains("throughput 2 req/s, 110 B/s received"),
            "{text}"
        );
        assert!(text.contains("p50 500µs"), "{text}");
        assert!(text.contains("send to answer: p50"), "{text}");
        assert!(text.contains("errors     status_502 1"), "{text}");
        assert!(
            text.contains("proxy cpu  250.0 µs/request (kernel 100.0)"),
            "{text}"
        );
    }

    #[test]
    fn json_report_has_stable_keys_and_no_histogram() {
        let r = Report::new("direct", "h2c".into(), 1, None, 1.0, sample());
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        for key in [
            "target",
            "requests",
            "ok",
            "denied",
            "errors",
            "errors_by_kind",
            "requests_per_s",
            "bytes_per_s",
            "latency",
        ] {
            assert!(v.get(key).is_some(), "{key}");
        }
        assert!(v.get("histogram").is_none());
        assert_eq!(v["latency"]["p50_us"], 500);
    }

    #[test]
    fn cpu_per_unit() {
        let mut t = Tally::default();
        for _ in 0..1000 {
            t.record(Outcome::Ok(1024 * 1024), timing(10));
        }
        let r = Report::new("x", String::new(), 1, None, 10.0, t);
        let cpu = ProxyCpu::of(0.2, 0.3, &r);
        assert!((cpu.per_request_us - 500.0).abs() < 1e-6);
        assert!((cpu.kernel_per_request_us - 300.0).abs() < 1e-6);
        assert!((cpu.seconds - 0.5).abs() < 1e-12);
        assert!((cpu.per_mib_ms - 0.5).abs() < 1e-9);
        assert!((cpu.cores - 0.05).abs() < 1e-9);
    }
}
