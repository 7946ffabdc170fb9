//! Human approval of sensitive MCP tool calls. A call waits here until a person answers (the
//! CLI, the console) or the timeout passes, which denies (fail closed). An approval is bound
//! to the exact request: caller, service, tool and the digest of its arguments, and the person
//! sees those arguments rendered ([`render`]). An answer may reach further than one call: a
//! standing [`Grant`] for the rest of the session, for N minutes, or for calls whose argument
//! matches a pattern ([`grants`]). Every outcome (approved, denied, timed out, granted) is
//! audited with who decided and why, and announced to watchers ([`ApprovalEvent`]: `approvals
//! --watch`, the console, webhooks).

pub mod grants;
pub mod render;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nullport_audit::Event;
use nullport_protocol::NodeId;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{broadcast, oneshot};

use crate::audit::Audit;
pub use grants::{Grant, GrantScope};

/// A call waiting for a human.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PendingApproval {
    /// Short id to answer with.
    pub id: String,
    /// Caller NodeId.
    pub caller: String,
    /// The caller's alias here, if any.
    #[serde(default)]
    pub caller_alias: Option<String>,
    /// MCP service.
    pub service: String,
    /// Tool.
    pub tool: String,
    /// The arguments, rendered for a person (bounded; long values folded).
    #[serde(default)]
    pub args: String,
    /// Whether `args` shows the arguments completely (nothing folded, hidden or cut);
    /// otherwise `args_full` has all of them.
    #[serde(default)]
    pub shown_in_full: bool,
    /// The whole of the arguments (pretty JSON, invisible characters escaped; at most
    /// 256 KiB).
    #[serde(default)]
    pub args_full: String,
    /// SHA-256 (hex) of the tool arguments: what an approval is bound to.
    pub args_digest: String,
    /// Seconds it has been waiting.
    pub waiting_secs: u64,
    /// Seconds until it is denied for want of an answer.
    #[serde(default)]
    pub expires_in_secs: u64,
}

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decider {
    /// `nullport approve` / `nullport deny`.
    Cli,
    /// The local console.
    Console,
}

impl Decider {
    /// As recorded in the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Decider::Cli => "cli",
            Decider::Console => "console",
        }
    }
}

/// A person's answer to a pending call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// Approve (or deny).
    pub approve: bool,
    /// Who answered.
    pub by: Decider,
    /// Why, if they said.
    #[serde(default)]
    pub reason: Option<String>,
    /// With an approval: how far beyond this call it reaches.
    #[serde(default)]
    pub grant: Option<GrantScope>,
}

/// What became of a call that needed approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    /// "approved", "denied", "timed out", "granted", "abandoned".
    pub outcome: String,
    /// `cli`, `console`, `timeout`, or `grant ID`.
    pub by: String,
    /// The reason given, if any.
    pub reason: Option<String>,
}

impl Resolution {
    /// Whether the call goes ahead.
    pub fn approved(&self) -> bool {
        matches!(self.outcome.as_str(), "approved" | "granted")
    }
}

/// Something that happened to approvals, for watchers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ApprovalEvent {
    /// A call waits.
    Pending {
        /// The call.
        approval: PendingApproval,
    },
    /// A call was decided.
    Decided {
        /// Its id.
        id: String,
        /// The caller.
        caller: String,
        /// The service.
        service: String,
        /// The tool.
        tool: String,
        /// The digest it was bound to.
        args_digest: String,
        /// What became of it.
        resolution: Resolution,
    },
    /// A standing grant was made.
    GrantMade {
        /// The grant.
        grant: Grant,
    },
    /// A standing grant ended ("revoked" or "expired").
    GrantEnded {
        /// The grant.
        grant: Grant,
        /// How.
        how: String,
    },
}

/// One call to decide.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The caller, proven by the handshake.
    pub caller: NodeId,
    /// Its alias here.
    pub caller_alias: Option<&'a str>,
    /// The MCP service.
    pub service: &'a str,
    /// The tool.
    pub tool: &'a str,
    /// The arguments.
    pub args: &'a Value,
    /// Their digest (hex).
    pub args_digest: &'a str,
    /// The MCP session's handshake hash (what a session grant is bound to).
    pub session: &'a [u8; 32],
}

struct Entry {
    info: PendingApproval,
    since: Instant,
    answer: oneshot::Sender<Answer>,
}

/// Removes a waiting call's entry if its wait is dropped (the caller went away), and audits it.
struct Abandoned<'a, 'r> {
    approvals: &'a Approvals,
    id: &'a str,
    request: Option<Request<'r>>,
}

