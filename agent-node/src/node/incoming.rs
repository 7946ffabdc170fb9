//! Streams the relay opens to this node: incoming dials (the end-to-end handshake as the
//! responder, with pending-handshake caps) and pushed revocation lists and rotations.

use std::sync::Arc;

use nullport_protocol::relay_link::RelayToNode;
use nullport_protocol::{DenyReason, NodeId};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::timeout;
use tracing::Instrument;

use super::Inner;
use super::conn::describe;
use super::control::{collect_pages, read_pages};
use super::slot::Slot;
use crate::error::Error;
use crate::handshake::respond;

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
    let header = timeout(limits.handshake.handshake_timeout, read_pages(&mut recv)).await;
    let header = match header {
        Ok(Ok(mut pages))
            if pages.len() == 1 && matches!(pages[0], RelayToNode::Incoming { .. }) =>
        {
            pages.pop()
        }
        Ok(Ok(pages)) => {
            // A push from the relay: new revocation lists or rotations, a newer relay map,
            // or a planned stop.
            for page in &pages {
                match page {
                    RelayToNode::Map { map: Some(map) } => inner.offer_map(map.clone(), &slot),
                    RelayToNode::Draining { within_secs } => {
                        inner.relay_draining(&slot, *within_secs);
                    }
                    _ => {}
                }
            }
            let (lists, rotations) = collect_pages(pages);
            if !lists.is_empty() {
                let _ = inner.revocations.send(lists);
            }
            if !rotations.is_empty() {
                let _ = inner.rotations.send(rotations);
            }
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
        let Ok(_permit) = inner.pending.clone().try_acquire_owned() else {
            tracing::warn!("too many handshakes in progress; refusing");
            let _ = send.reset(0u32.into());
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
                let _ = send.reset(0u32.into());
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
                inner.drain.leased(&link.uses),
            ),
        )
        .await;
        drop(slot_count);
        link.touch();
        match result {
            Ok(Ok(incoming)) => {
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
            Ok(Err(Error::Protocol(e @ nullport_protocol::Error::CallerMismatch { .. }))) => {
                tracing::warn!("relay misbehaviour: {e}");
            }
            Ok(Err(e)) => tracing::info!("incoming handshake failed: {e}"),
            Err(_) => tracing::info!("incoming handshake timed out"),
        }
    }
    .instrument(span)
    .await;
}
