//! The engine: N connections, each a task with its own tally (no shared state on the
//! hot path but two relaxed counters for the progress line), closed or open loop,
//! bounded by a deadline and optionally a request count.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::driver::{Driver, Plan};
use crate::client::{check_loopback, NotLoopback};
use crate::report::{Report, Tally};
use crate::scenario::{is_denied, Outcome, Scenario, Workload};
use crate::schedule::{timing, Schedule};

/// Most connections a run opens.
pub const MAX_CONNECTIONS: usize = 10_000;
/// Longest run.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);
/// Largest body.
pub const MAX_BODY_BYTES: usize = 64 << 20;

/// One run: a workload against a target.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// The name shown in the report.
    pub label: String,
    /// What each request is.
    pub workload: Workload,
    /// A proxy listener on loopback, or with `direct` the upstream itself.
    pub target: SocketAddr,
    /// The target is the upstream: no CONNECT step.
    pub direct: bool,
    /// Connections, each with one request in flight.
    pub connections: usize,
    /// Open loop: total requests per second; `None` = closed loop.
    pub rate: Option<f64>,
    /// How long to send.
    pub duration: Duration,
    /// Stop after this many requests.
    pub max_requests: Option<u64>,
    /// A request with no complete answer after this long fails as `timeout`.
    pub timeout: Duration,
    /// Print a progress line every second (standard error).
    pub progress: bool,
}

/// A plan that would not be bounded, not loopback, or not meaningful.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// Not loopback.
    #[error(transparent)]
    NotLoopback(#[from] NotLoopback),
    /// Connections out of range.
    #[error("{0} connections: must be 1 to {MAX_CONNECTIONS}")]
    Connections(usize),
    /// Duration out of range.
    #[error("duration {0:?}: must be more than 0 and at most 1h")]
    Duration(Duration),
    /// Rate out of range.
    #[error("rate {0}: must be a positive number of requests per second up to 10000000")]
    Rate(f64),
    /// Deny percentage out of range.
    #[error("deny percent {0}: must be 0 to 100")]
    DenyPercent(u8),
    /// Body out of range.
    #[error("body of {0} bytes: must be at most {MAX_BODY_BYTES}")]
    Body(usize),
    /// A connect scenario without the upstream port.
    #[error("{0} needs --connect-port, the upstream port named in CONNECT host:port")]
    ConnectPort(&'static str),
    /// A mix that the direct path cannot express.
    #[error(
        "connect-echo with denied requests needs a proxy: on the direct path nothing refuses them"
    )]
    DirectEchoMix,
    /// Echo of nothing.
    #[error("connect-echo with 0 bytes: nothing would be measured")]
    EmptyEcho,
}

impl RunPlan {
    /// Checks the plan is bounded, loopback, and meaningful.
    ///
    /// Fails naming the value and its limit.
    pub fn validate(&self) -> Result<(), PlanError> {
        check_loopback(self.target)?;
        if self.connections == 0 || self.connections > MAX_CONNECTIONS {
            return Err(PlanError::Connections(self.connections));
        }
        if self.duration.is_zero() || self.duration > MAX_DURATION {
            return Err(PlanError::Duration(self.duration));
        }
        if let Some(rate) = self.rate {
            if !(rate > 0.0 && rate <= 1e7) {
                return Err(PlanError::Rate(rate));
            }
        }
        let w = &self.workload;
        if w.deny_percent > 100 {
            return Err(PlanError::DenyPercent(w.deny_percent));
        }
        if w.body_bytes > MAX_BODY_BYTES {
            return Err(PlanError::Body(w.body_bytes));
        }
        let connect = matches!(w.scenario, Scenario::ConnectTls | Scenario::ConnectEcho);
        if connect && !self.direct && w.connect_port == 0 {
            return Err(PlanError::ConnectPort(w.scenario.name()));
        }
        if w.scenario == Scenario::ConnectEcho {
            if self.direct && w.deny_percent > 0 {
                return Err(PlanError::DirectEchoMix);
            }
            if w.body_bytes == 0 {
                return Err(PlanError::EmptyEcho);
            }
        }
        Ok(())
    }
}

/// What the connection tasks share.
struct Shared {
    plan: Arc<Plan>,
    start: Instant,
    deadline: Instant,
    issued: AtomicU64,
    max_requests: Option<u64>,
    rate: Option<f64>,
    connections: usize,
    deny_percent: u8,
    timeout: Duration,
    completed: AtomicU64,
    failed: AtomicU64,
}

