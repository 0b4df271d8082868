//! A rule's `rate_limit` and `max_concurrent`.

use super::{Compiler, Parsed};
use crate::policy::document::RuleDoc;
use crate::policy::RateLimit;

impl Compiler {
    /// The rule's limits; each bad value is reported and left out.
    pub(super) fn limits(
        &mut self,
        at: &Parsed<'_>,
        path: &str,
        doc: &RuleDoc,
    ) -> (Option<RateLimit>, Option<u32>) {
        let count = |value: i64| u32::try_from(value).ok().filter(|v| *v > 0);
        let rate_limit = doc.rate_limit.as_ref().and_then(|limit| {
            let Some(per_second) = count(limit.requests_per_second) else {
                let message = format!(
                    "{} is not a rate (1 or more requests a second)",
                    limit.requests_per_second
                );
                self.error(
                    at,
                    format!("{path}.rate_limit.requests_per_second"),
                    message,
                );
                return None;
            };
            let burst = match limit.burst {
                None => per_second,
                Some(value) => match count(value) {
                    Some(burst) => burst,
                    None => {
                        let message = format!("{value} is not a burst (1 or more requests)");
                        self.error(at, format!("{path}.rate_limit.burst"), message);
                        return None;
                    }
                },
            };
            Some(RateLimit {
                per_second,
                burst,
                per: limit.per.unwrap_or_default(),
            })
        });
        let max_concurrent = doc.max_concurrent.and_then(|value| {
            let limit = count(value);
            if limit.is_none() {
                let message = format!("{value} is not a limit (1 or more at once)");
                self.error(at, format!("{path}.max_concurrent"), message);
            }
            limit
        });
        (rate_limit, max_concurrent)
    }
}
