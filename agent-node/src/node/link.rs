//! The relay link: connecting and being admitted (`Hello`/`Welcome`), reconnecting with
//! backoff, waiting for the link, and what a closed connection means for the node.

use std::sync::Arc;
use std::time::Duration;

use nullport_protocol::relay_link::{
    LINK_VERSION, LinkErrorCode, MAX_LINK_MESSAGE, NodeToRelay, RelayToNode,
};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tracing::Instrument;

use super::Inner;
use super::config::LinkState;
use super::conn::describe;
use super::control::{collect_pages, control_exchange};
use super::incoming::serve_incoming;
use crate::backoff::Backoff;
use crate::error::{Error, Refusal, Unreachable};
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
        .map_err(|e| Error::RelayUnreachable(Unreachable::Connect(e)))?;
    let limits = &inner.config.limits;
    let conn = match timeout(limits.connect_timeout, connecting).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            let presented = inner.presented.lock().ok().and_then(|p| p.clone());
            return Err(match presented {
                Some(p) if p != relay.node_id.to_string() => {
                    Error::RelayRefused(Refusal::WrongRelayKey {
                        expected: relay.node_id,
                        presented: p,
                    })
                }
                _ => describe(&e),
            });
        }
        Err(_) => {
            return Err(Error::RelayUnreachable(Unreachable::NoAnswer { addr }));
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
            Ok(RelayToNode::Error { code }) if join.is_some() => {
                Err(Error::RelayRefused(Refusal::Enrollment(code)))
            }
            Ok(RelayToNode::Error { code }) => Err(Error::Link(code)),
            Ok(_) => Err(Error::Link(LinkErrorCode::Malformed)),
            Err(e) => Err(conn.close_reason().map(|c| describe(&c)).unwrap_or(e)),
        }
    })
    .await;
    match admitted {
        Ok(Ok((send, recv))) => Ok((conn, send, recv)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Error::RelayUnreachable(Unreachable::NoWelcome)),
    }
}

pub(super) async fn run_link(inner: Arc<Inner>, endpoint: quinn::Endpoint) {
    let limits = inner.config.limits.clone();
    let mut retry = Retry::new(&limits);
    let mut attempt = 0u32;
    let mut last_failure: Option<String> = None;
    loop {
        attempt += 1;
        let next = match connect_once(&inner, &endpoint).await {
            Ok((conn, send, recv)) => {
                attempt = 0;
                last_failure = None;
                retry = Retry::new(&limits);
                *inner.control.lock().await = Some((send, recv));
                inner.conn.send_replace(Some(conn.clone()));
                inner.state.send_replace(LinkState::Online);
                // Catch up on revocation lists and rotations published while this node was
                // away (every page of them). The task ends with the link.
                let fetch = inner.clone();
                let mut catch_up = JoinSet::new();
                catch_up.spawn(
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
                drop(catch_up);
                inner.conn.send_replace(None);
                *inner.control.lock().await = None;
                tracing::warn!("relay link down: {err}");
                retry.after(&inner, err, attempt)
            }
            Err(e) => {
                // One line per new reason; the same failure again is only a debug line.
                let text = e.to_string();
                if last_failure.as_deref() != Some(text.as_str()) {
                    tracing::warn!(attempt, "relay connect failed: {text}; retrying");
                    last_failure = Some(text);
                } else {
                    tracing::debug!(attempt, "relay connect failed: {text}");
                }
                retry.after(&inner, e, attempt)
            }
        };
        tokio::time::sleep(next).await;
    }
}

/// The waits between attempts to reach the relay.
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
    fn after(&mut self, inner: &Inner, err: Error, attempt: u32) -> Duration {
        match err {
            Error::RelayRefused(refusal) => {
                let retry_in = if refusal == Refusal::Superseded {
                    self.superseded.next_wait()
                } else {
                    self.refused.next_wait()
                };
                inner
                    .state
                    .send_replace(LinkState::Refused { refusal, retry_in });
                retry_in
            }
            other => {
                inner.state.send_replace(LinkState::Connecting {
                    attempt,
                    last_error: Some(other),
                });
                self.failed.next_wait()
            }
        }
    }
}
