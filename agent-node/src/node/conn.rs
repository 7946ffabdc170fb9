//! The node's current connection to the relay: waiting for it (or for the reason it is not
//! there), and what a closed connection means; the QUIC settings of the link.

use std::time::Duration;

use nullport_protocol::relay_link::{TLS_ACCESS_DENIED, close_code};
use tokio::time::timeout;

use super::Inner;
use super::config::{LinkState, NodeLimits};
use crate::error::{Error, LinkLost, Refusal, Unreachable};

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
            if let Some(refusal) = inner.state.borrow().refusal() {
                return Err(Error::RelayRefused(refusal.clone()));
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
            } => e.clone(),
            LinkState::Refused { refusal, .. } => Error::RelayRefused(refusal.clone()),
            _ => Error::RelayUnreachable(Unreachable::NotYet),
        }),
    }
}

/// Maps a QUIC connection error to what it means for the relay link.
pub(super) fn describe(e: &quinn::ConnectionError) -> Error {
    use quinn::ConnectionError as C;
    match e {
        C::ApplicationClosed(close) => {
            let code = u32::try_from(close.error_code.into_inner()).unwrap_or(u32::MAX);
            match code {
                close_code::SUPERSEDED => Error::RelayRefused(Refusal::Superseded),
                close_code::NOT_ADMITTED => Error::RelayRefused(Refusal::NotAdmitted),
                close_code::KEY_REVOKED => Error::RelayRefused(Refusal::KeyRevoked),
                close_code::KEY_RETIRED => Error::RelayRefused(Refusal::KeyRetired),
                close_code::UNSUPPORTED_VERSION => Error::RelayRefused(Refusal::UnsupportedVersion),
                close_code::SHUTDOWN => LinkLost::ShuttingDown.into(),
                close_code::CAPACITY => LinkLost::AtCapacity.into(),
                _ => LinkLost::Connection(e.clone()).into(),
            }
        }
        C::ConnectionClosed(close) if u64::from(close.error_code) == TLS_ACCESS_DENIED => {
            Error::RelayRefused(Refusal::NotListed)
        }
        C::TimedOut => Error::RelayUnreachable(Unreachable::Connection(e.clone())),
        _ => LinkLost::Connection(e.clone()).into(),
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
