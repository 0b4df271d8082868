//! What the gateway meets below the decision: name lookups and upstream connects, each
//! with its children resolved once, so counting costs no label hashing per request.

use std::time::Duration;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};

use crate::error::TlsFailure;

/// Why an upstream connect failed: a bounded label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectFailure {
    /// The upstream answered with a reset (nothing listens).
    Refused,
    /// The route's connect_timeout passed.
    Timeout,
    /// No route to the host or network.
    Unreachable,
    /// Reset while connecting.
    Reset,
    /// TLS origination failed: verification, handshake, or its timeout.
    Tls,
    /// Anything else the socket reported.
    Other,
}

impl ConnectFailure {
    /// Every reason, in label order.
    pub const ALL: [ConnectFailure; 6] = [
        ConnectFailure::Refused,
        ConnectFailure::Timeout,
        ConnectFailure::Unreachable,
        ConnectFailure::Reset,
        ConnectFailure::Tls,
        ConnectFailure::Other,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectFailure::Refused => "refused",
            ConnectFailure::Timeout => "timeout",
            ConnectFailure::Unreachable => "unreachable",
            ConnectFailure::Reset => "reset",
            ConnectFailure::Tls => "tls",
            ConnectFailure::Other => "other",
        }
    }

    /// The reason of a failed TCP connect.
    pub fn of_io(e: &std::io::Error) -> Self {
        use std::io::ErrorKind;
        match e.kind() {
            ErrorKind::ConnectionRefused => ConnectFailure::Refused,
            ErrorKind::ConnectionReset => ConnectFailure::Reset,
            ErrorKind::TimedOut => ConnectFailure::Timeout,
            ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => {
                ConnectFailure::Unreachable
            }
            _ => ConnectFailure::Other,
        }
    }
}

/// Upstream connects: how long the successful ones took, and why the others failed.
#[derive(Debug, Clone)]
pub struct ConnectMetrics {
    duration: Histogram,
    /// One counter per [`ConnectFailure`], in [`ConnectFailure::ALL`] order.
    failures: [IntCounter; 6],
    /// TLS origination failures, one per [`TlsFailure`] in [`TlsFailure::ALL`] order.
    tls: [IntCounter; 7],
}

impl ConnectMetrics {
    /// Registers `egress_upstream_connect_duration_seconds` and
    /// `egress_upstream_connect_failures_total` (every reason at 0); TLS origination
    /// failures are also counted in `tls_failures` (`side="origination"`).
    ///
    /// Fails only if they are already registered.
    pub fn new(registry: &Registry, tls_failures: &IntCounterVec) -> prometheus::Result<Self> {
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "egress_upstream_connect_duration_seconds",
                "Time to open a TCP connection to an upstream address (successful attempts)",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
        )?;
        let failures = IntCounterVec::new(
            Opts::new(
                "egress_upstream_connect_failures_total",
                "Upstream connect attempts that failed, by reason",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        let failures = ConnectFailure::ALL.map(|r| failures.with_label_values(&[r.as_str()]));
        let tls =
            TlsFailure::ALL.map(|f| tls_failures.with_label_values(&["origination", f.as_str()]));
        Ok(Self {
            duration,
            failures,
            tls,
        })
    }

    /// Counts a connect that succeeded after `elapsed`.
    pub fn connected(&self, elapsed: Duration) {
        self.duration.observe(elapsed.as_secs_f64());
    }

    /// Counts a connect attempt that failed.
    pub fn failed(&self, reason: ConnectFailure) {
        // ALL lists every variant in declaration order.
        self.failures[reason as usize].inc();
    }

    /// Counts a connect whose TLS origination failed.
    pub fn tls_failed(&self, failure: TlsFailure) {
        self.failed(ConnectFailure::Tls);
        self.tls[failure as usize].inc();
    }
}

/// The outcome of one name lookup: a bounded label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupResult {
    /// Addresses came back.
    Ok,
    /// NXDOMAIN.
    NxDomain,
    /// The name has no A or AAAA records.
    NoRecords,
    /// The name servers failed.
    Error,
    /// No answer within the rule's connect timeout.
    Timeout,
}

