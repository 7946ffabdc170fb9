//! What a relay pushes on a stream it opens (revocation lists, rotations, a newer relay map,
//! a planned stop), taken one message at a time: each is handed on as it arrives, so a relay
//! that streams without end costs the node one message of memory, not the whole stream. One
//! push stream per link at a time, and at most [`MAX_PUSH_BYTES`] of lists per stream.

use std::sync::Arc;
use std::time::Duration;

use nullport_protocol::relay_link::{MAX_CONTROL_MESSAGE, RelayToNode};
use tokio::time::timeout;

use super::Inner;
use super::slot::Slot;
use crate::link::read_message;

/// Bytes of lists and rotations one push stream may carry: the largest catch-up a relay can
/// hold (256 MiB of lists) with room to spare.
pub(super) const MAX_PUSH_BYTES: usize = 288 << 20;

/// Time one push may wait for the link's previous push, and for each of its messages.
const PUSH_WAIT: Duration = Duration::from_secs(10);

/// Takes the messages of one push stream whose first message is `first`.
pub(super) async fn receive(
    inner: &Arc<Inner>,
    slot: &Slot,
    first: RelayToNode,
    mut recv: quinn::RecvStream,
) {
    let Ok(Ok(_turn)) = timeout(PUSH_WAIT, slot.push_gate.acquire()).await else {
        tracing::warn!(relay = %slot.relay, "relay pushes faster than this node takes them; push dropped");
        let _ = recv.stop(0u32.into());
        return;
    };
    let mut bytes = 0usize;
    let mut next = Some(first);
    while let Some(message) = next.take() {
        bytes = bytes.saturating_add(size(&message));
        if bytes > MAX_PUSH_BYTES {
            tracing::warn!(relay = %slot.relay, "relay push over {MAX_PUSH_BYTES} bytes; the rest is refused");
            let _ = recv.stop(0u32.into());
            return;
        }
        if !apply(inner, slot, message) {
            tracing::warn!(relay = %slot.relay, "unexpected message in a relay push; stream refused");
            let _ = recv.stop(0u32.into());
            return;
        }
        // The stream's end (or any failure) ends the push.
        if let Ok(Ok(message)) = timeout(
            PUSH_WAIT,
            read_message::<RelayToNode>(&mut recv, MAX_CONTROL_MESSAGE),
        )
        .await
        {
            next = Some(message);
        }
    }
}

/// Hands one pushed message on; false for a message that does not belong in a push.
fn apply(inner: &Inner, slot: &Slot, message: RelayToNode) -> bool {
    match message {
        RelayToNode::Revocations { lists, .. } => {
            if !lists.is_empty() {
                let _ = inner.revocations.send(lists);
            }
        }
        RelayToNode::Rotations { rotations, .. } => {
            if !rotations.is_empty() {
                let _ = inner.rotations.send(rotations);
            }
        }
        RelayToNode::Map { map: Some(map) } => inner.offer_map(map, slot),
        RelayToNode::Map { map: None } => {}
        RelayToNode::Draining { within_secs } => inner.relay_draining(slot, within_secs),
        _ => return false,
    }
    true
}

/// What a pushed message weighs (its lists' and rotations' bytes).
pub(super) fn size(message: &RelayToNode) -> usize {
    match message {
        RelayToNode::Revocations { lists, .. } => lists.iter().map(|l| l.body.len() + 64).sum(),
        RelayToNode::Rotations { rotations, .. } => {
            rotations.iter().map(|r| r.body.len() + 128).sum()
        }
        RelayToNode::Map { map: Some(map) } => map.body.len() + 64,
        _ => 16,
    }
}