impl Drop for Abandoned<'_, '_> {
    fn drop(&mut self) {
        let Some(request) = self.request.take() else {
            return;
        };
        if let Ok(mut p) = self.approvals.pending.lock() {
            p.remove(self.id);
        }
        let resolution = Resolution {
            outcome: "abandoned".into(),
            by: "caller gone".into(),
            reason: Some("the caller's session ended while the call waited".into()),
        };
        self.approvals.audit.record(Event::Approval {
            caller: request.caller,
            service: request.service.to_owned(),
            tool: request.tool.to_owned(),
            args_sha256: request.args_digest.to_owned(),
            outcome: resolution.outcome.clone(),
            by: resolution.by.clone(),
            reason: resolution.reason.clone(),
        });
        let _ = self.approvals.events.send(ApprovalEvent::Decided {
            id: self.id.to_owned(),
            caller: request.caller.to_string(),
            service: request.service.to_owned(),
            tool: request.tool.to_owned(),
            args_digest: request.args_digest.to_owned(),
            resolution,
        });
    }
}

/// Why an answer was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no pending approval with id {0:?} (it may have been answered or timed out)")]
pub struct UnknownApproval(pub String);

/// Why a grant could not be revoked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no standing grant with id {0:?} (it may have expired)")]
pub struct UnknownGrant(pub String);

/// The pending approvals and standing grants of one daemon.
pub struct Approvals {
    timeout: Duration,
    pending: Mutex<HashMap<String, Entry>>,
    grants: Mutex<Vec<Grant>>,
    events: broadcast::Sender<ApprovalEvent>,
    audit: Audit,
}

impl std::fmt::Debug for Approvals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Approvals")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn short_id() -> String {
    let mut raw = [0u8; 4];
    let _ = getrandom::getrandom(&mut raw);
    nullport_protocol::hex::encode(&raw)
}

impl Approvals {
    /// Calls not answered within `timeout` are denied; outcomes are recorded in `audit`.
    pub fn new(timeout: Duration, audit: Audit) -> Self {
        Self {
            timeout,
            pending: Mutex::new(HashMap::new()),
            grants: Mutex::new(Vec::new()),
            events: broadcast::channel(256).0,
            audit,
        }
    }

