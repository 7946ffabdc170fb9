//! The relay link: connecting and being admitted (`Hello`/`Welcome`), reconnecting with
//! backoff, waiting for the link, and what a closed connection means for the node.

use std::sync::Arc;
use std::time::Duration;

use nullport_protocol::relay_link::{
    LINK_VERSION, LinkErrorCode, MAX_LINK_MESSAGE, NodeToRelay, RelayToNode, close_code,
};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tracing::Instrument;

use super::Inner;
use super::config::LinkState;
use super::conn::describe;
use super::control::{collect_pages, slot_exchange};
use super::incoming::serve_incoming;
use super::slot::Slot;
use crate::backoff::Backoff;
use crate::error::{Error, Refusal, Unreachable};
use crate::link::{read_message, write_message};

/// The QUIC and TLS handshake with the relay at one of its addresses.
async fn reach(
    slot: &Slot,
    address: &crate::relay_addr::RelayAddr,
    endpoint: &quinn::Endpoint,
    limits: &super::NodeLimits,
) -> Result<quinn::Connection, Error> {
    let addr = address.resolve().await?[0];
    if let Ok(mut p) = slot.presented.lock() {
        *p = None;
    }
    let connecting = endpoint
        .connect_with(slot.client.clone(), addr, "nullport-relay")
        .map_err(|e| Error::RelayUnreachable(Unreachable::Connect(e)))?;
    match timeout(limits.connect_timeout, connecting).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => {
            let presented = slot.presented.lock().ok().and_then(|p| p.clone());
            Err(match presented {
                Some(p) if p != slot.relay.node_id.to_string() => {
                    Error::RelayRefused(Refusal::WrongRelayKey {
                        expected: slot.relay.node_id,
                        presented: p,
                    })
                }
                _ => describe(&e),
            })
        }
        Err(_) => Err(Error::RelayUnreachable(Unreachable::NoAnswer { addr })),
    }
}

pub(super) async fn connect_once(
    inner: &Inner,
    slot: &Slot,
    endpoint: &quinn::Endpoint,
) -> Result<(quinn::Connection, quinn::SendStream, quinn::RecvStream), Error> {
    let relay = &slot.relay;
    let limits = &inner.config.limits;
    // Every address the map lists for this relay, in order (a lone relay: its one address);
    // the first that answers is used.
    let addresses = inner.relay_addresses(relay);
    let last = addresses.len().saturating_sub(1);
    let mut reached = None;
    for (i, address) in addresses.iter().enumerate() {
        match reach(slot, address, endpoint, limits).await {
            Ok(conn) => {
                reached = Some(conn);
                break;
            }
            Err(e) if i == last => return Err(e),
            Err(e) => tracing::debug!(%address, "relay address not reached: {e}; trying the next"),
        }
    }
    let Some(conn) = reached else {
        return Err(Error::RelayUnreachable(Unreachable::NotYet));
    };
    let admitted = timeout(limits.connect_timeout, async {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| describe(&e))?;
        let join = inner.join.lock().ok().and_then(|j| j.clone());
        let first = match &join {
            Some(invite) => NodeToRelay::Join {
                invite: invite.clone(),
                version: LINK_VERSION,
            },
            None => NodeToRelay::Hello {
                version: LINK_VERSION,
            },
        };
        write_message(&mut send, &first, MAX_LINK_MESSAGE).await?;
        match read_message::<RelayToNode>(&mut recv, MAX_LINK_MESSAGE).await {
            Ok(RelayToNode::Welcome { node_id, .. }) if node_id == inner.node_id => {
                if join.is_some()
                    && let Ok(mut j) = inner.join.lock()
                {
                    // Enrolled: from now on this node is on the allowlist.
                    *j = None;
                }
                Ok((send, recv))
            }
            Ok(RelayToNode::Error { code }) if join.is_some() => {
                Err(Error::RelayRefused(Refusal::Enrollment(code)))
            }
            Ok(RelayToNode::Error { code }) => Err(Error::Link(code)),
            Ok(_) => Err(Error::Link(LinkErrorCode::Malformed)),
            // A relay that refuses this node closes the connection with the reason; the
            // stream error may be seen first, so wait a moment for the reason itself.
            Err(e) => Err(timeout(CLOSE_REASON_WAIT, conn.closed())
                .await
                .map(|c| describe(&c))
                .unwrap_or(e)),
        }
    })
    .await;
    match admitted {
        Ok(Ok((send, recv))) => Ok((conn, send, recv)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Error::RelayUnreachable(Unreachable::NoWelcome)),
    }
}

/// Longest a failed admission waits for the relay's close reason.
const CLOSE_REASON_WAIT: Duration = Duration::from_millis(200);

