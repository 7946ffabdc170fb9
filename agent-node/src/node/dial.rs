//! Dialing: asking a relay for a stream to the target, then the end-to-end handshake over it.
//!
//! A lone-relay node dials through its one link. A fleet node walks the target's rendezvous
//! order over the relay map (the same order the target used to choose its home): it opens a
//! link to each relay as needed (authenticated exactly like its home link), skips relays it
//! cannot reach or that announced a planned stop, and moves on when a relay answers "not
//! here" (`Offline`), so finding the target needs no shared presence state between relays.

use std::sync::Arc;

use nullport_protocol::relay_link::{LinkErrorCode, MAX_LINK_MESSAGE, NodeToRelay, RelayToNode};
use nullport_protocol::{DialRequest, NodeId, ServiceName};
use tokio::time::timeout;

use super::Inner;
use super::conn::{describe, wait_connection};
use super::slot::Slot;
use crate::channel::Channel;
use crate::drain::Drain;
use crate::error::Error;
use crate::handshake::initiate;
use crate::link::{read_message, write_message};

/// Dials `target` through the relay link `conn`; `Ok(None)` when the relay answers that the
/// target is not connected there.
async fn dial_via(
    inner: &Inner,
    conn: &quinn::Connection,
    drain: Drain,
    target: NodeId,
    service: ServiceName,
    blob: Vec<u8>,
) -> Result<Option<Channel>, Error> {
    let limits = &inner.config.limits;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| describe(&e))?;
    let answer = timeout(limits.relay_answer_timeout, async {
        write_message(&mut send, &NodeToRelay::Dial { target }, MAX_LINK_MESSAGE).await?;
        read_message::<RelayToNode>(&mut recv, MAX_LINK_MESSAGE).await
    })
    .await
    .map_err(|_| Error::Timeout {
        what: "relay answer to a dial",
    })??;
    let session = match answer {
        RelayToNode::Dialed { session } => session,
        RelayToNode::Error {
            code: LinkErrorCode::Offline,
        } => return Ok(None),
        RelayToNode::Error { code } => return Err(Error::Link(code)),
        _ => return Err(Error::Link(LinkErrorCode::Malformed)),
    };
    let request = DialRequest {
        expected: target,
        session,
        service,
        blob,
    };
    initiate(&inner.keys, request, limits.handshake, send, recv, drain)
        .await
        .map(Some)
}

/// Dials through the node's one relay link (a lone relay, or a fleet node before it has
/// its map): waits for the link, as dials always have.
pub(super) async fn dial_home(
    inner: &Inner,
    target: NodeId,
    service: ServiceName,
    blob: Vec<u8>,
) -> Result<Channel, Error> {
    let conn = wait_connection(inner, inner.config.limits.dial_timeout).await?;
    let drain = match inner.home_slot() {
        Some(slot) => {
            slot.touch();
            inner.drain.leased(&slot.uses)
        }
        None => inner.drain.clone(),
    };
    dial_via(inner, &conn, drain, target, service, blob)
        .await?
        .ok_or(Error::PeerOffline(target))
}

/// Dials through the relays of the fleet in `target`'s rendezvous order.
pub(super) async fn dial_fleet(
    inner: &Arc<Inner>,
    target: NodeId,
    service: ServiceName,
    blob: Vec<u8>,
) -> Result<Channel, Error> {
    let order = inner.relay_order(&target);
    let mut last_error: Option<Error> = None;
    let mut not_here = 0usize;
    // Relays that announced a stop come last: a channel opened there would end with it.
    let (live, draining): (Vec<Arc<Slot>>, Vec<Arc<Slot>>) = order
        .iter()
        .filter_map(|relay| inner.slot_for(relay).ok())
        .partition(|slot| !slot.is_draining());
    for slot in live.into_iter().chain(draining) {
        let Some(conn) = ready(inner, &slot).await else {
            last_error = Some(slot_error(&slot));
            continue;
        };
        slot.touch();
        let drain = inner.drain.leased(&slot.uses);
        match dial_via(inner, &conn, drain, target, service.clone(), blob.clone()).await {
            Ok(Some(channel)) => return Ok(channel),
            Ok(None) => {
                tracing::debug!(relay = %slot.relay, "not here");
                not_here += 1;
            }
            Err(e @ Error::Timeout { .. }) => {
                // A relay that does not answer a dial in time is treated as lost: its link is
                // closed (and reconnected), and the next relay tried.
                tracing::info!(relay = %slot.relay, "{e}; trying the next relay");
                conn.close(0u32.into(), b"dial answer timed out");
                last_error = Some(e);
            }
            Err(e @ (Error::RelayLinkLost(_) | Error::RelayUnreachable(_))) => {
                last_error = Some(e);
            }
            Err(other) => return Err(other),
        }
    }
    match last_error {
        Some(e) if not_here == 0 => Err(e),
        _ => Err(Error::PeerOffline(target)),
    }
}

/// The link's connection: at once if up; after its first attempt if it is new; none if its
/// last attempt failed (a dial does not wait for a relay that is down).
async fn ready(inner: &Inner, slot: &Slot) -> Option<quinn::Connection> {
    if let Some(conn) = slot.connection() {
        return Some(conn);
    }
    if slot.is_down() {
        return None;
    }
    let mut tried = slot.tried.subscribe();
    let mut conn = slot.conn.subscribe();
    let _ = timeout(inner.config.limits.connect_timeout, async {
        loop {
            if conn.borrow_and_update().is_some() || *tried.borrow_and_update() {
                return;
            }
            tokio::select! {
                r = conn.changed() => if r.is_err() { return },
                r = tried.changed() => if r.is_err() { return },
            }
        }
    })
    .await;
    slot.connection()
}

/// Why a link is not usable, from its state.
fn slot_error(slot: &Slot) -> Error {
    use super::config::LinkState;
    match &*slot.state.borrow() {
        LinkState::Connecting {
            last_error: Some(e),
            ..
        } => e.clone(),
        LinkState::Refused { refusal, .. } => Error::RelayRefused(refusal.clone()),
        _ => Error::RelayUnreachable(crate::error::Unreachable::NotYet),
    }
}