    /// The timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Every approval event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ApprovalEvent> {
        self.events.subscribe()
    }

    /// Decides a call: a standing grant that covers it approves it at once; otherwise it
    /// waits for a person's answer or the timeout (denied).
    pub async fn ask(&self, request: Request<'_>) -> Resolution {
        let now = unix_now();
        let covering = self.live_grants(now).into_iter().find(|g| {
            g.covers(
                &request.caller,
                request.service,
                request.tool,
                request.session,
                request.args,
                now,
            )
        });
        let id = short_id();
        let resolution = match covering {
            Some(grant) => Resolution {
                outcome: "granted".into(),
                by: format!("grant {}", grant.id),
                reason: grant.reason.clone(),
            },
            None => self.wait(&id, request).await,
        };
        self.audit.record(Event::Approval {
            caller: request.caller,
            service: request.service.to_owned(),
            tool: request.tool.to_owned(),
            args_sha256: request.args_digest.to_owned(),
            outcome: resolution.outcome.clone(),
            by: resolution.by.clone(),
            reason: resolution.reason.clone(),
        });
        let _ = self.events.send(ApprovalEvent::Decided {
            id,
            caller: request.caller.to_string(),
            service: request.service.to_owned(),
            tool: request.tool.to_owned(),
            args_digest: request.args_digest.to_owned(),
            resolution: resolution.clone(),
        });
        resolution
    }

    async fn wait(&self, id: &str, request: Request<'_>) -> Resolution {
        let (tx, rx) = oneshot::channel();
        let info = PendingApproval {
            id: id.to_owned(),
            caller: request.caller.to_string(),
            caller_alias: request.caller_alias.map(str::to_owned),
            service: request.service.to_owned(),
            tool: request.tool.to_owned(),
            args: render::render_args(request.args),
            shown_in_full: render::shown_in_full(request.args),
            args_full: render::render_full(request.args).0,
            args_digest: request.args_digest.to_owned(),
            waiting_secs: 0,
            expires_in_secs: self.timeout.as_secs(),
        };
        tracing::warn!(%id, peer = %request.caller, service = request.service, tool = request.tool, "tool call waits for approval: nullport approvals, or the console");
        if let Ok(mut p) = self.pending.lock() {
            p.insert(
                id.to_owned(),
                Entry {
                    info: info.clone(),
                    since: Instant::now(),
                    answer: tx,
                },
            );
        }
        let _ = self.events.send(ApprovalEvent::Pending { approval: info });
        // If the caller goes away while this waits (this future dropped), the entry goes
        // too, audited as abandoned: nothing is left to approve later.
        let mut abandoned = Abandoned {
            approvals: self,
            id,
            request: Some(request),
        };
        let answer = tokio::time::timeout(self.timeout, rx).await;
        abandoned.request = None;
        if let Ok(mut p) = self.pending.lock() {
            p.remove(id);
        }
        match answer {
            Ok(Ok(answer)) => {
                if let (true, Some(scope)) = (answer.approve, &answer.grant) {
                    self.make_grant(request, scope, &answer);
                }
                Resolution {
                    outcome: if answer.approve { "approved" } else { "denied" }.into(),
                    by: answer.by.as_str().into(),
                    reason: answer.reason,
                }
            }
            _ => Resolution {
                outcome: "timed out".into(),
                by: "timeout".into(),
                reason: Some(format!("no answer within {} s", self.timeout.as_secs())),
            },
        }
    }

    fn make_grant(&self, request: Request<'_>, scope: &GrantScope, answer: &Answer) {
        let grant = Grant::new(
            short_id(),
            request.caller,
            request.service,
            request.tool,
            request.session,
            scope,
            unix_now(),
            answer.by.as_str(),
            answer.reason.clone(),
        );
        self.record_grant(&grant, "made", answer.by.as_str());
        if let Ok(mut g) = self.grants.lock() {
            g.push(grant.clone());
        }
        let _ = self.events.send(ApprovalEvent::GrantMade { grant });
    }

    fn record_grant(&self, grant: &Grant, action: &str, by: &str) {
        self.audit.record(Event::Grant {
            id: grant.id.clone(),
            action: action.into(),
            caller: grant.caller,
            service: grant.service.clone(),
            tool: grant.tool.clone(),
            scope: grant.describe(),
            by: by.into(),
        });
    }

    /// The grants in force at `now`; those that ended are dropped, audited as expired.
    fn live_grants(&self, now: u64) -> Vec<Grant> {
        let expired: Vec<Grant> = match self.grants.lock() {
            Ok(mut g) => {
                let (live, gone): (Vec<Grant>, Vec<Grant>) =
                    g.drain(..).partition(|grant| now < grant.until);
                *g = live;
                gone
            }
            Err(_) => Vec::new(),
        };
        for grant in expired {
            self.record_grant(&grant, "expired", "timer");
            let _ = self.events.send(ApprovalEvent::GrantEnded {
                grant,
                how: "expired".into(),
            });
        }
        self.grants.lock().map(|g| g.clone()).unwrap_or_default()
    }

    /// The standing grants in force.
    pub fn grants(&self) -> Vec<Grant> {
        self.live_grants(unix_now())
    }

    /// Ends the grants `keep` refuses (their caller lost access to the service), audited as
    /// revoked by policy.
    pub fn retain_grants(&self, keep: impl Fn(&Grant) -> bool) {
        let gone: Vec<Grant> = match self.grants.lock() {
            Ok(mut g) => {
                let (kept, gone): (Vec<Grant>, Vec<Grant>) = g.drain(..).partition(|x| keep(x));
                *g = kept;
                gone
            }
            Err(_) => Vec::new(),
        };
        for grant in gone {
            self.record_grant(&grant, "revoked", "policy");
            let _ = self.events.send(ApprovalEvent::GrantEnded {
                grant,
                how: "revoked".into(),
            });
        }
    }

    /// Ends a standing grant now.
    pub fn revoke_grant(&self, id: &str, by: Decider) -> Result<Grant, UnknownGrant> {
        let grant = self
            .grants
            .lock()
            .ok()
            .and_then(|mut g| {
                let at = g.iter().position(|grant| grant.id == id)?;
                Some(g.remove(at))
            })
            .ok_or_else(|| UnknownGrant(id.to_owned()))?;
        self.record_grant(&grant, "revoked", by.as_str());
        let _ = self.events.send(ApprovalEvent::GrantEnded {
            grant: grant.clone(),
            how: "revoked".into(),
        });
        Ok(grant)
    }

    /// Calls waiting now.
    pub fn list(&self) -> Vec<PendingApproval> {
        let Ok(p) = self.pending.lock() else {
            return Vec::new();
        };
        let mut v: Vec<_> = p
            .values()
            .map(|e| {
                let waited = e.since.elapsed();
                PendingApproval {
                    waiting_secs: waited.as_secs(),
                    expires_in_secs: self.timeout.saturating_sub(waited).as_secs(),
                    ..e.info.clone()
                }
            })
            .collect();
        v.sort_by(|a, b| b.waiting_secs.cmp(&a.waiting_secs).then(a.id.cmp(&b.id)));
        v
    }

    /// Answers a pending call.
    pub fn answer(&self, id: &str, answer: Answer) -> Result<PendingApproval, UnknownApproval> {
        let entry = self
            .pending
            .lock()
            .ok()
            .and_then(|mut p| p.remove(id))
            .ok_or_else(|| UnknownApproval(id.to_owned()))?;
        let _ = entry.answer.send(answer);
        Ok(entry.info)
    }
}

#[cfg(test)]
mod tests;
