//! One scenario against several targets in one invocation: the stub upstreams in this
//! process, each proxy started by the tool, the targets alternated over repetitions
//! (machines drift by 10–15%; alternating spreads the drift over every target), the
//! proxy's CPU read from /proc around each measured run, medians side by side.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

pub use crate::machine::{machine, Machine};

use crate::histogram::Latencies;
use crate::plot::{self, Series};
use crate::reload::{Reloader, Reloads};
use crate::report::{describe_load, ProxyCpu, Report};
use crate::run::{execute, RunPlan};
use crate::scenario::{Scenario, Workload};
use crate::table::{self, Medians, Row};
use crate::targets::{Running, StartEnv, TargetKind};
use crate::upstream::{UpstreamConfig, Upstreams};

/// A comparison to make.
#[derive(Debug, Clone)]
pub struct ComparePlan {
    /// The scenario (its `connect_port` is filled in from the stub upstreams).
    pub workload: Workload,
    /// Targets, in the order of the first repetition.
    pub targets: Vec<TargetKind>,
    /// Connections per run.
    pub connections: usize,
    /// Open loop rate, or closed loop.
    pub rate: Option<f64>,
    /// Measured time per run.
    pub duration: Duration,
    /// Unmeasured time before each run (connections, pools, caches warm up).
    pub warmup: Duration,
    /// Runs per target.
    pub repetitions: usize,
    /// Request timeout.
    pub timeout: Duration,
    /// How to start the proxies.
    pub env: StartEnv,
    /// CPUs of the load generator, for the record.
    pub generator_cpus: Option<String>,
    /// Keep each proxy's directory (configuration, access log) after the run.
    pub keep_logs: bool,
    /// Rewrite the gateway's policy this often during its measured runs.
    pub reload_every: Option<Duration>,
}

/// A target's results.
#[derive(Debug, Clone, Serialize)]
pub struct TargetResult {
    /// Its name.
    pub target: String,
    /// Medians over the runs, or why it was not measured.
    pub medians: Option<Medians>,
    /// Why it was not measured.
    pub note: Option<String>,
    /// Every run.
    pub runs: Vec<Report>,
    /// The proxy's working directory (configuration and logs), when kept.
    pub dir: Option<PathBuf>,
    /// Resident memory of the proxy's main process once it listens, KiB.
    pub idle_rss_kib: Option<u64>,
    /// Policy reloads during the measured runs (gateway targets with `--reload-every`).
    pub reloads: Option<Reloads>,
    /// Every run's latencies merged, for the plot.
    #[serde(skip)]
    pub latencies: Latencies,
}

/// A comparison's results.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The scenario.
    pub workload: String,
    /// Connections.
    pub connections: usize,
    /// Open loop rate.
    pub rate: Option<f64>,
    /// Measured seconds per run.
    pub duration_s: f64,
    /// Runs per target.
    pub repetitions: usize,
    /// Proxy CPUs (taskset).
    pub proxy_cpus: Option<String>,
    /// Load generator CPUs (taskset).
    pub generator_cpus: Option<String>,
    /// Where it ran.
    pub machine: Machine,
    /// Per target.
    pub targets: Vec<TargetResult>,
}

