//! Latency histograms: an HdrHistogram in microseconds, and the percentiles a report
//! shows.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Longest latency recorded: longer ones are clamped (a run is bounded well below it).
const MAX_MICROS: u64 = 3_600_000_000;

/// Latencies of one run, in microseconds, 3 significant digits.
#[derive(Debug, Clone)]
pub struct Latencies {
    histogram: Histogram<u64>,
}

/// The percentiles of a [`Latencies`], in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest value.
    pub max_us: u64,
}

impl Latencies {
    /// An empty histogram.
    pub fn new() -> Latencies {
        // Bounds 1..=MAX_MICROS with 3 digits are always valid; the fallback keeps the
        // constructor infallible without an expect.
        let histogram = Histogram::new_with_bounds(1, MAX_MICROS, 3)
            .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable_histogram()));
        Latencies { histogram }
    }

    /// Records one latency (clamped to 1 µs ..= 1 h).
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(MAX_MICROS);
        self.histogram
            .saturating_record(micros.clamp(1, MAX_MICROS));
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Latencies) {
        // Same bounds on both sides: add cannot fail; a failure would only lose values.
        let _ = self.histogram.add(&other.histogram);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// The value at `quantile` (0.0..=1.0), in microseconds.
    pub fn quantile_us(&self, quantile: f64) -> u64 {
        self.histogram.value_at_quantile(quantile)
    }

    /// The summary a report shows.
    pub fn percentiles(&self) -> Percentiles {
        if self.histogram.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: self.histogram.len(),
            mean_us: self.histogram.mean(),
            p50_us: self.quantile_us(0.50),
            p90_us: self.quantile_us(0.90),
            p99_us: self.quantile_us(0.99),
            p999_us: self.quantile_us(0.999),
            max_us: self.histogram.max(),
        }
    }

    /// Points of the latency distribution for a plot: (percentile, microseconds), from
    /// the median to the maximum, denser towards the tail.
    pub fn distribution(&self) -> Vec<(f64, u64)> {
        if self.histogram.is_empty() {
            return Vec::new();
        }
        // 1 - 10^(-x/10) for x in 0..=40: 0%, ... 90%, 99%, 99.9%, 99.99%.
        (0..=40)
            .map(|step| {
                let q = 1.0 - 10f64.powf(-f64::from(step) / 10.0);
                (q * 100.0, self.quantile_us(q))
            })
            .collect()
    }
}

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

#[expect(
    clippy::panic,
    reason = "hdrhistogram accepts 3 significant digits with auto-resize by contract"
)]
fn unreachable_histogram() -> Histogram<u64> {
    panic!("hdrhistogram refused 3 significant digits")
}

/// `1234` µs → `1.23ms`; `87` → `87µs`; `2_500_000` → `2.50s`.
pub fn format_micros(us: u64) -> String {
    if us < 1_000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{:.2}ms", us as f64 / 1_000.0)
    } else {
        format!("{:.2}s", us as f64 / 1_000_000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut l = Latencies::new();
        for us in 1..=1000u64 {
            l.record(Duration::from_micros(us));
        }
        let p = l.percentiles();
        assert_eq!(p.count, 1000);
        assert_eq!(p.p50_us, 500);
        assert_eq!(p.p90_us, 900);
        assert_eq!(p.p99_us, 990);
        assert_eq!(p.p999_us, 999);
        assert_eq!(p.max_us, 1000);
        assert!((p.mean_us - 500.5).abs() < 0.5);
    }

    #[test]
    fn merge_adds_counts_and_keeps_the_tail() {
        let mut a = Latencies::new();
        let mut b = Latencies::new();
        for _ in 0..99 {
            a.record(Duration::from_micros(100));
        }
        b.record(Duration::from_secs(2));
        a.merge(&b);
        let p = a.percentiles();
        assert_eq!(p.count, 100);
        assert_eq!(p.p50_us, 100);
        // 3 significant digits: within 0.1% of 2 s.
        assert!(p.max_us.abs_diff(2_000_000) <= 2_000, "{}", p.max_us);
    }

    #[test]
    fn out_of_range_values_are_clamped_not_lost() {
        let mut l = Latencies::new();
        l.record(Duration::ZERO);
        l.record(Duration::from_secs(7200));
        assert_eq!(l.count(), 2);
        assert_eq!(l.percentiles().p50_us, 1);
    }

    #[test]
    fn empty_histogram_has_zero_percentiles_and_no_points() {
        let l = Latencies::new();
        assert_eq!(l.percentiles(), Percentiles::default());
        assert!(l.distribution().is_empty());
    }

    #[test]
    fn distribution_is_monotonic_from_median_region_to_max() {
        let mut l = Latencies::new();
        for us in 1..=10_000u64 {
            l.record(Duration::from_micros(us));
        }
        let points = l.distribution();
        assert_eq!(points.len(), 41);
        assert!(points
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
        assert!((points[10].0 - 90.0).abs() < 1e-9);
    }

    #[test]
    fn micros_are_formatted_with_a_readable_unit() {
        assert_eq!(format_micros(87), "87µs");
        assert_eq!(format_micros(1234), "1.23ms");
        assert_eq!(format_micros(2_500_000), "2.50s");
    }
}
