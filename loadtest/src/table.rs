//! The side-by-side of a comparison: medians over repetitions per target, and the
//! Markdown table with ratios to the gateway.

use std::fmt::Write as _;

use serde::Serialize;

use crate::histogram::format_micros;
use crate::report::Report;

/// The median figures of one target over its repetitions.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Medians {
    /// Repetitions measured.
    pub runs: usize,
    /// Requests per second.
    pub requests_per_s: f64,
    /// Bytes received per second.
    pub bytes_per_s: f64,
    /// Latency percentiles, µs.
    pub p50_us: u64,
    /// 90th.
    pub p90_us: u64,
    /// 99th.
    pub p99_us: u64,
    /// 99.9th.
    pub p999_us: u64,
    /// Largest.
    pub max_us: u64,
    /// Failed requests, summed over every run.
    pub errors: u64,
    /// Proxy CPU per request (per connection when each request opens one), µs.
    pub cpu_per_request_us: Option<f64>,
    /// The kernel-mode part of it, µs.
    pub kernel_per_request_us: Option<f64>,
    /// Proxy CPU per MiB received, ms.
    pub cpu_per_mib_ms: Option<f64>,
    /// Proxy cores busy.
    pub cpu_cores: Option<f64>,
}

/// The median of `values` (mean of the middle two for an even count); 0 when empty.
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

impl Medians {
    /// The medians of `runs`, each figure taken on its own.
    pub fn of(runs: &[Report]) -> Medians {
        let m = |f: &dyn Fn(&Report) -> f64| median(&mut runs.iter().map(f).collect::<Vec<_>>());
        let cpu = |f: &dyn Fn(&crate::report::ProxyCpu) -> f64| {
            let mut values: Vec<f64> = runs
                .iter()
                .filter_map(|r| r.proxy_cpu.as_ref().map(f))
                .collect();
            (!values.is_empty()).then(|| median(&mut values))
        };
        Medians {
            runs: runs.len(),
            requests_per_s: m(&|r| r.requests_per_s),
            bytes_per_s: m(&|r| r.bytes_per_s),
            p50_us: m(&|r| r.latency.p50_us as f64) as u64,
            p90_us: m(&|r| r.latency.p90_us as f64) as u64,
            p99_us: m(&|r| r.latency.p99_us as f64) as u64,
            p999_us: m(&|r| r.latency.p999_us as f64) as u64,
            max_us: m(&|r| r.latency.max_us as f64) as u64,
            errors: runs.iter().map(|r| r.errors).sum(),
            cpu_per_request_us: cpu(&|c| c.per_request_us),
            kernel_per_request_us: cpu(&|c| c.kernel_per_request_us),
            cpu_per_mib_ms: cpu(&|c| c.per_mib_ms),
            cpu_cores: cpu(&|c| c.cores),
        }
    }
}

/// One row: a target's name, its medians, or why it has none.
#[derive(Debug, Clone)]
pub struct Row<'a> {
    /// The target.
    pub name: &'a str,
    /// Its medians, or the reason it was not measured.
    pub medians: Result<&'a Medians, &'a str>,
}

fn ratio(value: Option<f64>, base: Option<f64>) -> String {
    match (value, base) {
        (Some(v), Some(b)) if b > 0.0 => format!("{:.2}×", v / b),
        _ => "-".to_owned(),
    }
}