impl LookupResult {
    const ALL: [LookupResult; 5] = [
        LookupResult::Ok,
        LookupResult::NxDomain,
        LookupResult::NoRecords,
        LookupResult::Error,
        LookupResult::Timeout,
    ];

    fn as_str(self) -> &'static str {
        match self {
            LookupResult::Ok => "ok",
            LookupResult::NxDomain => "nxdomain",
            LookupResult::NoRecords => "no_records",
            LookupResult::Error => "error",
            LookupResult::Timeout => "timeout",
        }
    }
}

/// Name lookups of destination hosts (IP literals are not looked up), answered from
/// the resolver's cache or by the name servers.
#[derive(Debug, Clone)]
pub struct DnsMetrics {
    /// One counter per [`LookupResult`], in [`LookupResult::ALL`] order.
    lookups: [IntCounter; 5],
    durations: [Histogram; 5],
    cache_hits: IntCounter,
}

impl DnsMetrics {
    /// Registers `egress_dns_lookups_total` (every result at 0) and
    /// `egress_dns_lookup_duration_seconds`.
    ///
    /// Fails only if they are already registered.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let lookups = IntCounterVec::new(
            Opts::new(
                "egress_dns_lookups_total",
                "Destination name lookups, by result (cache answers included)",
            ),
            &["result"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "egress_dns_lookup_duration_seconds",
                "Time to resolve a destination name, by result",
            )
            .buckets(vec![
                0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                5.0,
            ]),
            &["result"],
        )?;
        let cache_hits = IntCounter::new(
            "egress_dns_cache_hits_total",
            "Destination name lookups answered from the cache while the answer's TTL lasted",
        )?;
        registry.register(Box::new(lookups.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(cache_hits.clone()))?;
        let durations = LookupResult::ALL.map(|r| duration.with_label_values(&[r.as_str()]));
        let lookups = LookupResult::ALL.map(|r| lookups.with_label_values(&[r.as_str()]));
        Ok(Self {
            lookups,
            durations,
            cache_hits,
        })
    }

    /// Counts a lookup the cache answered (besides its result).
    pub fn cache_hit(&self) {
        self.cache_hits.inc();
    }

    /// Counts one lookup that ended with `result` after `elapsed`.
    pub fn observe(&self, result: LookupResult, elapsed: Duration) {
        let i = result as usize;
        self.lookups[i].inc();
        self.durations[i].observe(elapsed.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_and_result_is_its_own_child() {
        let registry = Registry::new();
        let tls = IntCounterVec::new(Opts::new("tls_total", "TLS"), &["side", "reason"]).unwrap();
        registry.register(Box::new(tls.clone())).unwrap();
        let connects = ConnectMetrics::new(&registry, &tls).unwrap();
        let dns = DnsMetrics::new(&registry).unwrap();
        for reason in ConnectFailure::ALL {
            connects.failed(reason);
        }
        connects.tls_failed(TlsFailure::Timeout);
        dns.observe(LookupResult::NoRecords, Duration::from_millis(3));
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        assert!(text.contains("egress_upstream_connect_failures_total{reason=\"tls\"} 2"));
        assert!(text.contains("egress_upstream_connect_failures_total{reason=\"refused\"} 1"));
        assert!(text.contains("tls_total{reason=\"handshake_timeout\",side=\"origination\"} 1"));
        assert!(text.contains("tls_total{reason=\"ca_file\",side=\"origination\"} 0"));
        assert!(text.contains("egress_dns_lookups_total{result=\"no_records\"} 1"));
        assert!(text.contains("egress_dns_lookups_total{result=\"ok\"} 0"));
        assert!(text.contains("egress_dns_lookup_duration_seconds_count{result=\"no_records\"} 1"));
    }
}
