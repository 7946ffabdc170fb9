//! What the relay pushes to every online node (new revocation lists, rotations, relay maps,
//! and that it is about to stop), and the
//! pages such lists travel in (also for answers to queries). The broadcasting itself is
//! `server::broadcast`.

use nullport_protocol::Signature;
use nullport_protocol::relay_link::{
    MAX_CONTROL_MESSAGE, RelayToNode, SignedRelayMap, SignedRevocations, SignedRotation,
};

/// Something to tell every node.
#[derive(Debug, Clone)]
pub(crate) enum Push {
    /// A new revocation list.
    Revocations(SignedRevocations),
    /// A new rotation.
    Rotation(SignedRotation),
    /// A newer relay map.
    Map(SignedRelayMap),
    /// The relay stops within this many seconds: move now.
    Draining(u32),
}

/// Bytes of lists or rotations per message (well under [`MAX_CONTROL_MESSAGE`]).
pub(crate) const PAGE_BYTES: usize = MAX_CONTROL_MESSAGE / 2;

/// Splits `items` into pages of at most [`PAGE_BYTES`] (by the size of each item), each
/// turned into a message by `page(items, more)`.
pub(crate) fn pages<T: Clone>(
    items: &[T],
    size: impl Fn(&T) -> usize,
    page: impl Fn(Vec<T>, bool) -> RelayToNode,
) -> Vec<RelayToNode> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for item in items {
        let n = size(item) + 16;
        if !current.is_empty() && bytes + n > PAGE_BYTES {
            out.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += n;
        current.push(item.clone());
    }
    out.push(current);
    let last = out.len() - 1;
    out.into_iter()
        .enumerate()
        .map(|(i, items)| page(items, i < last))
        .collect()
}

/// The pages of revocation lists.
pub(crate) fn revocation_pages(lists: &[SignedRevocations]) -> Vec<RelayToNode> {
    pages(
        lists,
        |l| l.body.len() + Signature::LEN,
        |lists, more| RelayToNode::Revocations { lists, more },
    )
}

/// The pages of rotations.
pub(crate) fn rotation_pages(rotations: &[SignedRotation]) -> Vec<RelayToNode> {
    pages(
        rotations,
        |r| r.body.len() + 2 * Signature::LEN,
        |rotations, more| RelayToNode::Rotations { rotations, more },
    )
}
