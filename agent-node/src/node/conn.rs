//! The node's current connection to the relay: waiting for it (or for the reason it is not
//! there), and what a closed connection means; the QUIC settings of the link.

use std::time::Duration;

use nullport_protocol::relay_link::{TLS_ACCESS_DENIED, close_code};
use tokio::time::timeout;

use super::Inner;
use super::config::{LinkState, NodeLimits};
use crate::error::Error;

pub(super) async fn wait_connection(
    inner: &Inner,
    within: Duration,
) -> Result<quinn::Connection, Error> {
    let mut conn_rx = inner.conn.subscribe();
    let found = timeout(within, async {
        loop {
            if let Some(conn) = conn_rx.borrow_and_update().clone() {
                return Ok(conn);
            }
            if let LinkState::Refused { reason } = &*inner.state.borrow() {
                return Err(Error::RelayRefused {
                    reason: reason.clone(),
                });
            }
            let mut state_rx = inner.state.subscribe();
            tokio::select! {
                r = conn_rx.changed() => if r.is_err() { return Err(Error::Shutdown) },
                r = state_rx.changed() => if r.is_err() { return Err(Error::Shutdown) },
            }
        }
    })
    .await;
    match found {
        Ok(r) => r,
        Err(_) => Err(match &*inner.state.borrow() {
            LinkState::Connecting {
                last_error: Some(e),
                ..
            } => Error::RelayUnreachable { reason: e.clone() },
            LinkState::Refused { reason } => Error::RelayRefused {
                reason: reason.clone(),
            },
            _ => Error::RelayUnreachable {
                reason: "no answer from the relay".into(),
            },
        }),
    }
}

/// Maps a QUIC connection error to what it means for the relay link.
pub(super) fn describe(e: &quinn::ConnectionError) -> Error {
    use quinn::ConnectionError as C;
    match e {
        C::ApplicationClosed(close) => {
            let code = u32::try_from(close.error_code.into_inner()).unwrap_or(u32::MAX);
            let reason = match code {
                close_code::SUPERSEDED => return Error::Superseded,
                close_code::NOT_ADMITTED => "not admitted (not on the relay's allowlist)",
                close_code::KEY_REVOKED => "this node's key was revoked by the network admin",
                close_code::KEY_RETIRED => "this node's key was retired by a rotation",
                close_code::UNSUPPORTED_VERSION => "unsupported relay-link version",
                close_code::SHUTDOWN => {
                    return Error::RelayLinkLost {
                        reason: "relay shutting down".into(),
                    };
                }
                close_code::CAPACITY => {
                    return Error::RelayLinkLost {
                        reason: "relay at capacity".into(),
                    };
                }
                _ => {
                    return Error::RelayLinkLost {
                        reason: e.to_string(),
                    };
                }
            };
            Error::RelayRefused {
                reason: reason.into(),
            }
        }
        C::ConnectionClosed(close) if u64::from(close.error_code) == TLS_ACCESS_DENIED => {
            Error::RelayRefused {
                reason: "not on the relay's allowlist (TLS access denied)".into(),
            }
        }
        C::TimedOut => Error::RelayUnreachable {
            reason: "no answer from the relay".into(),
        },
        _ => Error::RelayLinkLost {
            reason: e.to_string(),
        },
    }
}

pub(super) fn transport_config(limits: &NodeLimits) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(limits.max_incoming_streams.into())
        .max_concurrent_uni_streams(0u32.into())
        .stream_receive_window((4u32 << 20).into())
        .receive_window((16u32 << 20).into())
        .send_window(16 << 20)
        .datagram_receive_buffer_size(None)
        .keep_alive_interval(Some(limits.keep_alive))
        .max_idle_timeout(quinn::IdleTimeout::try_from(limits.idle_timeout).ok());
    t
}
