//! A witnessed checkpoint, checked: the relay's countersignature over the node's checkpoint,
//! as a node keeps it (`audit.witness`) or fetches it from the relay.

use nullport_protocol::relay_link::WitnessedCheckpoint;
use nullport_protocol::{NodeId, domain};
use serde_json::Value;

use crate::chain::{Checkpoint, witness_body};

/// Why a witnessed checkpoint is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WitnessError {
    /// Not a witnessed checkpoint (missing or malformed fields).
    #[error("not a witnessed checkpoint (expected seq, head, node_sig, relay_sig)")]
    Malformed,
    /// The countersignature is not the relay's.
    #[error("the witnessed checkpoint is not signed by the relay {relay}")]
    NotTheRelays {
        /// The relay expected.
        relay: NodeId,
    },
}

/// Reads a witnessed checkpoint from its JSON form (`{seq, head, node_sig, relay_sig}`, hex).
pub fn from_json(value: &Value) -> Result<WitnessedCheckpoint, WitnessError> {
    serde_json::from_value(value.clone()).map_err(|_| WitnessError::Malformed)
}

/// The JSON form of a witnessed checkpoint (what `audit.witness` holds).
pub fn to_json(cp: &WitnessedCheckpoint) -> Value {
    serde_json::json!({
        "seq": cp.seq,
        "head": cp.head.to_hex(),
        "node_sig": cp.node_sig.to_hex(),
        "relay_sig": cp.relay_sig.map(|s| s.to_hex()),
    })
}

/// Checks that `relay` countersigned `node`'s checkpoint `cp`; returns the checkpoint to hold
/// the log against.
pub fn verify(
    cp: &WitnessedCheckpoint,
    node: &NodeId,
    relay: &NodeId,
) -> Result<Checkpoint, WitnessError> {
    let sig = cp
        .relay_sig
        .ok_or(WitnessError::NotTheRelays { relay: *relay })?;
    let head = cp.head.to_hex();
    nullport_protocol::identity::verify(
        relay,
        domain::AUDIT_WITNESS_V1,
        &witness_body(node, cp.seq, &head),
        &sig.0,
    )
    .map_err(|_| WitnessError::NotTheRelays { relay: *relay })?;
    Ok(Checkpoint {
        seq: cp.seq,
        head,
        sig: cp.node_sig.to_hex(),
    })
}