/// The Markdown table of `rows`, ratios against the row named `gateway` when present.
pub fn markdown(rows: &[Row<'_>]) -> String {
    let gateway = rows
        .iter()
        .find(|r| r.name == "gateway")
        .and_then(|r| r.medians.ok());
    let mut out = String::from(
        "| target | req/s | MiB/s | p50 | p90 | p99 | p99.9 | max | errors | proxy CPU µs/req | of it kernel | proxy CPU ms/MiB | proxy cores | req/s ÷ gw | CPU/req ÷ gw | p99 ÷ gw |\n\
         |---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    for row in rows {
        let m = match row.medians {
            Ok(m) => m,
            Err(why) => {
                let _ = writeln!(out, "| {} | {why} ||||||||||||||| ", row.name);
                continue;
            }
        };
        let opt = |v: Option<f64>, digits: usize| {
            v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
        };
        let _ =
            writeln!(
            out,
            "| {} | {:.0} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.name,
            m.requests_per_s,
            m.bytes_per_s / (1024.0 * 1024.0),
            format_micros(m.p50_us),
            format_micros(m.p90_us),
            format_micros(m.p99_us),
            format_micros(m.p999_us),
            format_micros(m.max_us),
            m.errors,
            opt(m.cpu_per_request_us, 1),
            opt(m.kernel_per_request_us, 1),
            opt(m.cpu_per_mib_ms, 2),
            opt(m.cpu_cores, 2),
            ratio(Some(m.requests_per_s), gateway.map(|g| g.requests_per_s)),
            ratio(m.cpu_per_request_us, gateway.and_then(|g| g.cpu_per_request_us)),
            ratio(Some(m.p99_us as f64), gateway.map(|g| g.p99_us as f64)),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{ProxyCpu, Tally};
    use crate::scenario::Outcome;
    use crate::schedule::Timing;
    use std::time::Duration;

    fn report(requests: u64, us: u64, cpu_s: Option<f64>) -> Report {
        let mut t = Tally::default();
        for _ in 0..requests {
            let d = Duration::from_micros(us);
            t.record(
                Outcome::Ok(100),
                Timing {
                    latency: d,
                    service: d,
                },
            );
        }
        let mut r = Report::new("x", String::new(), 1, None, 1.0, t);
        // A fifth of the proxy's time in user mode, the rest in the kernel.
        r.proxy_cpu = cpu_s.map(|s| ProxyCpu::of(s * 0.2, s * 0.8, &r));
        r
    }

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }

    #[test]
    fn medians_take_each_figure_on_its_own_and_sum_errors() {
        let runs = [
            report(100, 500, Some(0.002)),
            report(300, 900, Some(0.003)),
            report(200, 700, Some(0.01)),
        ];
        let m = Medians::of(&runs);
        assert_eq!(m.runs, 3);
        assert_eq!(m.requests_per_s, 200.0);
        assert_eq!(m.p50_us, 700);
        // CPU per request: 20, 10, 50 µs → 20, of it in the kernel 16, 8, 40 → 16.
        assert!((m.cpu_per_request_us.unwrap() - 20.0).abs() < 1e-9);
        assert!((m.kernel_per_request_us.unwrap() - 16.0).abs() < 1e-9);
        assert_eq!(m.errors, 0);
        assert!(Medians::of(&[report(1, 1, None)])
            .cpu_per_request_us
            .is_none());
    }

    #[test]
    fn table_has_ratios_to_the_gateway_and_notes_for_missing_targets() {
        let gw = Medians::of(&[report(100, 500, Some(0.002))]);
        let nginx = Medians::of(&[report(200, 1000, Some(0.003))]);
        let direct = Medians::of(&[report(400, 250, None)]);
        let rows = [
            Row {
                name: "direct",
                medians: Ok(&direct),
            },
            Row {
                name: "gateway",
                medians: Ok(&gw),
            },
            Row {
                name: "nginx",
                medians: Ok(&nginx),
            },
            Row {
                name: "squid",
                medians: Err("not installed"),
            },
        ];
        let table = markdown(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 6);
        assert!(lines[2].starts_with("| direct | 400 |"), "{}", lines[2]);
        assert!(lines[2].ends_with("| 4.00× | - | 0.50× |"), "{}", lines[2]);
        assert!(
            lines[3].ends_with("| 1.00× | 1.00× | 1.00× |"),
            "{}",
            lines[3]
        );
        // nginx: 200 req/s, 15 µs/req against the gateway's 20, p99 1 ms against 500 µs.
        assert!(lines[4].contains("| 15.0 | 12.0 |"), "{}", lines[4]);
        assert!(
            lines[4].ends_with("| 2.00× | 0.75× | 2.00× |"),
            "{}",
            lines[4]
        );
        assert!(lines[5].starts_with("| squid | not installed |"));
    }
}
