//! One relay link of a node ([`Slot`]): which relay, its pinned TLS key, the link's state, its
//! connection and control stream. A lone-relay node has one; a fleet node has its home link
//! and, while it reaches callees homed elsewhere, extra links (closed again when idle).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nullport_protocol::NodeId;
use tokio::sync::watch;
use tokio::time::Instant;

use super::config::{LinkState, NodeLimits};
use super::conn::transport_config;
use crate::error::Error;
use crate::relay_addr::RelayAddr;
use crate::tls::{PresentedKey, client_crypto};

/// A node's link to one relay.
pub(super) struct Slot {
    /// The relay, its key pinned.
    pub(super) relay: RelayAddr,
    pub(super) client: quinn::ClientConfig,
    pub(super) presented: PresentedKey,
    pub(super) state: watch::Sender<LinkState>,
    pub(super) conn: watch::Sender<Option<quinn::Connection>>,
    pub(super) control: tokio::sync::Mutex<Option<(quinn::SendStream, quinn::RecvStream)>>,
    /// Held by every channel and dial on this link: in use while the count is above one.
    pub(super) uses: Arc<()>,
    /// When this link was last used to dial or opened (for closing idle extra links).
    pub(super) last_used: std::sync::Mutex<Instant>,
    /// Since when the link is online without interruption (none: not online).
    pub(super) online_since: std::sync::Mutex<Option<Instant>>,
    /// Until when the relay said it is stopping (a planned restart): not a home meanwhile.
    pub(super) draining_until: std::sync::Mutex<Option<Instant>>,
    /// Set when the node gives this link up: its task stops reconnecting.
    pub(super) retired: AtomicBool,
    /// Set once a connection attempt failed or a connection was lost: the relay has let this
    /// node down at least once (a relay that comes and goes must prove itself for the settle
    /// time before it is home again).
    pub(super) failed: AtomicBool,
    /// Whether the first connection attempt has finished (either way).
    pub(super) tried: watch::Sender<bool>,
    /// One push stream from this relay at a time.
    pub(super) push_gate: tokio::sync::Semaphore,
    /// Incoming handshakes in progress on this link (a fleet node: half the node's bound).
    pub(super) pending: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("relay", &self.relay.to_string())
            .field("state", &*self.state.borrow())
            .finish_non_exhaustive()
    }
}

impl Slot {
    /// A link (not yet connected) to `relay`, whose key is pinned in its TLS configuration.
    /// `handshakes`: incoming handshakes this link may have in progress at once.
    pub(super) fn new(
        identity: &nullport_protocol::Identity,
        relay: RelayAddr,
        limits: &NodeLimits,
        handshakes: usize,
    ) -> Result<Slot, Error> {
        let presented: PresentedKey = Arc::default();
        let crypto = client_crypto(identity, relay.node_id, presented.clone())?;
        let mut client = quinn::ClientConfig::new(Arc::new(crypto));
        client.transport_config(Arc::new(transport_config(limits)));
        Ok(Slot {
            relay,
            client,
            presented,
            state: watch::Sender::new(LinkState::Connecting {
                attempt: 0,
                last_error: None,
            }),
            conn: watch::Sender::new(None),
            control: tokio::sync::Mutex::new(None),
            uses: Arc::new(()),
            last_used: std::sync::Mutex::new(Instant::now()),
            online_since: std::sync::Mutex::new(None),
            draining_until: std::sync::Mutex::new(None),
            retired: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            tried: watch::Sender::new(false),
            push_gate: tokio::sync::Semaphore::new(1),
            pending: Arc::new(tokio::sync::Semaphore::new(handshakes.max(1))),
        })
    }

    /// The relay's NodeId.
    pub(super) fn relay_id(&self) -> NodeId {
        self.relay.node_id
    }

    /// The live connection, if the link is up.
    pub(super) fn connection(&self) -> Option<quinn::Connection> {
        self.conn.borrow().clone()
    }

    /// Notes a use now (a dial, an incoming channel).
    pub(super) fn touch(&self) {
        if let Ok(mut t) = self.last_used.lock() {
            *t = Instant::now();
        }
    }

    /// Whether channels or dials hold this link.
    pub(super) fn in_use(&self) -> bool {
        Arc::strong_count(&self.uses) > 1
    }

    /// Time since the last use.
    pub(super) fn idle_for(&self) -> Duration {
        self.last_used
            .lock()
            .map(|t| t.elapsed())
            .unwrap_or_default()
    }

    /// How long the link has been online without interruption.
    pub(super) fn online_for(&self) -> Option<Duration> {
        self.online_since
            .lock()
            .ok()
            .and_then(|t| t.map(|t| t.elapsed()))
    }

    /// Whether the relay announced it is stopping and has not stopped yet.
    pub(super) fn is_draining(&self) -> bool {
        self.draining_until
            .lock()
            .ok()
            .and_then(|t| *t)
            .is_some_and(|until| Instant::now() < until)
    }

    /// Whether the last attempt to connect failed (or the link was refused), so a dial should
    /// not wait for it.
    pub(super) fn is_down(&self) -> bool {
        *self.tried.borrow() && self.connection().is_none()
    }

    /// Gives the link up: no more reconnects, and the connection is closed.
    pub(super) fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        if let Some(conn) = self.connection() {
            conn.close(
                nullport_protocol::relay_link::close_code::NORMAL.into(),
                b"link no longer needed",
            );
        }
    }

    /// Notes that an attempt failed or the connection was lost.
    pub(super) fn mark_failed(&self) {
        self.failed.store(true, Ordering::Release);
    }

    /// Whether an attempt ever failed or a connection was ever lost.
    pub(super) fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Whether the link was given up.
    pub(super) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }
}
