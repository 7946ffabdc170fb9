//! The relay link: connecting and being admitted (`Hello`/`Welcome`), reconnecting with
//! backoff, waiting for the link, and what a closed connection means for the node.

use std::sync::Arc;

use nullport_protocol::relay_link::{
    LINK_VERSION, LinkErrorCode, MAX_LINK_MESSAGE, NodeToRelay, RelayToNode,
};
use tokio::time::timeout;
use tracing::Instrument;

use super::Inner;
use super::config::LinkState;
use super::conn::describe;
use super::control::{collect_pages, control_exchange};
use super::incoming::serve_incoming;
use crate::backoff::Backoff;
use crate::error::Error;
use crate::link::{read_message, write_message};

pub(super) async fn connect_once(
    inner: &Inner,
    endpoint: &quinn::Endpoint,
) -> Result<(quinn::Connection, quinn::SendStream, quinn::RecvStream), Error> {
    let relay = &inner.config.relay;
    let addr = relay.resolve().await?[0];
    if let Ok(mut p) = inner.presented.lock() {
        *p = None;
    }
    let connecting = endpoint
        .connect_with(inner.client.clone(), addr, "nullport-relay")
        .map_err(|e| Error::RelayUnreachable {
            reason: e.to_string(),
        })?;
    let limits = &inner.config.limits;
    let conn = match timeout(limits.connect_timeout, connecting).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            let presented = inner.presented.lock().ok().and_then(|p| p.clone());
            return Err(match presented {
                Some(p) if p != relay.node_id.to_string() => Error::WrongRelayKey {
                    expected: relay.node_id,
                    presented: p,
                },
                _ => describe(&e),
            });
        }
        Err(_) => {
            return Err(Error::RelayUnreachable {
                reason: format!("no answer from {addr}"),
            });
        }
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
            Ok(RelayToNode::Error { code }) if join.is_some() => Err(Error::RelayRefused {
                reason: code.to_string(),
            }),
            Ok(RelayToNode::Error { code }) => Err(Error::Link(code)),
            Ok(_) => Err(Error::Link(LinkErrorCode::Malformed)),
            Err(e) => Err(conn.close_reason().map(|c| describe(&c)).unwrap_or(e)),
        }
    })
    .await;
    match admitted {
        Ok(Ok((send, recv))) => Ok((conn, send, recv)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Error::RelayUnreachable {
            reason: "relay did not answer hello".into(),
        }),
    }
}

pub(super) async fn run_link(inner: Arc<Inner>, endpoint: quinn::Endpoint) {
    let limits = inner.config.limits.clone();
    let mut backoff = Backoff::new(limits.backoff_min, limits.backoff_max);
    let mut refused_backoff = Backoff::new(limits.backoff_min, limits.refused_backoff_max);
    // Superseded: start at the full wait (then the usual jitter), so that two processes with
    // one identity take turns at most twice a minute instead of flapping.
    let mut superseded_backoff =
        Backoff::new(limits.superseded_backoff, limits.superseded_backoff * 2);
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let next = match connect_once(&inner, &endpoint).await {
            Ok((conn, send, recv)) => {
                attempt = 0;
                backoff.reset();
                refused_backoff.reset();
                superseded_backoff.reset();
                *inner.control.lock().await = Some((send, recv));
                inner.conn.send_replace(Some(conn.clone()));
                inner.state.send_replace(LinkState::Online);
                // Catch up on revocation lists and rotations published while this node was
                // away (every page of them). The task ends with the link.
                let fetch = inner.clone();
                let catch_up = tokio::spawn(
                    async move {
                        match control_exchange(&fetch, NodeToRelay::RevocationQuery).await {
                            Ok(pages) => {
                                let (lists, _) = collect_pages(pages);
                                if !lists.is_empty() {
                                    let _ = fetch.revocations.send(lists);
                                }
                            }
                            Err(e) => tracing::warn!("revocation catch-up failed: {e}"),
                        }
                        match control_exchange(&fetch, NodeToRelay::RotationQuery).await {
                            Ok(pages) => {
                                let (_, rotations) = collect_pages(pages);
                                if !rotations.is_empty() {
                                    let _ = fetch.rotations.send(rotations);
                                }
                            }
                            Err(e) => tracing::warn!("rotation catch-up failed: {e}"),
                        }
                    }
                    .in_current_span(),
                );
                tracing::info!(relay = %inner.config.relay, "relay link online");
                let err = serve_incoming(&inner, &conn).await;
                catch_up.abort();
                inner.conn.send_replace(None);
                *inner.control.lock().await = None;
                tracing::warn!("relay link down: {err}");
                match err {
                    Error::Superseded => {
                        // Another process holds this identity (a copied home?). Keep trying,
                        // slowly, so that a restart elsewhere does not leave this node
                        // offline for good, and two copies do not flap.
                        inner.state.send_replace(LinkState::Refused {
                            reason: format!(
                                "{err}; retrying every {}s (is this node's home copied to another machine?)",
                                limits.superseded_backoff.as_secs()
                            ),
                        });
                        superseded_backoff.next_wait()
                    }
                    Error::RelayRefused { reason } => {
                        inner.state.send_replace(LinkState::Refused { reason });
                        refused_backoff.next_wait()
                    }
                    other => {
                        inner.state.send_replace(LinkState::Connecting {
                            attempt,
                            last_error: Some(other.to_string()),
                        });
                        backoff.next_wait()
                    }
                }
            }
            Err(e @ (Error::RelayRefused { .. } | Error::WrongRelayKey { .. })) => {
                tracing::warn!("relay refused: {e}");
                inner.state.send_replace(LinkState::Refused {
                    reason: e.to_string(),
                });
                refused_backoff.next_wait()
            }
            Err(e) => {
                tracing::debug!(attempt, "relay connect failed: {e}");
                inner.state.send_replace(LinkState::Connecting {
                    attempt,
                    last_error: Some(e.to_string()),
                });
                backoff.next_wait()
            }
        };
        tokio::time::sleep(next).await;
    }
}
