//! The limits a rule sets on what it lets out: `rate_limit` (a token bucket for the
//! rule, or one per client address) and `max_concurrent` (requests and tunnels in
//! flight). Their state outlives policy reloads, keyed by rule name and settings, so
//! that reloading an unrelated file neither refills a bucket nor forgets what is in
//! flight.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::policy::{RateLimit, RatePer, Route};
use crate::rate::RateLimiter;

/// Every limited rule's state.
#[derive(Debug, Default)]
pub struct RuleLimits {
    rules: Mutex<HashMap<Arc<str>, Arc<State>>>,
}

#[derive(Debug)]
struct State {
    settings: (Option<RateLimit>, Option<u32>),
    /// Keyed by client address, or by `None` for one bucket for the rule.
    rate: Option<RateLimiter<Option<IpAddr>>>,
    in_flight: AtomicU32,
}

/// Let in by a rule's limits; dropping it lets the next request in.
#[derive(Debug)]
#[must_use = "the request counts as in flight while this lives"]
pub struct Admitted(Option<Arc<State>>);

/// Why a rule's limits refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// The bucket is empty; a token comes after this long.
    Rate(Duration),
    /// This many are in flight already.
    Concurrency(u32),
}

impl Admitted {
    /// Nothing to count: traffic under no limit.
    pub fn none() -> Self {
        Admitted(None)
    }
}

impl RuleLimits {
    /// Lets one request or tunnel of `rule` from `source` in, or says which limit
    /// refuses it. A route without limits costs no lock.
    ///
    /// Fails when the bucket is empty or `max_concurrent` are in flight.
    pub fn admit(
        &self,
        rule: &Arc<str>,
        route: &Route,
        source: IpAddr,
    ) -> Result<Admitted, Limited> {
        if route.rate_limit.is_none() && route.max_concurrent.is_none() {
            return Ok(Admitted(None));
        }
        let state = self.state(rule, route);
        if let (Some(limiter), Some(limit)) = (&state.rate, route.rate_limit) {
            let key = match limit.per {
                RatePer::Rule => None,
                RatePer::Source => Some(source.to_canonical()),
            };
            limiter.take(key).map_err(Limited::Rate)?;
        }
        if let Some(max) = route.max_concurrent {
            let admitted = state
                .in_flight
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < max).then_some(n + 1)
                });
            if admitted.is_err() {
                return Err(Limited::Concurrency(max));
            }
        }
        Ok(Admitted(Some(state)))
    }

    fn state(&self, rule: &Arc<str>, route: &Route) -> Arc<State> {
        let settings = (route.rate_limit, route.max_concurrent);
        let mut rules = self.rules.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(state) = rules.get(rule).filter(|s| s.settings == settings) {
            return Arc::clone(state);
        }
        let state = Arc::new(State {
            settings,
            rate: route
                .rate_limit
                .map(|limit| RateLimiter::new(limit.per_second, limit.burst)),
            in_flight: AtomicU32::new(0),
        });
        rules.insert(Arc::clone(rule), Arc::clone(&state));
        state
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(state) = &self.0 {
            if state.settings.1.is_some() {
                state.in_flight.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;

    fn route(rate: Option<(u32, u32, RatePer)>, max: Option<u32>) -> Route {
        let mut route = Policy::empty().default_route();
        route.rate_limit = rate.map(|(per_second, burst, per)| RateLimit {
            per_second,
            burst,
            per,
        });
        route.max_concurrent = max;
        route
    }

    #[test]
    fn max_concurrent_counts_what_is_in_flight() {
        let limits = RuleLimits::default();
        let rule: Arc<str> = "db".into();
        let r = route(None, Some(2));
        let ip: IpAddr = [10, 0, 0, 1].into();
        let one = limits.admit(&rule, &r, ip).unwrap();
        let _two = limits.admit(&rule, &r, ip).unwrap();
        assert_eq!(
            limits.admit(&rule, &r, ip).unwrap_err(),
            Limited::Concurrency(2)
        );
        drop(one);
        assert!(limits.admit(&rule, &r, ip).is_ok());
    }

    #[test]
    fn a_bucket_per_source_leaves_other_sources_alone() {
        let limits = RuleLimits::default();
        let rule: Arc<str> = "api".into();
        let r = route(Some((1, 2, RatePer::Source)), None);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        assert!(limits.admit(&rule, &r, a).is_ok());
        assert!(limits.admit(&rule, &r, a).is_ok());
        assert!(matches!(limits.admit(&rule, &r, a), Err(Limited::Rate(_))));
        assert!(limits.admit(&rule, &r, b).is_ok());
        // One bucket for the rule: b shares a's.
        let shared = route(Some((1, 1, RatePer::Rule)), None);
        let other: Arc<str> = "other".into();
        assert!(limits.admit(&other, &shared, a).is_ok());
        assert!(matches!(
            limits.admit(&other, &shared, b),
            Err(Limited::Rate(_))
        ));
    }
}
