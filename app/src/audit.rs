//! The node's audit log: one JSON object a line (stable field names, RFC 3339 UTC times),
//! hash-chained with signed checkpoints (`nullport_audit`). Every node, channel, dial and MCP
//! decision goes through [`Audit::record`] as a typed [`Event`].

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use nullport_audit::{AuditConfig, AuditWriter, ChannelOutcome, Checkpoint, Event, NodeEvent};
use nullport_protocol::{Identity, NodeId};

/// Appends audit events to the node's tamper-evident log (or nowhere, for embedding without
/// a home). Checkpoints are signed with the node's key; each new one is also handed to
/// `witness` (the daemon sends it to the relay to be countersigned).
#[derive(Clone, Default)]
pub struct Audit {
    writer: Option<Arc<Mutex<AuditWriter>>>,
    witness: Option<tokio::sync::mpsc::UnboundedSender<Checkpoint>>,
    metrics: Option<Arc<crate::metrics::NodeMetrics>>,
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
    nullport_audit::rfc3339(t)
}

impl Audit {
    /// Continues (or starts) the log at `path`, signing checkpoints with `identity`.
    pub fn open(
        path: &Path,
        identity: &Identity,
        config: AuditConfig,
    ) -> Result<Audit, nullport_audit::AuditError> {
        let signer = Identity::from_seed(*identity.seed());
        let writer = AuditWriter::open(path, signer, config, SystemTime::now())?;
        Ok(Audit {
            writer: Some(Arc::new(Mutex::new(writer))),
            witness: None,
            metrics: None,
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

    /// Counts every recorded event in `metrics` as well.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::NodeMetrics>) -> Audit {
        self.metrics = Some(metrics);
        self
    }

    /// Records one event (and hands a new checkpoint, if this made one, to the witness).
    pub fn record(&self, event: Event) {
        if let Some(m) = &self.metrics {
            m.observe(&event);
        }
        let Some(writer) = &self.writer else { return };
        let Ok(mut w) = writer.lock() else { return };
        let before = w.latest_checkpoint().map(|c| c.seq);
        if let Err(e) = w.append(SystemTime::now(), &event) {
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
        if let Err(e) = w.checkpoint(SystemTime::now()) {
            tracing::error!("audit checkpoint failed: {e}");
        }
        self.forward_checkpoint(&w, before);
    }

    /// A node event (start, stop, relay link up or down, rotations).
    pub fn node(&self, kind: NodeEvent, detail: impl Into<String>) {
        self.record(Event::Node {
            kind,
            detail: detail.into(),
        });
    }

    /// A channel decided or ended at the callee.
    pub fn channel(&self, caller: &NodeId, service: &str, outcome: ChannelOutcome, rule: &str) {
        self.record(Event::Channel {
            caller: *caller,
            service: service.to_owned(),
            outcome,
            rule: rule.to_owned(),
        });
    }

    /// A capability token presented to this node (accepted or refused, and why).
    pub fn token(
        &self,
        caller: &NodeId,
        service: &str,
        ids: &[String],
        accepted: bool,
        reason: &str,
    ) {
        self.record(Event::Token {
            caller: *caller,
            service: service.to_owned(),
            token_ids: ids.to_vec(),
            accepted,
            reason: reason.to_owned(),
        });
    }

    /// A revocation list applied, and what it applies to here.
    pub fn revocation(&self, list: &nullport_keyring::revocation::RevocationList, applies: &str) {
        self.record(Event::Revocation {
            signer: list.signer,
            version: list.version,
            keys: list.keys.clone(),
            tokens: list.tokens.clone(),
            applies: applies.to_owned(),
        });
    }

    /// A dial out (caller side).
    pub fn dial(&self, peer: &NodeId, service: &str, opened: bool) {
        self.record(Event::Dial {
            peer: *peer,
            service: service.to_owned(),
            opened,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::{Duration, UNIX_EPOCH};

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
