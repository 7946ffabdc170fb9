//! The one gate every named call passes at the callee: an MCP `tools/call` and a typed RPC
//! method alike. Default deny by name (globs), a token's narrowing on top, quotas (calls per
//! minute, calls in flight), and the names that wait for a human. Sans-IO: the caller passes
//! the time and the number of its calls in flight.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::pattern::{PatternKind, any_matches};

/// What one caller may call on one service, from the policy file (or a token's issuer's
/// rules narrowed by the token).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallGrant {
    /// The policy entry that matched (alias, NodeId, or "token from ..."): named in
    /// denials and the audit log.
    pub rule: String,
    /// Names (exact or `*` globs) this caller may call.
    pub names: Vec<String>,
    /// A capability token's list: when set, a name must match it too (tokens only narrow).
    pub narrowed: Option<Vec<String>>,
    /// Names whose calls wait for a human's approval.
    pub approve: Vec<String>,
    /// Calls per minute (none: unlimited).
    pub calls_per_minute: Option<u32>,
    /// Calls in flight at once (none: unlimited).
    pub max_concurrent: Option<u32>,
}

impl CallGrant {
    /// Whether the grant allows calling `name` at all.
    pub fn allows(&self, name: &str) -> bool {
        any_matches(PatternKind::Glob, &self.names, name)
            && self
                .narrowed
                .as_ref()
                .is_none_or(|list| any_matches(PatternKind::Glob, list, name))
    }

    /// Whether calls of `name` wait for a human.
    pub fn needs_approval(&self, name: &str) -> bool {
        any_matches(PatternKind::Glob, &self.approve, name)
    }
}

/// Why the gate refused a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallRefused {
    /// No rule allows this name.
    #[error("{kind} {name:?} is not allowed")]
    NotAllowed {
        /// "tool", "method".
        kind: &'static str,
        /// The name called.
        name: String,
    },
    /// The per-minute quota is used up.
    #[error("quota: {0} calls per minute")]
    PerMinute(u32),
    /// Too many calls in flight.
    #[error("quota: {0} concurrent calls")]
    Concurrent(u32),
}

impl CallRefused {
    /// Whether this is a quota (the caller may retry later), not a denial.
    pub fn is_quota(&self) -> bool {
        !matches!(self, CallRefused::NotAllowed { .. })
    }
}

/// What the gate decided for an allowed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    /// Run it.
    Run,
    /// Run it once a human approved it.
    Approve,
}

/// A grant and the quota state of one caller's session.
#[derive(Debug, Clone)]
pub struct CallGate {
    grant: CallGrant,
    recent: VecDeque<Instant>,
}

impl CallGate {
    /// A gate applying `grant`.
    pub fn new(grant: CallGrant) -> Self {
        Self {
            grant,
            recent: VecDeque::new(),
        }
    }

    /// The grant applied.
    pub fn grant(&self) -> &CallGrant {
        &self.grant
    }

    /// Applies a new grant (the policy changed); the quota state carries over.
    pub fn set_grant(&mut self, grant: CallGrant) {
        self.grant = grant;
    }

    /// Counts one call against the quotas, or refuses it (`in_flight`: this session's calls
    /// already running). Only a call that passes is counted.
    pub fn take_quota(&mut self, in_flight: usize, now: Instant) -> Result<(), CallRefused> {
        if let Some(limit) = self.grant.calls_per_minute {
            while self
                .recent
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) >= Duration::from_secs(60))
            {
                self.recent.pop_front();
            }
            if self.recent.len() >= limit as usize {
                return Err(CallRefused::PerMinute(limit));
            }
        }
        if let Some(limit) = self.grant.max_concurrent
            && in_flight >= limit as usize
        {
            return Err(CallRefused::Concurrent(limit));
        }
        if self.grant.calls_per_minute.is_some() {
            self.recent.push_back(now);
        }
        Ok(())
    }

    /// The whole decision for a call of `name` (a `kind`: "tool", "method"): allowed by
    /// name, within quota (then counted), and whether it needs approval.
    pub fn admit(
        &mut self,
        kind: &'static str,
        name: &str,
        in_flight: usize,
        now: Instant,
    ) -> Result<Admitted, CallRefused> {
        if !self.grant.allows(name) {
            return Err(CallRefused::NotAllowed {
                kind,
                name: name.to_owned(),
            });
        }
        self.take_quota(in_flight, now)?;
        Ok(if self.grant.needs_approval(name) {
            Admitted::Approve
        } else {
            Admitted::Run
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> CallGrant {
        CallGrant {
            rule: "planner".into(),
            names: vec!["work.*".into(), "status".into()],
            narrowed: None,
            approve: vec!["work.delete".into()],
            calls_per_minute: Some(3),
            max_concurrent: Some(2),
        }
    }

    #[test]
    fn names_globs_and_approval() {
        let mut gate = CallGate::new(grant());
        let now = Instant::now();
        assert_eq!(gate.admit("method", "work.run", 0, now), Ok(Admitted::Run));
        assert_eq!(
            gate.admit("method", "work.delete", 0, now),
            Ok(Admitted::Approve)
        );
        assert_eq!(
            gate.admit("method", "admin", 0, now),
            Err(CallRefused::NotAllowed {
                kind: "method",
                name: "admin".into()
            })
        );
        // A refused name does not use quota: the third allowed call still passes.
        assert_eq!(gate.admit("method", "status", 0, now), Ok(Admitted::Run));
        assert_eq!(
            gate.admit("method", "status", 0, now),
            Err(CallRefused::PerMinute(3))
        );
        // A minute later the window has moved on.
        let later = now + Duration::from_secs(60);
        assert_eq!(gate.admit("method", "status", 0, later), Ok(Admitted::Run));
    }

    #[test]
    fn concurrency_is_the_callers_count() {
        let mut gate = CallGate::new(CallGrant {
            calls_per_minute: None,
            ..grant()
        });
        let now = Instant::now();
        assert_eq!(gate.admit("method", "status", 1, now), Ok(Admitted::Run));
        assert_eq!(
            gate.admit("method", "status", 2, now),
            Err(CallRefused::Concurrent(2))
        );
        assert!(CallRefused::Concurrent(2).is_quota());
    }

    #[test]
    fn a_tokens_list_only_narrows() {
        let g = CallGrant {
            narrowed: Some(vec!["work.run".into(), "admin".into()]),
            ..grant()
        };
        assert!(g.allows("work.run"));
        assert!(!g.allows("work.list"), "not in the token's list");
        assert!(
            !g.allows("admin"),
            "in the token's list, not the issuer's rules"
        );
        let none = CallGrant {
            narrowed: Some(vec![]),
            ..grant()
        };
        assert!(!none.allows("work.run"));
    }
}