/// Runs the comparison; targets that cannot start are reported, not fatal.
///
/// Fails when the stub upstreams cannot start or a run plan is invalid.
pub async fn compare(plan: &ComparePlan) -> anyhow::Result<Comparison> {
    let upstreams = Upstreams::start(UpstreamConfig {
        body_bytes: plan.workload.body_bytes as u64,
        ..UpstreamConfig::default()
    })
    .await?;
    let mut workload = plan.workload.clone();
    workload.connect_port = match workload.scenario {
        Scenario::ConnectTls => upstreams.tls.port(),
        Scenario::ConnectEcho => upstreams.echo.port(),
        _ => 0,
    };
    let mut results: Vec<TargetResult> = Vec::new();
    let mut running: Vec<(usize, Running)> = Vec::new();
    for (kind, label, env) in variants(&plan.targets, &plan.env) {
        let kind = &kind;
        let mut result = TargetResult {
            target: label,
            medians: None,
            note: None,
            runs: Vec::new(),
            dir: None,
            idle_rss_kib: None,
            reloads: None,
            latencies: Latencies::new(),
        };
        if !kind.supports(workload.scenario) {
            result.note = Some(format!("no {} listener", workload.scenario.name()));
        } else {
            let (kind, scenario, addrs, env) = (*kind, workload.scenario, upstreams.addrs(), env);
            match tokio::task::spawn_blocking(move || Running::start(kind, scenario, addrs, &env))
                .await?
            {
                Ok(target) => {
                    result.idle_rss_kib = target.rss_kib();
                    running.push((results.len(), target));
                }
                Err(e) => {
                    eprintln!("egress-loadtest: {}: {e}", kind.name());
                    result.note = Some(short_reason(&e.to_string()));
                }
            }
        }
        results.push(result);
    }
    for rep in 0..plan.repetitions {
        let shift = rep % running.len().max(1);
        for (index, target) in running[shift..].iter().chain(&running[..shift]) {
            let Some(addr) = target.address(workload.scenario) else {
                continue;
            };
            let label = results[*index].target.clone();
            let mut run = RunPlan {
                label: label.clone(),
                workload: workload.clone(),
                target: addr,
                direct: target.kind == TargetKind::Direct,
                connections: plan.connections,
                rate: plan.rate,
                duration: plan.warmup,
                max_requests: None,
                timeout: plan.timeout,
                progress: false,
            };
            if !plan.warmup.is_zero() {
                execute(&run).await?;
            }
            run.duration = plan.duration;
            let before = target.cpu_time();
            let threads_before = target.thread_ticks();
            let reloading = match (plan.reload_every, target.gateway_policy()) {
                (Some(every), Some(policy)) => Some(Reloader::start(policy.clone(), every).await),
                _ => None,
            };
            let mut report = execute(&run).await?;
            if let (Some(before), Some(after)) = (before, target.cpu_time()) {
                let spent = after.since(before);
                report.proxy_cpu = Some(ProxyCpu::of(
                    spent.user.as_secs_f64(),
                    spent.kernel.as_secs_f64(),
                    &report,
                ));
            }
            let hz = target.ticks_per_second().max(1) as f64;
            for (name, ticks) in target.thread_ticks() {
                let spent = ticks.saturating_sub(threads_before.get(&name).copied().unwrap_or(0));
                if spent > 0 {
                    report.proxy_threads.insert(name, spent as f64 / hz);
                }
            }
            // After the CPU readings: waiting for the last reloads is not the run's work.
            if let Some(reloader) = reloading {
                let done = reloader.finish().await;
                let total = results[*index].reloads.get_or_insert_with(Reloads::default);
                total.written += done.written;
                total.applied += done.applied;
                total.write_errors += done.write_errors;
                total.errors_during += report.errors;
            }
            eprintln!(
                "[{}/{}] {:8} {:>9.0} req/s  p99 {:>8}  errors {}{}",
                rep + 1,
                plan.repetitions,
                label,
                report.requests_per_s,
                crate::histogram::format_micros(report.latency.p99_us),
                report.errors,
                report
                    .proxy_cpu
                    .map(|c| format!(
                        "  proxy {:.1} µs/req (kernel {:.1})",
                        c.per_request_us, c.kernel_per_request_us
                    ))
                    .unwrap_or_default()
            );
            let result = &mut results[*index];
            result.latencies.merge(&report.histogram);
            result.runs.push(report);
        }
    }
    if plan.keep_logs {
        for (index, target) in &mut running {
            results[*index].dir = Some(target.dir().to_path_buf());
            target.keep_dir();
        }
    }
    // Stopping waits for each proxy to exit: off the runtime's thread.
    tokio::task::spawn_blocking(move || drop(running)).await?;
    for result in &mut results {
        if !result.runs.is_empty() {
            result.medians = Some(Medians::of(&result.runs));
        }
    }
    Ok(Comparison {
        workload: workload.describe(),
        connections: plan.connections,
        rate: plan.rate,
        duration_s: plan.duration.as_secs_f64(),
        repetitions: plan.repetitions,
        proxy_cpus: plan.env.proxy_cpus.clone(),
        generator_cpus: plan.generator_cpus.clone(),
        machine: machine(),
        targets: results,
    })
}

