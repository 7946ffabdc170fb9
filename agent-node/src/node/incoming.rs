//! Streams the relay opens to this node: incoming dials (the end-to-end handshake as the
//! responder, with pending-handshake caps) and pushed revocation lists and rotations.

use std::sync::Arc;

use nullport_protocol::relay_link::{RelayToNode, STREAM_BUSY};
use nullport_protocol::{DenyReason, NodeId};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::timeout;
use tracing::Instrument;

use super::Inner;
use super::conn::describe;
use super::push;
use super::slot::Slot;
use crate::error::Error;
use crate::handshake::respond;
use crate::link::read_message;
use nullport_protocol::relay_link::MAX_CONTROL_MESSAGE;

/// Serves the streams the relay opens on `conn` until the connection ends; returns why. Each
/// stream's task belongs to this call: when the connection ends, the handshakes in flight on
/// it stop with it.
pub(super) async fn serve_incoming(
    inner: &Arc<Inner>,
    slot: &Arc<Slot>,
    conn: &quinn::Connection,
) -> Error {
    let mut running = JoinSet::new();
    loop {
        tokio::select! {
            accepted = conn.accept_bi() => match accepted {
                Ok((send, recv)) => {
                    running.spawn(
                        handle_incoming(inner.clone(), slot.clone(), send, recv).in_current_span(),
                    );
                }
                Err(e) => return describe(&e),
            },
            Some(_) = running.join_next() => {}
        }
    }
}

/// Decrements a caller's pending-handshake count when dropped.
pub(super) struct PeerSlot<'a> {
    inner: &'a Inner,
    peer: NodeId,
}

impl Drop for PeerSlot<'_> {
    fn drop(&mut self) {
        if let Ok(mut m) = self.inner.per_peer.lock()
            && let Some(n) = m.get_mut(&self.peer)
        {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.peer);
            }
        }
    }
}

pub(super) async fn handle_incoming(
    inner: Arc<Inner>,
    slot: Arc<Slot>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let limits = &inner.config.limits;
    let first = timeout(
        limits.handshake.handshake_timeout,
        read_message::<RelayToNode>(&mut recv, MAX_CONTROL_MESSAGE),
    )
    .await;
    let header = match first {
        Ok(Ok(header @ RelayToNode::Incoming { .. })) => Some(header),
        Ok(Ok(first)) => {
            // A push from the relay: new revocation lists or rotations, a newer relay map,
            // or a planned stop.
            push::receive(&inner, &slot, first, recv).await;
            return;
        }
        _ => None,
    };
    let Some(RelayToNode::Incoming { caller, session }) = header else {
        let _ = send.reset(0u32.into());
        return;
    };
    let link = slot;
    let span = tracing::info_span!("incoming", peer = %caller.fmt_short(), %session);
    async {
        // Each link may hold at most half of the node's handshakes in progress: a relay
        // that opens handshakes it never completes (claiming any callers it likes) cannot
        // starve the node's other links.
        let Ok(_link_permit) = link.pending.clone().try_acquire_owned() else {
            tracing::warn!(relay = %link.relay, "too many handshakes in progress on this relay link; refusing");
            refuse_busy(&mut send, &mut recv);
            return;
        };
        let Ok(_permit) = inner.pending.clone().try_acquire_owned() else {
            tracing::warn!("too many handshakes in progress; refusing");
            refuse_busy(&mut send, &mut recv);
            return;
        };
        let slot_count = {
            let Ok(mut m) = inner.per_peer.lock() else {
                return;
            };
            let n = m.entry(caller).or_insert(0);
            if *n >= limits.max_pending_per_peer {
                tracing::warn!("too many handshakes from this caller; refusing");
                drop(m);
                refuse_busy(&mut send, &mut recv);
                return;
            }
            *n += 1;
            PeerSlot {
                inner: &inner,
                peer: caller,
            }
        };
        let result = timeout(
            limits.handshake.handshake_timeout,
            respond(
                &inner.keys,
                caller,
                session,
                limits.handshake,
                send,
                recv,
                inner.drain.clone(),
            ),
        )
        .await;
        drop(slot_count);
        match result {
            Ok(Ok(mut incoming)) => {
                // Only an authenticated caller's channel counts as use of this link (a
                // relay opening handshakes it never completes does not keep it open).
                incoming.lease(&link.uses);
                link.touch();
                tracing::debug!(service = incoming.service(), "authenticated");
                if let Err(
                    mpsc::error::TrySendError::Full(incoming)
                    | mpsc::error::TrySendError::Closed(incoming),
                ) = inner.incoming.try_send(incoming)
                {
                    tracing::warn!("accept queue full; denying");
                    let _ = incoming.deny(DenyReason::Unavailable).await;
                }
            }
            Ok(Err(Error::Protocol(
                e @ (nullport_protocol::Error::CallerMismatch { .. }
                | nullport_protocol::Error::Replayed),
            ))) => {
                tracing::warn!("relay misbehaviour: {e}");
            }
            // Denied already, with the reason the caller gets; not the relay's doing.
            Ok(Err(Error::Protocol(nullport_protocol::Error::Duplicate))) => {}
            Ok(Err(e)) => tracing::info!("incoming handshake failed: {e}"),
            Err(_) => tracing::info!("incoming handshake timed out"),
        }
    }
    .instrument(span)
    .await;
}

/// Refuses an incoming dial before its handshake: both directions end with the busy code,
/// which the relay passes on and the caller reports as [`crate::Error::PeerBusy`].
fn refuse_busy(send: &mut quinn::SendStream, recv: &mut quinn::RecvStream) {
    let _ = send.reset(STREAM_BUSY.into());
    let _ = recv.stop(STREAM_BUSY.into());
}