pub(super) async fn run_link(inner: Arc<Inner>, slot: Arc<Slot>, endpoint: quinn::Endpoint) {
    let limits = inner.config.limits.clone();
    let mut retry = Retry::new(&limits);
    let mut attempt = 0u32;
    let mut last_failure: Option<String> = None;
    while !slot.is_retired() {
        attempt += 1;
        let next = match connect_once(&inner, &slot, &endpoint).await {
            Ok((conn, send, recv)) if slot.is_retired() => {
                drop((send, recv));
                conn.close(close_code::NORMAL.into(), b"link no longer needed");
                break;
            }
            Ok((conn, send, recv)) => {
                attempt = 0;
                last_failure = None;
                retry = Retry::new(&limits);
                *slot.control.lock().await = Some((send, recv));
                if let Ok(mut since) = slot.online_since.lock() {
                    *since = Some(tokio::time::Instant::now());
                }
                if let Ok(mut until) = slot.draining_until.lock() {
                    *until = None;
                }
                slot.conn.send_replace(Some(conn.clone()));
                slot.state.send_replace(LinkState::Online);
                slot.tried.send_replace(true);
                inner.note_up(&slot.relay_id());
                inner.fleet_changed();
                // Catch up on revocation lists and rotations published while this node was
                // away (every page of them), and on the relay map of a fleet. The task ends
                // with the link.
                let fetch = inner.clone();
                let fetch_slot = slot.clone();
                let mut catch_up = JoinSet::new();
                catch_up
                    .spawn(async move { catch_up_on(&fetch, &fetch_slot).await }.in_current_span());
                tracing::info!(relay = %slot.relay, "relay link online");
                let err = serve_incoming(&inner, &slot, &conn).await;
                drop(catch_up);
                if let Ok(mut since) = slot.online_since.lock() {
                    *since = None;
                }
                slot.conn.send_replace(None);
                *slot.control.lock().await = None;
                inner.fleet_changed();
                if slot.is_retired() {
                    break;
                }
                slot.mark_failed();
                tracing::warn!(relay = %slot.relay, "relay link down: {err}");
                retry.after(&slot, err, attempt)
            }
            Err(e) => {
                // One line per new reason; the same failure again is only a debug line.
                let text = e.to_string();
                if last_failure.as_deref() != Some(text.as_str()) {
                    tracing::warn!(attempt, relay = %slot.relay, "relay connect failed: {text}; retrying");
                    last_failure = Some(text);
                } else {
                    tracing::debug!(attempt, "relay connect failed: {text}");
                }
                slot.mark_failed();
                let wait = retry.after(&slot, e, attempt);
                slot.tried.send_replace(true);
                inner.fleet_changed();
                wait
            }
        };
        inner.fleet_changed();
        tokio::time::sleep(next).await;
    }
}

/// What a node fetches over a link that just came up: the relay map (fleet nodes), then the
/// revocation lists and rotations published while it was away.
async fn catch_up_on(inner: &Arc<Inner>, slot: &Slot) {
    if inner.fleet.is_some() {
        match slot_exchange(inner, slot, NodeToRelay::MapQuery).await {
            Ok(mut answers) => match answers.pop() {
                Some(RelayToNode::Map { map: Some(map) }) => inner.offer_map(map, slot),
                Some(RelayToNode::Map { map: None }) => {
                    tracing::warn!(relay = %slot.relay, "relay holds no relay map");
                }
                _ => tracing::warn!(relay = %slot.relay, "relay map query: unexpected answer"),
            },
            Err(e) => tracing::warn!("relay map query failed: {e}"),
        }
    }
    match slot_exchange(inner, slot, NodeToRelay::RevocationQuery).await {
        Ok(pages) => {
            let (lists, _) = collect_pages(pages);
            if !lists.is_empty() {
                let _ = inner.revocations.send(lists);
            }
        }
        Err(e) => tracing::warn!("revocation catch-up failed: {e}"),
    }
    match slot_exchange(inner, slot, NodeToRelay::RotationQuery).await {
        Ok(pages) => {
            let (_, rotations) = collect_pages(pages);
            if !rotations.is_empty() {
                let _ = inner.rotations.send(rotations);
            }
        }
        Err(e) => tracing::warn!("rotation catch-up failed: {e}"),
    }
}

struct Retry {
    /// After a failure to connect or a lost link.
    failed: Backoff,
    /// After a refusal: slowly, an operator has to act.
    refused: Backoff,
    /// After being superseded: start at the full wait (then the usual jitter), so that two
    /// processes with one identity take turns at most twice a minute instead of flapping.
    superseded: Backoff,
}

impl Retry {
    fn new(limits: &super::NodeLimits) -> Retry {
        Retry {
            failed: Backoff::new(limits.backoff_min, limits.backoff_max),
            refused: Backoff::new(limits.backoff_min, limits.refused_backoff_max),
            superseded: Backoff::new(limits.superseded_backoff, limits.superseded_backoff * 2),
        }
    }

    /// Records why the link is down in the node's state and returns how long to wait before
    /// the next attempt.
    fn after(&mut self, slot: &Slot, err: Error, attempt: u32) -> Duration {
        match err {
            Error::RelayRefused(refusal) => {
                let retry_in = if refusal == Refusal::Superseded {
                    self.superseded.next_wait()
                } else {
                    self.refused.next_wait()
                };
                slot.state
                    .send_replace(LinkState::Refused { refusal, retry_in });
                retry_in
            }
            other => {
                slot.state.send_replace(LinkState::Connecting {
                    attempt,
                    last_error: Some(other),
                });
                self.failed.next_wait()
            }
        }
    }
}