/// The targets with the environment each starts in: with filler rules asked for, the
/// gateway runs twice, with its plain policy (`gateway`, the reference of the ratios)
/// and with the rules (`gateway+N rules`).
pub fn variants(targets: &[TargetKind], env: &StartEnv) -> Vec<(TargetKind, String, StartEnv)> {
    let mut out = Vec::new();
    for kind in targets {
        let plain = StartEnv {
            policy_rules: 0,
            ..env.clone()
        };
        out.push((*kind, kind.name().to_owned(), plain));
        if *kind == TargetKind::Gateway && env.policy_rules > 0 {
            let label = format!("{}+{} rules", kind.name(), env.policy_rules);
            out.push((*kind, label, env.clone()));
        }
    }
    out
}

/// The line of a start error worth a table cell: the proxy's last log line when there
/// is one (`listener tls: protocol Tls is not supported yet`), else the first line.
fn short_reason(text: &str) -> String {
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    let first = text.lines().next().unwrap_or_default();
    let line = match last.split_once(".log: ") {
        Some((_, log_line)) => log_line,
        None => first,
    };
    format!("not started: {}", line.replace('|', "/"))
}

impl Comparison {
    /// The table with its heading: what ran, where, and how.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let load = describe_load(self.rate);
        let _ = writeln!(
            out,
            "**{}**, {} connections, {load}, {} × {:.0} s per target (medians)\n",
            self.workload, self.connections, self.repetitions, self.duration_s
        );
        let _ = writeln!(
            out,
            "{} · nproc {} · kernel {} · {} · proxy on CPU {} · load generator and upstream on CPU {}\n",
            self.machine.date,
            self.machine.nproc,
            self.machine.kernel,
            self.machine.cpu,
            self.proxy_cpus.as_deref().unwrap_or("any"),
            self.generator_cpus.as_deref().unwrap_or("any"),
        );
        let rows: Vec<Row<'_>> = self
            .targets
            .iter()
            .map(|t| Row {
                name: &t.target,
                medians: t
                    .medians
                    .as_ref()
                    .ok_or(t.note.as_deref().unwrap_or("not measured")),
            })
            .collect();
        out.push_str(&table::markdown(&rows));
        out.push_str(&self.notes());
        out
    }

    /// One line per target with its idle memory and the reloads it went through.
    fn notes(&self) -> String {
        let mut out = String::new();
        for t in &self.targets {
            let mut parts = Vec::new();
            if let Some(kib) = t.idle_rss_kib {
                parts.push(format!("RSS once listening {:.1} MiB", kib as f64 / 1024.0));
            }
            if let Some(r) = &t.reloads {
                parts.push(r.describe());
            }
            if !parts.is_empty() {
                let _ = writeln!(out, "- {}: {}", t.target, parts.join("; "));
            }
        }
        if !out.is_empty() {
            out.insert(0, '\n');
        }
        out
    }

    /// Writes `table.md`, `results.json` and `latency.svg` into `dir`; returns their
    /// paths.
    ///
    /// Fails when a file cannot be written.
    pub fn write(&self, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir)?;
        let table = dir.join("table.md");
        std::fs::write(&table, self.markdown())?;
        let json = dir.join("results.json");
        std::fs::write(&json, serde_json::to_string_pretty(self)?)?;
        let svg = dir.join("latency.svg");
        let series: Vec<Series> = self
            .targets
            .iter()
            .filter(|t| t.latencies.count() > 0)
            .map(|t| Series {
                name: t.target.clone(),
                points: t.latencies.distribution(),
            })
            .collect();
        plot::write_svg(&svg, &self.workload, &series)?;
        Ok(vec![table, json, svg])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filler_rules_add_a_second_gateway_row_and_keep_the_plain_one() {
        let env = StartEnv {
            gateway_bin: "gw".into(),
            proxy_cpus: None,
            policy_rules: 100_000,
        };
        let v = variants(&[TargetKind::Gateway, TargetKind::Nginx], &env);
        let rows: Vec<(&str, usize)> = v
            .iter()
            .map(|(_, l, e)| (l.as_str(), e.policy_rules))
            .collect();
        assert_eq!(
            rows,
            [
                ("gateway", 0),
                ("gateway+100000 rules", 100_000),
                ("nginx", 0)
            ]
        );
        let plain = variants(
            &[TargetKind::Gateway],
            &StartEnv {
                policy_rules: 0,
                ..env
            },
        );
        assert_eq!(plain.len(), 1);
    }
}
