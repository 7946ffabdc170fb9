//! The node's audit log: one JSON object a line (stable field names, RFC 3339 UTC times),
//! hash-chained with signed checkpoints (`nullport_keyring::audit`). Every node, channel, dial
//! and MCP decision goes through [`Audit`].

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use nullport_keyring::audit::{AuditConfig, AuditWriter, Checkpoint};
use nullport_protocol::{Identity, NodeId};
use serde_json::{Value, json};

use crate::mcp::Session;
use crate::mcp::firewall::Decision;

/// Appends audit events to the node's tamper-evident log (or nowhere, for embedding without
/// a home). Checkpoints are signed with the node's key; each new one is also handed to
/// `witness` (the daemon sends it to the relay to be countersigned).
#[derive(Clone, Default)]
pub struct Audit {
    writer: Option<Arc<Mutex<AuditWriter>>>,
    witness: Option<tokio::sync::mpsc::UnboundedSender<Checkpoint>>,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("enabled", &self.writer.is_some())
            .finish()
    }
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` for a time since the Unix epoch.
pub fn rfc3339(t: SystemTime) -> String {
    nullport_keyring::audit::rfc3339(t)
}

impl Audit {
    /// Continues (or starts) the log at `path`, signing checkpoints with `identity`.
    pub fn open(
        path: &Path,
        identity: &Identity,
        config: AuditConfig,
    ) -> Result<Audit, nullport_keyring::audit::AuditError> {
        let signer = Identity::from_seed(*identity.seed());
        let writer = AuditWriter::open(path, signer, config)?;
        Ok(Audit {
            writer: Some(Arc::new(Mutex::new(writer))),
            witness: None,
        })
    }

    /// An audit sink that drops everything.
    pub fn disabled() -> Audit {
        Audit::default()
    }

    /// Hands every new checkpoint to `tx` as well.
    pub fn with_witness(mut self, tx: tokio::sync::mpsc::UnboundedSender<Checkpoint>) -> Audit {
        self.witness = Some(tx);
        self
    }

    fn write(&self, event: &str, fields: Value) {
        let Some(writer) = &self.writer else { return };
        let Value::Object(fields) = fields else {
            return;
        };
        let Ok(mut w) = writer.lock() else { return };
        let before = w.latest_checkpoint().map(|c| c.seq);
        if let Err(e) = w.append(event, fields) {
            tracing::error!("audit log write failed: {e}");
            return;
        }
        self.forward_checkpoint(&w, before);
    }

    fn forward_checkpoint(&self, w: &AuditWriter, before: Option<u64>) {
        if let (Some(tx), Some(cp)) = (&self.witness, w.latest_checkpoint())
            && Some(cp.seq) != before
        {
            let _ = tx.send(cp.clone());
        }
    }

    /// Writes a signed checkpoint now (at shutdown).
    pub fn checkpoint(&self) {
        let Some(writer) = &self.writer else { return };
        let Ok(mut w) = writer.lock() else { return };
        let before = w.latest_checkpoint().map(|c| c.seq);
        if let Err(e) = w.checkpoint() {
            tracing::error!("audit checkpoint failed: {e}");
        }
        self.forward_checkpoint(&w, before);
    }

    /// A node event (start, stop, relay link up or down).
    pub fn node(&self, event: &str, detail: &str) {
        self.write(event, json!({ "detail": detail }));
    }

    /// A channel decision (accept or deny) at the callee.
    pub fn channel(&self, peer: &NodeId, service: &str, outcome: &str, rule: &str) {
        self.write("channel", json!({ "caller": peer.to_string(), "service": service, "outcome": outcome, "rule": rule }));
    }

    /// A capability token presented to this node (accepted or denied, and why).
    pub fn token(&self, peer: &NodeId, service: &str, ids: &[String], outcome: &str, reason: &str) {
        self.write("token", json!({ "caller": peer.to_string(), "service": service, "token_ids": ids, "outcome": outcome, "reason": reason }));
    }

    /// A revocation list applied.
    pub fn revocation(&self, list: &nullport_keyring::revocation::RevocationList, applies: &str) {
        let tokens: Vec<String> = list
            .tokens
            .iter()
            .map(|t| nullport_protocol::hex::encode(t.as_slice()))
            .collect();
        let keys: Vec<String> = list.keys.iter().map(|k| k.to_string()).collect();
        self.write("revocation", json!({ "signer": list.signer.to_string(), "version": list.version, "keys": keys, "tokens": tokens, "applies": applies }));
    }

    /// A dial out (caller side).
    pub fn dial(&self, peer: &NodeId, service: &str, outcome: &str) {
        self.write(
            "dial",
            json!({ "peer": peer.to_string(), "service": service, "outcome": outcome }),
        );
    }

    /// A receipt this node issued (callee) or received and checked (caller).
    pub fn receipt(&self, r: &crate::mcp::receipt::Receipt, role: &str, valid: bool) {
        self.write(
            "receipt",
            json!({
                "role": role,
                "valid": valid,
                "caller": r.caller,
                "callee": r.callee,
                "handshake": r.handshake,
                "id": r.id,
                "request_sha256": r.request_sha256,
                "decision": r.decision,
                "result_sha256": r.result_sha256,
                "sig": r.sig,
            }),
        );
    }

    /// A caller's signature over a request digest: made here (caller) or checked (callee).
    pub fn request_signature(
        &self,
        session: &Session,
        s: Option<&crate::mcp::receipt::RequestSignature>,
        valid: bool,
    ) {
        self.write(
            "request-signature",
            json!({
                "caller": session.caller.to_string(),
                "service": session.service,
                "request_sha256": s.map(|s| s.request_sha256.clone()),
                "sig": s.map(|s| s.sig.clone()),
                "valid": valid,
            }),
        );
    }

    /// An MCP decision.
    pub fn mcp(&self, session: &Session, d: &Decision, latency: Duration) {
        self.write(
            "mcp",
            json!({
                "caller": session.caller.to_string(),
                "service": session.service,
                "method": d.method,
                "target": d.target,
                "args_sha256": d.args_digest,
                "outcome": d.outcome,
                "reason": d.reason,
                "latency_us": latency.as_micros() as u64,
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::UNIX_EPOCH;

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000000Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::new(1_795_305_600, 5_000)),
            "2026-11-22T00:00:00.000005Z"
        );
    }
}
