//! When requests are sent. Closed loop: each connection sends its next request when the
//! previous one completes. Open loop: each connection follows a fixed schedule, and a
//! request's latency counts from when the schedule says it should have been sent, not
//! from when it was (wrk2's correction for coordinated omission): a stall in the proxy
//! then shows in every request that should have gone out during it, instead of in one.

use std::time::Duration;

/// The send times of one connection in an open-loop run, as offsets from the start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// Offset of the first request: connections are staggered so they do not all fire
    /// at the same instant.
    first: Duration,
    /// Time between two requests of this connection.
    interval: Duration,
}

impl Schedule {
    /// The schedule of connection `index` of `connections` sharing a total `rate`
    /// (requests per second).
    ///
    /// # Panics
    /// Never for a validated plan: `rate` > 0 and `connections` ≥ 1 are checked first.
    pub fn for_connection(rate: f64, connections: usize, index: usize) -> Schedule {
        let per_connection = rate / connections.max(1) as f64;
        let interval = Duration::from_secs_f64(1.0 / per_connection.max(1e-9));
        let first = interval.mul_f64(index as f64 / connections.max(1) as f64);
        Schedule { first, interval }
    }

    /// When request `k` (0-based) should be sent.
    pub fn intended(&self, k: u64) -> Duration {
        self.first + self.interval.mul_f64(k as f64)
    }

    /// Time between two requests of this connection.
    pub fn interval(&self) -> Duration {
        self.interval
    }
}

/// Timings of one request: what the report's histograms record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// From the intended send time to completion: the corrected latency (closed loop:
    /// the same as `service`).
    pub latency: Duration,
    /// From the actual send to completion: what an uncorrected tool reports.
    pub service: Duration,
}

/// The timings of a request intended at `intended`, actually sent at `sent` (never
/// before `intended`), completed at `done`; offsets from the run's start. `behind`: the
/// previous request was still in flight at `intended`, so the target made this one
/// late and the wait counts. Otherwise the connection slept until `intended`, and
/// the timer's own lateness (tokio's timer has millisecond ticks) is the load
/// generator's, not the target's: the latency counts from the send.
pub fn timing(intended: Duration, sent: Duration, done: Duration, behind: bool) -> Timing {
    let sent = sent.max(intended);
    let done = done.max(sent);
    let start = if behind { intended } else { sent };
    Timing {
        latency: done - start,
        service: done - sent,
    }
}

/// Plays one open-loop connection on a virtual clock: each request takes
/// `service[k]`, and the next is sent at its intended time or when the previous one
/// completes, whichever is later. What the engine does with real time; here so the
/// correction can be checked exactly.
pub fn simulate(schedule: &Schedule, service: &[Duration]) -> Vec<Timing> {
    let mut now = Duration::ZERO;
    let mut timings = Vec::with_capacity(service.len());
    for (k, took) in service.iter().enumerate() {
        let intended = schedule.intended(k as u64);
        let behind = now > intended;
        let sent = now.max(intended);
        let done = sent + *took;
        timings.push(timing(intended, sent, done, behind));
        now = done;
    }
    timings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn connections_share_the_rate_and_are_staggered() {
        let s0 = Schedule::for_connection(1000.0, 4, 0);
        let s1 = Schedule::for_connection(1000.0, 4, 1);
        // 250 req/s per connection: every 4 ms, the second connection 1 ms later.
        assert_eq!(s0.interval(), ms(4));
        assert_eq!(s0.intended(0), Duration::ZERO);
        assert_eq!(s0.intended(3), ms(12));
        assert_eq!(s1.intended(0), ms(1));
        assert_eq!(s1.intended(2), ms(9));
    }

    #[test]
    fn a_fast_server_keeps_to_the_schedule() {
        let s = Schedule::for_connection(100.0, 1, 0);
        let t = simulate(&s, &[ms(1); 5]);
        assert!(t.iter().all(|t| t.latency == ms(1) && t.service == ms(1)));
    }

    #[test]
    fn a_stall_is_charged_to_every_request_that_should_have_been_sent_during_it() {
        // 100 req/s (every 10 ms); request 0 stalls for 1 s, the rest take 1 ms.
        let s = Schedule::for_connection(100.0, 1, 0);
        let mut service = vec![ms(1); 200];
        service[0] = ms(1000);
        let t = simulate(&s, &service);
        assert_eq!(t[0].latency, ms(1000));
        // Request 1 was due at 10 ms, sent at 1000 ms, done at 1001 ms.
        assert_eq!(t[1].latency, ms(991));
        assert_eq!(t[1].service, ms(1));
        // Each later one catches up by the 9 ms of slack per interval.
        assert_eq!(t[2].latency, ms(982));
        // Uncorrected, only one request of 200 looks slow; corrected, about 110 do.
        let slow_service = t.iter().filter(|t| t.service > ms(5)).count();
        let slow_latency = t.iter().filter(|t| t.latency > ms(5)).count();
        assert_eq!(slow_service, 1);
        assert!((105..=115).contains(&slow_latency), "{slow_latency}");
        // Back on schedule at the end.
        assert_eq!(t[199].latency, ms(1));
    }

    #[test]
    fn timing_never_goes_negative() {
        let t = timing(ms(10), ms(5), ms(8), true);
        assert_eq!(t.latency, Duration::ZERO);
        assert_eq!(t.service, Duration::ZERO);
    }

    #[test]
    fn a_late_timer_is_not_charged_to_the_target() {
        // Slept until 10 ms, woke at 11 ms (timer tick), answered at 12 ms.
        let t = timing(ms(10), ms(11), ms(12), false);
        assert_eq!(t.latency, ms(1));
        // Behind schedule because the previous answer came at 11 ms: charged from 10.
        let t = timing(ms(10), ms(11), ms(12), true);
        assert_eq!(t.latency, ms(2));
        assert_eq!(t.service, ms(1));
    }
}
