//! Deciding a name alone, for DNS questions: no port or listener is known yet, so a
//! name is allowed when some allow rule lists it (for any port, on any listener) for
//! this source, and refused when a rule denying it on every port matches first.

use std::sync::Arc;

use super::{Action, Mode, Policy, Rule, Verdict};
use crate::source::Source;
use crate::wire::host::Host;

/// The outcome of [`Policy::decide_name`].
#[derive(Debug, Clone)]
pub struct NameDecision {
    /// Allowed, denied, or audit mode's would-deny.
    pub verdict: Verdict,
    /// The rule that decided; `None` when the mode did.
    pub rule: Option<Arc<Rule>>,
    /// Whether the rule names this host (exactly or by `*.suffix`) rather than
    /// matching any name with a lone `*`.
    pub specific: bool,
}

impl Policy {
    /// Decides whether `host` may be resolved by `source`.
    ///
    /// The most specific group of host patterns with a rule for this source decides, as
    /// for [`Policy::decide`]: a deny rule without `ports` wins, else the first allow
    /// rule. A deny rule limited to some ports does not refuse the name: another port
    /// may be allowed, and the connection is decided again when it comes.
    pub fn decide_name(&self, host: &Host, source: &Source) -> NameDecision {
        let any_name = self.hosts.any_name();
        for group in self.hosts.lookup(host) {
            let specific = !std::ptr::eq(group, any_name);
            let mut allowing = None;
            for &index in group {
                let Some(rule) = self.rules.get(index as usize) else {
                    continue;
                };
                if !(rule.sources.is_empty() || rule.sources.iter().any(|s| s.matches(source))) {
                    continue;
                }
                match rule.action {
                    Action::Deny if rule.ports.is_none() => {
                        return NameDecision {
                            verdict: self.refused(),
                            rule: Some(Arc::clone(rule)),
                            specific,
                        }
                    }
                    Action::Deny => {}
                    Action::Allow => {
                        allowing.get_or_insert(rule);
                    }
                }
            }
            if let Some(rule) = allowing {
                return NameDecision {
                    verdict: Verdict::Allow,
                    rule: Some(Arc::clone(rule)),
                    specific,
                };
            }
        }
        NameDecision {
            verdict: match self.defaults.mode {
                Mode::Allow => Verdict::Allow,
                Mode::Deny | Mode::Audit => self.refused(),
            },
            rule: None,
            specific: false,
        }
    }

    fn refused(&self) -> Verdict {
        match self.defaults.mode {
            Mode::Audit => Verdict::WouldDeny,
            Mode::Deny | Mode::Allow => Verdict::Deny,
        }
    }

    /// The addresses `auto_allocate` gave to TCP services.
    pub fn allocations(&self) -> &super::allocate::Allocations {
        &self.allocations
    }
}
