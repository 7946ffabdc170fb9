//! Human approval of sensitive MCP tool calls: a call waits here until the operator answers
//! (`nullport approve <id>` / `nullport deny <id>`) or the timeout passes, which denies
//! (fail closed). An approval is bound to the exact request: caller, service, tool and the
//! digest of its arguments.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nullport_protocol::NodeId;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

/// A call waiting for a human.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PendingApproval {
    /// Short id to answer with.
    pub id: String,
    /// Caller NodeId.
    pub caller: String,
    /// MCP service.
    pub service: String,
    /// Tool.
    pub tool: String,
    /// SHA-256 (hex) of the tool arguments.
    pub args_digest: String,
    /// Seconds it has been waiting.
    pub waiting_secs: u64,
}

struct Entry {
    info: PendingApproval,
    since: Instant,
    answer: oneshot::Sender<bool>,
}

/// Why an answer was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no pending approval with id {0:?} (it may have timed out)")]
pub struct UnknownApproval(pub String);

/// The pending approvals of one daemon.
pub struct Approvals {
    timeout: Duration,
    pending: Mutex<HashMap<String, Entry>>,
}

impl std::fmt::Debug for Approvals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Approvals")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Approvals {
    /// Calls not answered within `timeout` are denied.
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// Waits for a human's answer: true only if approved in time.
    pub async fn ask(&self, caller: NodeId, service: &str, tool: &str, args_digest: &str) -> bool {
        let (tx, rx) = oneshot::channel();
        let mut raw = [0u8; 4];
        let _ = getrandom::getrandom(&mut raw);
        let id: String = nullport_protocol::hex::encode(&raw);
        let info = PendingApproval {
            id: id.clone(),
            caller: caller.to_string(),
            service: service.to_owned(),
            tool: tool.to_owned(),
            args_digest: args_digest.to_owned(),
            waiting_secs: 0,
        };
        tracing::warn!(%id, peer = %caller.fmt_short(), service, tool, "tool call waits for approval: nullport approve {id} / nullport deny {id}");
        if let Ok(mut p) = self.pending.lock() {
            p.insert(
                id.clone(),
                Entry {
                    info,
                    since: Instant::now(),
                    answer: tx,
                },
            );
        }
        let answer = tokio::time::timeout(self.timeout, rx).await;
        if let Ok(mut p) = self.pending.lock() {
            p.remove(&id);
        }
        matches!(answer, Ok(Ok(true)))
    }

    /// Calls waiting now.
    pub fn list(&self) -> Vec<PendingApproval> {
        let Ok(p) = self.pending.lock() else {
            return Vec::new();
        };
        let mut v: Vec<_> = p
            .values()
            .map(|e| PendingApproval {
                waiting_secs: e.since.elapsed().as_secs(),
                ..e.info.clone()
            })
            .collect();
        v.sort_by(|a, b| b.waiting_secs.cmp(&a.waiting_secs).then(a.id.cmp(&b.id)));
        v
    }

    /// Answers a pending call.
    pub fn answer(&self, id: &str, approve: bool) -> Result<PendingApproval, UnknownApproval> {
        let entry = self
            .pending
            .lock()
            .ok()
            .and_then(|mut p| p.remove(id))
            .ok_or_else(|| UnknownApproval(id.to_owned()))?;
        let _ = entry.answer.send(approve);
        Ok(entry.info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nullport_protocol::Identity;
    use std::sync::Arc;

    #[tokio::test]
    async fn approve_deny_and_timeout() {
        let approvals = Arc::new(Approvals::new(Duration::from_millis(300)));
        let caller = Identity::from_seed([1; 32]).node_id();
        for (answer, expected) in [(Some(true), true), (Some(false), false), (None, false)] {
            let a = approvals.clone();
            let waiting =
                tokio::spawn(async move { a.ask(caller, "files", "write_file", "ab").await });
            tokio::time::sleep(Duration::from_millis(50)).await;
            let pending = approvals.list();
            assert_eq!(pending.len(), 1);
            assert_eq!(pending[0].tool, "write_file");
            if let Some(approve) = answer {
                assert!(approvals.answer(&pending[0].id, approve).is_ok());
            }
            assert_eq!(waiting.await.ok(), Some(expected));
            assert!(approvals.list().is_empty());
            assert!(approvals.answer(&pending[0].id, true).is_err());
        }
    }
}
