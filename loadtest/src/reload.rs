//! Policy reloads under load: while a measured run goes on, the gateway's policy file is
//! rewritten every interval with a harmless change (a marker rule whose host moves), the
//! way a GitOps sync replaces it; the gateway's own counter says how many it applied.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::policy_load::{self, applied_reloads, fetch_metrics};
use crate::targets::GatewayPolicy;

/// Reloads of one target, summed over its measured runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Reloads {
    /// Policy files written.
    pub written: u64,
    /// Reloads the gateway counted as applied (`egress_policy_reloads_total`).
    pub applied: u64,
    /// Writes that failed.
    pub write_errors: u64,
    /// Failed requests of the runs the reloads happened in.
    pub errors_during: u64,
}

impl Reloads {
    /// `12 policy reloads written, 12 applied, 0 failed requests: pass`.
    pub fn describe(&self) -> String {
        let verdict = if self.errors_during == 0 && self.write_errors == 0 && self.applied > 0 {
            "pass"
        } else {
            "FAIL"
        };
        format!(
            "{} policy rewrites, {} reloads applied, {} write errors, {} failed requests during them: {verdict}",
            self.written, self.applied, self.write_errors, self.errors_during
        )
    }
}

/// A reload loop running beside a measured run.
#[derive(Debug)]
pub struct Reloader {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(u64, u64)>,
    admin: std::net::SocketAddr,
    applied_before: u64,
}

impl Reloader {
    /// Reads the gateway's reload counter, then starts rewriting `policy` every `every`.
    pub async fn start(policy: GatewayPolicy, every: Duration) -> Reloader {
        let admin = policy.admin;
        let applied_before = applied_count(admin).await;
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(rewrite_loop(policy, every, Arc::clone(&stop)));
        Reloader {
            stop,
            task,
            admin,
            applied_before,
        }
    }

    /// Stops rewriting and waits (at most 15 s) for the gateway to apply what was
    /// written; the count is what it applied by then.
    pub async fn finish(self) -> Reloads {
        self.stop.store(true, Ordering::Relaxed);
        let (written, write_errors) = self.task.await.unwrap_or((0, 0));
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut applied = 0;
        loop {
            applied = applied_count(self.admin)
                .await
                .saturating_sub(self.applied_before)
                .max(applied);
            if applied >= written || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Reloads {
            written,
            applied,
            write_errors,
            errors_during: 0,
        }
    }
}

async fn applied_count(admin: std::net::SocketAddr) -> u64 {
    match fetch_metrics(admin).await {
        Ok(text) => applied_reloads(&text).unwrap_or(0),
        Err(_) => 0,
    }
}

/// Every `every`: the policy with a new marker rule, written atomically. Returns the
/// writes done and the writes that failed.
async fn rewrite_loop(policy: GatewayPolicy, every: Duration, stop: Arc<AtomicBool>) -> (u64, u64) {
    let policy = Arc::new(policy);
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    let (mut written, mut failed) = (0, 0);
    // Generations start from the clock, so runs of one target never write the same text.
    let mut generation = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    loop {
        ticks.tick().await;
        if stop.load(Ordering::Relaxed) {
            return (written, failed);
        }
        generation += 1;
        let policy = Arc::clone(&policy);
        let done = tokio::task::spawn_blocking(move || {
            let text = format!(
                "{}{}",
                policy.text,
                policy_load::marker_rule(generation, &policy.listeners)
            );
            policy_load::write_atomically(&policy.path, &text)
        })
        .await;
        match done {
            Ok(Ok(())) => written += 1,
            _ => failed += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_needs_applied_reloads_and_no_failure() {
        let mut r = Reloads {
            written: 5,
            applied: 5,
            write_errors: 0,
            errors_during: 0,
        };
        assert!(r.describe().ends_with(": pass"), "{}", r.describe());
        r.errors_during = 1;
        assert!(r.describe().ends_with(": FAIL"));
        r.errors_during = 0;
        r.applied = 0;
        assert!(r.describe().ends_with(": FAIL"));
    }

    #[tokio::test]
    async fn rewrites_until_stopped_and_counts_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.yaml");
        std::fs::write(&path, "rules:\n").unwrap();
        // Nothing listens on the admin address: the applied count stays 0.
        let admin = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let policy = GatewayPolicy {
            path: path.clone(),
            text: "rules:\n".into(),
            listeners: vec!["http"],
            admin,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(rewrite_loop(
            policy,
            Duration::from_millis(10),
            Arc::clone(&stop),
        ));
        let deadline = Instant::now() + Duration::from_secs(5);
        while !std::fs::read_to_string(&path)
            .unwrap()
            .contains("reload-marker")
        {
            assert!(Instant::now() < deadline, "no rewrite within 5 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.store(true, Ordering::Relaxed);
        let (written, failed) = task.await.unwrap();
        assert!(written >= 1);
        assert_eq!(failed, 0);
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .contains("listeners: [http]"));
    }
}
