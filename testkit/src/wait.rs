//! Waiting for a condition with a deadline, so tests synchronise on what they expect to
//! see (a request reached the stub, an audit line was written) rather than on sleeps.

use std::future::Future;
use std::time::{Duration, Instant};

/// How long to pause between two checks of a condition.
const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// Checks `condition` until it holds or `deadline` has passed; true when it held.
///
/// Blocks the thread between checks: call it from synchronous tests, or from async code
/// through [`wait_until`], which yields to the runtime instead.
pub fn wait_for(deadline: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Checks `condition` until it holds or `deadline` has passed; true when it held. The
/// checks run on the calling task, with the runtime free to progress between them.
///
/// Uses real time (`std::time::Instant`), so it still ends with tokio's clock paused.
pub async fn wait_until(deadline: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Like [`wait_until`] with an async condition, e.g. one that sends a request.
///
/// A check still running at the deadline is not cut short; bound it with
/// `tokio::time::timeout` when it does network I/O.
pub async fn wait_until_async<F, Fut>(deadline: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// How long [`within`] lets a step of a test take.
pub const STEP_DEADLINE: Duration = Duration::from_secs(10);

/// Awaits `future`, failing the test (a panic) if it takes longer than
/// [`STEP_DEADLINE`]: a hung step reports itself instead of hanging the run.
#[allow(clippy::panic, reason = "a test helper: a timeout fails the test")]
pub async fn within<T>(future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP_DEADLINE, future).await {
        Ok(value) => value,
        Err(_) => panic!("a step of the test took longer than {STEP_DEADLINE:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[test]
    fn wait_for_sees_a_condition_become_true() {
        let mut calls = 0;
        assert!(wait_for(Duration::from_secs(5), || {
            calls += 1;
            calls == 3
        }));
    }

    #[test]
    fn wait_for_gives_up_at_the_deadline() {
        let start = Instant::now();
        assert!(!wait_for(Duration::from_millis(30), || false));
        assert!(start.elapsed() >= Duration::from_millis(30));
    }

    #[tokio::test]
    async fn wait_until_lets_other_tasks_run() {
        let counter = Arc::new(AtomicU32::new(0));
        let bumper = Arc::clone(&counter);
        tokio::spawn(async move { bumper.store(1, Ordering::SeqCst) });
        assert!(
            wait_until(Duration::from_secs(5), || counter.load(Ordering::SeqCst)
                == 1)
            .await
        );
        assert!(!wait_until(Duration::from_millis(20), || false).await);
    }

    #[tokio::test]
    async fn wait_until_async_awaits_its_condition() {
        let mut n = 0;
        let held = wait_until_async(Duration::from_secs(5), || {
            n += 1;
            let now = n;
            async move { now >= 2 }
        })
        .await;
        assert!(held);
    }
}