/// Runs `plan` and reports what it measured.
///
/// Fails when the plan is invalid; failures of requests are counted, not returned.
pub async fn execute(plan: &RunPlan) -> Result<Report, PlanError> {
    plan.validate()?;
    let start = Instant::now();
    let shared = Arc::new(Shared {
        plan: Arc::new(Plan::new(plan.workload.clone(), plan.target, plan.direct)),
        start,
        deadline: start + plan.duration,
        issued: AtomicU64::new(0),
        max_requests: plan.max_requests,
        rate: plan.rate,
        connections: plan.connections,
        deny_percent: plan.workload.deny_percent,
        timeout: plan.timeout,
        completed: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
    let done = Arc::new(AtomicBool::new(false));
    let progress = plan
        .progress
        .then(|| tokio::spawn(progress_line(shared.clone(), done.clone(), plan.duration)));
    let tasks: Vec<_> = (0..plan.connections)
        .map(|index| tokio::spawn(connection(shared.clone(), index)))
        .collect();
    let mut tally = Tally::default();
    for task in tasks {
        // A task that panicked loses its tally; the others still report.
        if let Ok(t) = task.await {
            tally.merge(&t);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    if let Some(progress) = progress {
        let _ = progress.await;
    }
    Ok(Report::new(
        &plan.label,
        plan.workload.describe(),
        plan.connections,
        plan.rate,
        elapsed,
        tally,
    ))
}

async fn connection(shared: Arc<Shared>, index: usize) -> Tally {
    let mut driver = Driver::new(shared.plan.clone());
    let mut tally = Tally::default();
    let schedule = shared
        .rate
        .map(|rate| Schedule::for_connection(rate, shared.connections, index));
    // Offsets the mix per connection so denied requests do not all fall together.
    let mix_offset = index as u64 * 7;
    let mut k: u64 = 0;
    loop {
        let (intended, behind) = match &schedule {
            Some(s) => {
                let at = shared.start + s.intended(k);
                if at >= shared.deadline {
                    break;
                }
                let behind = Instant::now() > at;
                if !behind {
                    tokio::time::sleep_until(at.into()).await;
                }
                (at, behind)
            }
            None => (Instant::now(), true),
        };
        // A closed loop stops at the deadline. An open loop sends every request scheduled
        // before it, also one a slow answer delayed past it (dropping those would hide
        // exactly the slowness being measured), unless it is a whole timeout behind.
        let stop_at = match &schedule {
            Some(_) => shared.deadline + shared.timeout,
            None => shared.deadline,
        };
        if Instant::now() >= stop_at {
            break;
        }
        if let Some(limit) = shared.max_requests {
            if shared.issued.fetch_add(1, Ordering::Relaxed) >= limit {
                break;
            }
        }
        let deny = is_denied(shared.deny_percent, k + mix_offset);
        let sent = Instant::now();
        let outcome = match tokio::time::timeout(shared.timeout, driver.request(deny)).await {
            Ok(outcome) => outcome,
            Err(_) => {
                driver.reset();
                Outcome::Error(crate::scenario::ErrorKind::Timeout)
            }
        };
        let finished = Instant::now();
        let t = timing(
            intended - shared.start,
            sent - shared.start,
            finished - shared.start,
            behind,
        );
        tally.record(outcome, t);
        shared.completed.fetch_add(1, Ordering::Relaxed);
        if matches!(outcome, Outcome::Error(_)) {
            shared.failed.fetch_add(1, Ordering::Relaxed);
        }
        k += 1;
    }
    tally
}

/// Prints `[3s/10s] 45123 req/s, 0 errors` every second: over itself on a terminal,
/// one line each otherwise.
async fn progress_line(shared: Arc<Shared>, done: Arc<AtomicBool>, duration: Duration) {
    let terminal = std::io::stderr().is_terminal();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last = 0u64;
    while !done.load(Ordering::Relaxed) {
        tick.tick().await;
        let completed = shared.completed.load(Ordering::Relaxed);
        let failed = shared.failed.load(Ordering::Relaxed);
        let line = format!(
            "[{:.0}s/{:.0}s] {} req/s, {} requests, {} errors",
            shared
                .start
                .elapsed()
                .as_secs_f64()
                .min(duration.as_secs_f64()),
            duration.as_secs_f64(),
            completed - last,
            completed,
            failed
        );
        last = completed;
        let mut err = std::io::stderr().lock();
        let _ = if terminal {
            write!(err, "\r{line}\x1b[K")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
    }
    if terminal {
        let _ = write!(std::io::stderr(), "\r\x1b[K");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> RunPlan {
        RunPlan {
            label: "t".into(),
            workload: Workload {
                scenario: Scenario::Http1,
                new_connection: false,
                body_bytes: 64,
                deny_percent: 0,
                connect_port: 0,
            },
            target: "127.0.0.1:8080".parse().unwrap(),
            direct: false,
            connections: 10,
            rate: None,
            duration: Duration::from_secs(1),
            max_requests: None,
            timeout: Duration::from_secs(5),
            progress: false,
        }
    }

    #[test]
    fn plans_are_bounded_and_loopback_only() {
        assert_eq!(plan().validate(), Ok(()));
        let mut p = plan();
        p.target = "198.51.100.1:80".parse().unwrap();
        assert!(matches!(p.validate(), Err(PlanError::NotLoopback(_))));
        let mut p = plan();
        p.connections = 0;
        assert_eq!(p.validate(), Err(PlanError::Connections(0)));
        let mut p = plan();
        p.duration = Duration::from_secs(7200);
        assert!(p.validate().unwrap_err().to_string().contains("at most 1h"));
        let mut p = plan();
        p.rate = Some(0.0);
        assert_eq!(p.validate(), Err(PlanError::Rate(0.0)));
        let mut p = plan();
        p.workload.deny_percent = 101;
        assert_eq!(p.validate(), Err(PlanError::DenyPercent(101)));
    }

    #[test]
    fn connect_plans_need_a_port_and_a_proxy_for_mixes() {
        let mut p = plan();
        p.workload.scenario = Scenario::ConnectEcho;
        assert_eq!(p.validate(), Err(PlanError::ConnectPort("connect-echo")));
        p.workload.connect_port = 9;
        assert_eq!(p.validate(), Ok(()));
        p.direct = true;
        p.workload.deny_percent = 10;
        assert_eq!(p.validate(), Err(PlanError::DirectEchoMix));
    }

    #[tokio::test]
    async fn a_refused_target_counts_connect_errors_and_stays_bounded() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let mut p = plan();
        p.target = addr;
        p.connections = 2;
        p.max_requests = Some(50);
        let report = execute(&p).await.unwrap();
        assert_eq!(report.requests, 50);
        assert_eq!(report.errors, 50);
        assert_eq!(report.errors_by_kind.get("connect"), Some(&50));
    }
}
