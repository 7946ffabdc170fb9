//! [`Node`]: the embeddable API. Outbound relay links only (one relay, or a fleet's relays
//! by rendezvous hashing), dials out, accepts in.

mod config;
mod conn;
mod control;
mod dial;
mod fleet;
mod incoming;
mod link;
mod push;
mod slot;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nullport_protocol::relay_link::{
    LinkErrorCode, NodeToRelay, RelayToNode, SignedRelayMap, SignedRevocations, SignedRotation,
    WitnessedCheckpoint, close_code,
};
use nullport_protocol::{DenyReason, HandshakeKeys, NodeId, ServiceName};
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::timeout;
use tracing::Instrument;

use crate::channel::Channel;
use crate::drain::Drain;
use crate::error::{Error, SetupError};
use crate::handshake::{FirstBytes, IncomingChannel};
pub use config::{LinkState, NodeConfig, NodeLimits};
use conn::wait_connection;
use control::{collect_pages, control_exchange, control_request, slot_exchange};
use slot::Slot;

type Handler = Arc<
    dyn Fn(Channel) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        + Send
        + Sync,
>;

/// Service handlers for [`Node::serve`], by service name.
#[derive(Default, Clone)]
pub struct Handlers {
    map: HashMap<String, Handler>,
}

impl std::fmt::Debug for Handlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.map.keys()).finish()
    }
}

impl Handlers {
    /// No handlers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `service` with `handler` (called once per accepted channel).
    pub fn add<F, Fut>(mut self, service: &str, handler: F) -> Self
    where
        F: Fn(Channel) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        self.map.insert(
            service.to_owned(),
            Arc::new(move |ch| Box::pin(handler(ch))),
        );
        self
    }
}

struct Inner {
    node_id: NodeId,
    keys: HandshakeKeys,
    config: NodeConfig,
    /// The node's state: its home link's (or, with none, the link being tried first).
    state: watch::Sender<LinkState>,
    /// The home link's connection.
    conn: watch::Sender<Option<quinn::Connection>>,
    /// The home link.
    home: Mutex<Option<Arc<Slot>>>,
    /// Since when the home link is home.
    home_since: Mutex<Option<tokio::time::Instant>>,
    /// Every relay link, by relay.
    slots: Mutex<HashMap<NodeId, Arc<Slot>>>,
    /// Relays whose link was found down, and when (dials do not wait on them for a while).
    down: Mutex<HashMap<NodeId, tokio::time::Instant>>,
    /// The fleet (pinned admin key, relay map) of a fleet node.
    fleet: Option<fleet::Fleet>,
    /// Each newer relay map the node takes.
    map_updates: watch::Sender<Option<SignedRelayMap>>,
    /// Wakes the link manager.
    changed: Notify,
    endpoint: quinn::Endpoint,
    /// The links' tasks.
    tasks: Mutex<JoinSet<()>>,
    pending: Arc<Semaphore>,
    per_peer: Mutex<HashMap<NodeId, usize>>,
    incoming: mpsc::Sender<IncomingChannel>,
    revocations: tokio::sync::broadcast::Sender<Vec<SignedRevocations>>,
    rotations: tokio::sync::broadcast::Sender<Vec<SignedRotation>>,
    join: Mutex<Option<Vec<u8>>>,
    drain: Drain,
}

/// How often a node drops expired resumption secrets.
const SWEEP: std::time::Duration = std::time::Duration::from_secs(10);

/// A running node. Dropping it closes the relay link and stops its tasks.
pub struct Node {
    inner: Arc<Inner>,
    incoming: tokio::sync::Mutex<mpsc::Receiver<IncomingChannel>>,
    endpoint: quinn::Endpoint,
    link: JoinHandle<()>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("node_id", &self.inner.node_id)
            .field("relay", &self.inner.config.relay.to_string())
            .field("state", &*self.inner.state.borrow())
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Starts the node: binds a client-only UDP socket (no listener) and begins connecting to
    /// the relay in the background. Use [`Node::wait_online`] to wait for admission.
    pub async fn start(config: NodeConfig) -> Result<Node, Error> {
        let keys = HandshakeKeys::new(&config.identity)?;
        // Validate the TLS setup once before anything starts (each link builds its own).
        Slot::new(&config.identity, config.relay.clone(), &config.limits, 1)?;
        let fleet = config.admin.map(|admin| {
            let held = config.relay_map.as_ref().and_then(|signed| {
                match nullport_keyring::relay_map::RelayMap::verify(signed, &admin) {
                    Ok(map) => Some((map, signed.clone())),
                    Err(e) => {
                        tracing::warn!("the relay map held is not used: {e}");
                        None
                    }
                }
            });
            fleet::Fleet {
                admin,
                map: Mutex::new(held),
            }
        });
        let relay_ip = config
            .relay
            .resolve()
            .await
            .ok()
            .and_then(|a| a.first().copied());
        let any_v6: SocketAddr = (std::net::Ipv6Addr::UNSPECIFIED, 0).into();
        let any_v4: SocketAddr = (std::net::Ipv4Addr::UNSPECIFIED, 0).into();
        let bind: SocketAddr = match (config.bind, relay_ip) {
            (Some(bind), _) => bind,
            (None, Some(SocketAddr::V6(_))) => any_v6,
            (None, _) => any_v4,
        };
        // A fleet node may meet relays of both address families in its map: a dual-stack
        // socket when the machine has IPv6 (quinn maps IPv4 addresses onto it), else IPv4.
        let dual = fleet.is_some() && config.bind.is_none() && bind == any_v4;
        let endpoint = match dual.then(|| quinn::Endpoint::client(any_v6)) {
            Some(Ok(endpoint)) => Ok(endpoint),
            _ => quinn::Endpoint::client(bind),
        }
        .map_err(|e| {
            Error::Setup(SetupError::Bind {
                addr: bind,
                kind: e.kind(),
            })
        })?;
        let (incoming_tx, incoming_rx) = mpsc::channel(config.limits.accept_queue.max(1));
        let inner = Arc::new(Inner {
            node_id: config.identity.node_id(),
            keys,
            pending: Arc::new(Semaphore::new(config.limits.max_pending_handshakes)),
            state: watch::Sender::new(LinkState::Connecting {
                attempt: 0,
                last_error: None,
            }),
            conn: watch::Sender::new(None),
            home: Mutex::new(None),
            home_since: Mutex::new(None),
            slots: Mutex::new(HashMap::new()),
            down: Mutex::new(HashMap::new()),
            map_updates: watch::Sender::new(fleet.as_ref().and_then(|f| {
                f.map
                    .lock()
                    .ok()
                    .and_then(|m| m.as_ref().map(|m| m.1.clone()))
            })),
            fleet,
            changed: Notify::new(),
            endpoint: endpoint.clone(),
            tasks: Mutex::new(JoinSet::new()),
            per_peer: Mutex::new(HashMap::new()),
            incoming: incoming_tx,
            revocations: tokio::sync::broadcast::channel(16).0,
            rotations: tokio::sync::broadcast::channel(16).0,
            join: Mutex::new(config.join.clone()),
            drain: Drain::default(),
            config,
        });
        let span = tracing::info_span!("node", id = %inner.node_id.fmt_short());
        // Expired resumption secrets leave memory within SWEEP of expiry, used or not.
        if let Ok(mut tasks) = inner.tasks.lock() {
            let keys = Arc::downgrade(&inner);
            tasks.spawn(async move {
                loop {
                    tokio::time::sleep(SWEEP).await;
                    let Some(inner) = keys.upgrade() else { return };
                    inner.keys.sessions().sweep(std::time::Instant::now());
                }
            });
        }
        let link = tokio::spawn(fleet::manage(inner.clone()).instrument(span));
        Ok(Node {
            inner,
            incoming: tokio::sync::Mutex::new(incoming_rx),
            endpoint,
            link,
        })
    }

    /// This node's identity.
    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    /// Forgets the resumption secrets shared with `peer` (the daemon calls it when the
    /// peer's key is revoked or rotated away): its next channel, either way, runs the full
    /// handshake. Every channel, resumed or not, is still decided by the callee's policy, so
    /// a peer that is only denied a service (`deny`, a policy edit) gains nothing by resuming.
    pub fn forget_sessions(&self, peer: &NodeId) {
        self.inner.keys.sessions().forget(peer);
    }

    /// Resumption secrets held: (as caller, as callee).
    pub fn resumption_secrets(&self) -> (usize, usize) {
        self.inner.keys.sessions().len()
    }

    /// The relay link's state now.
    pub fn state(&self) -> LinkState {
        self.inner.state.borrow().clone()
    }

    /// A receiver that sees every change of the link state.
    pub fn watch_state(&self) -> watch::Receiver<LinkState> {
        self.inner.state.subscribe()
    }

    /// Waits until the relay admitted this node, or fails with the reason it did not.
    pub async fn wait_online(&self, within: Duration) -> Result<(), Error> {
        wait_connection(&self.inner, within).await.map(drop)
    }

    /// Opens a channel to `service` on `target`.
    pub async fn dial(&self, target: NodeId, service: &str) -> Result<Channel, Error> {
        self.dial_with(target, service, Vec::new()).await
    }

    /// Opens a channel, presenting `blob` (capability tokens) in the handshake.
    pub async fn dial_with(
        &self,
        target: NodeId,
        service: &str,
        blob: Vec<u8>,
    ) -> Result<Channel, Error> {
        self.dial_sending(target, service, blob, FirstBytes::Bytes(Vec::new()))
            .await
    }

    /// Opens a channel like [`Node::dial_with`] and sends `first` in the same packet as the
    /// handshake's last message: the callee's first answer can arrive one round trip sooner
    /// than after a dial and a write. `first` is bytes, or a way to read whatever is ready
    /// at that moment (for a socket whose client is still sending; see [`FirstBytes`]).
    ///
    /// The bytes leave only once the handshake has proven the callee (and goes on to prove
    /// this node); the callee reads them only after it accepted, as the channel's first
    /// data. On a denial they are dropped unread and this returns [`Error::Denied`], as
    /// `dial_with` does. Like any write whose answer never came, an error after they left
    /// (a lost link, no verdict in time) cannot tell whether the callee read them; this
    /// dial is then not tried again through another relay of a fleet.
    pub async fn dial_sending(
        &self,
        target: NodeId,
        service: &str,
        blob: Vec<u8>,
        first: FirstBytes<'_>,
    ) -> Result<Channel, Error> {
        let service = ServiceName::new(service)?;
        if target == self.inner.node_id {
            return Err(nullport_protocol::Error::SelfDial.into());
        }
        if let FirstBytes::Bytes(bytes) = &first
            && bytes.len() > nullport_protocol::limits::MAX_FIRST_BYTES
        {
            return Err(nullport_protocol::Error::TooLarge {
                what: "first bytes of a dial",
                len: bytes.len(),
                max: nullport_protocol::limits::MAX_FIRST_BYTES,
            }
            .into());
        }
        let ask = dial::Ask {
            service,
            blob,
            first: crate::handshake::First::new(first),
        };
        let inner = &self.inner;
        let span = tracing::debug_span!("dial", peer = %target.fmt_short(), service = %ask.service);
        let in_fleet = inner
            .fleet
            .as_ref()
            .is_some_and(|f| f.map.lock().is_ok_and(|m| m.is_some()));
        timeout(
            inner.config.limits.dial_timeout,
            async {
                if in_fleet {
                    dial::dial_fleet(inner, target, &ask).await
                } else {
                    dial::dial_home(inner, target, &ask).await
                }
            }
            .instrument(span),
        )
        .await
        .map_err(|_| Error::Timeout { what: "dial" })?
    }

    /// The next authenticated incoming channel, waiting for a decision. `None` once the node
    /// is shut down.
    pub async fn accept(&self) -> Option<IncomingChannel> {
        self.incoming.lock().await.recv().await
    }

    /// Serves incoming channels until the node shuts down: each authenticated caller for a
    /// service in `handlers` that `allow(peer, service)` admits is accepted and handed to
    /// that service's handler on its own task; others are denied (unknown service, or not
    /// allowed). For custom agents that expose tools without the daemon.
    pub async fn serve<A>(&self, handlers: Handlers, allow: A)
    where
        A: Fn(NodeId, &str) -> bool + Send + Sync + 'static,
    {
        // Every task started here belongs to this set: finished ones are reaped as they end,
        // the rest stop when serving stops.
        let mut running = JoinSet::new();
        loop {
            let incoming = tokio::select! {
                incoming = self.accept() => match incoming {
                    Some(incoming) => incoming,
                    None => break,
                },
                Some(_) = running.join_next() => continue,
            };
            let Some(handler) = handlers.map.get(incoming.service()).cloned() else {
                running.spawn(async move {
                    let _ = incoming.deny(DenyReason::UnknownService).await;
                });
                continue;
            };
            if !allow(incoming.peer(), incoming.service()) {
                running.spawn(async move {
                    let _ = incoming.deny(DenyReason::NotAllowed).await;
                });
                continue;
            }
            let peer = incoming.peer();
            running.spawn(
                async move {
                    match incoming.accept().await {
                        Ok(channel) => handler(channel).await,
                        Err(e) => tracing::info!(peer = %peer.fmt_short(), "accept failed: {e}"),
                    }
                }
                .in_current_span(),
            );
        }
    }

    /// Asks the relay whether `target` is online (a fleet node: each relay of the target's
    /// order that this node is linked to, until one holds it).
    pub async fn presence(&self, target: NodeId) -> Result<bool, Error> {
        let ask = |answer: RelayToNode| match answer {
            RelayToNode::Presence { target: t, online } if t == target => Ok(online),
            RelayToNode::Error { code } => Err(Error::Link(code)),
            _ => Err(Error::Link(LinkErrorCode::Malformed)),
        };
        let home = ask(self
            .control_request(NodeToRelay::Presence { target })
            .await?)?;
        if home || self.inner.fleet.is_none() {
            return Ok(home);
        }
        for relay in self.inner.relay_order(&target) {
            let slot = self
                .inner
                .slots
                .lock()
                .ok()
                .and_then(|s| s.get(&relay.node_id).cloned());
            let Some(slot) = slot.filter(|s| s.connection().is_some()) else {
                continue;
            };
            let mut answers =
                slot_exchange(&self.inner, &slot, NodeToRelay::Presence { target }).await?;
            if let Some(answer) = answers.pop()
                && ask(answer)?
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The newest relay map this fleet node holds (verified under its admin key), to keep
    /// for the next start ([`NodeConfig::relay_map`]); none for a lone-relay node.
    pub fn relay_map(&self) -> Option<SignedRelayMap> {
        self.inner.map_updates.borrow().clone()
    }

    /// The relay map in force, as the node verified it when it took it (what it says, and
    /// its signed form); none for a lone-relay node or before the first map.
    pub fn relay_map_in_force(
        &self,
    ) -> Option<(nullport_keyring::relay_map::RelayMap, SignedRelayMap)> {
        self.inner
            .fleet
            .as_ref()
            .and_then(|f| f.map.lock().ok().and_then(|m| m.clone()))
    }

    /// A receiver that sees each newer relay map the node takes.
    pub fn watch_relay_map(&self) -> watch::Receiver<Option<SignedRelayMap>> {
        self.inner.map_updates.subscribe()
    }

    /// The relay this node is homed on now (none while it has no link up).
    pub fn home_relay(&self) -> Option<NodeId> {
        self.inner
            .home_slot()
            .filter(|s| s.connection().is_some())
            .map(|s| s.relay_id())
    }

    /// The relays this node holds a link to (up or being connected), and whether each is up.
    pub fn relay_links(&self) -> Vec<(NodeId, bool)> {
        self.inner
            .slots
            .lock()
            .map(|slots| {
                slots
                    .values()
                    .filter(|s| !s.is_retired())
                    .map(|s| (s.relay_id(), s.connection().is_some()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Sends an audit checkpoint to the relay to be countersigned and kept.
    pub async fn witness(
        &self,
        checkpoint: WitnessedCheckpoint,
    ) -> Result<WitnessedCheckpoint, Error> {
        match self
            .control_request(NodeToRelay::Witness { checkpoint })
            .await?
        {
            RelayToNode::Witnessed {
                checkpoint: Some(cp),
            } => Ok(cp),
            RelayToNode::Error { code } => Err(Error::Link(code)),
            _ => Err(Error::Link(LinkErrorCode::Malformed)),
        }
    }

    /// The latest checkpoint of this node that the relay witnessed.
    pub async fn witnessed(&self) -> Result<Option<WitnessedCheckpoint>, Error> {
        match self.control_request(NodeToRelay::WitnessQuery).await? {
            RelayToNode::Witnessed { checkpoint } => Ok(checkpoint),
            RelayToNode::Error { code } => Err(Error::Link(code)),
            _ => Err(Error::Link(LinkErrorCode::Malformed)),
        }
    }

    /// The NodeId of the configured relay (a fleet node: the bootstrap relay; see
    /// [`Node::home_relay`] for where it is homed).
    pub fn relay_id(&self) -> NodeId {
        self.inner.config.relay.node_id
    }

    async fn control_request(&self, request: NodeToRelay) -> Result<RelayToNode, Error> {
        control_request(&self.inner, request).await
    }

    /// Publishes a signed revocation list through the relay (which pushes it to every node).
    pub async fn publish_revocations(&self, list: SignedRevocations) -> Result<(), Error> {
        match self
            .control_request(NodeToRelay::PublishRevocations { list })
            .await?
        {
            RelayToNode::Revocations { .. } => Ok(()),
            RelayToNode::Error { code } => Err(Error::Link(code)),
            _ => Err(Error::Link(LinkErrorCode::Malformed)),
        }
    }

    /// Publishes a key rotation of this node (signed by the old and new keys) through the relay.
    pub async fn publish_rotation(&self, rotation: SignedRotation) -> Result<(), Error> {
        match self
            .control_request(NodeToRelay::PublishRotation { rotation })
            .await?
        {
            RelayToNode::Rotations { .. } => Ok(()),
            RelayToNode::Error { code } => Err(Error::Link(code)),
            _ => Err(Error::Link(LinkErrorCode::Malformed)),
        }
    }

    /// Every revocation list the relay holds (all pages), unverified here.
    pub async fn revocation_lists(&self) -> Result<Vec<SignedRevocations>, Error> {
        let pages = control_exchange(&self.inner, NodeToRelay::RevocationQuery).await?;
        Ok(collect_pages(pages).0)
    }

    /// Every key rotation the relay holds (unverified here: check each with
    /// `nullport_keyring::rotation::verify_signed`).
    pub async fn rotations(&self) -> Result<Vec<SignedRotation>, Error> {
        let pages = control_exchange(&self.inner, NodeToRelay::RotationQuery).await?;
        Ok(collect_pages(pages).1)
    }

    /// Key rotations as they arrive from the relay (unverified here).
    pub fn rotation_updates(&self) -> tokio::sync::broadcast::Receiver<Vec<SignedRotation>> {
        self.inner.rotations.subscribe()
    }

    /// Revocation lists as they arrive from the relay (all held at each connect, then each
    /// new one). Lists are unverified here: the receiver checks signatures and trust.
    pub fn revocation_updates(&self) -> tokio::sync::broadcast::Receiver<Vec<SignedRevocations>> {
        self.inner.revocations.subscribe()
    }

    /// Closes the relay link cleanly without consuming the node: first waits (up to two
    /// seconds) until the relay has acknowledged the last bytes of every finished channel
    /// (close and abort frames, denials), since closing the connection discards what is
    /// still unsent.
    pub async fn close(&self) {
        self.inner.drain.settle(CLOSE_SETTLE).await;
        self.link.abort();
        self.stop_links();
        self.endpoint
            .close(close_code::NORMAL.into(), b"node shutting down");
        let _ = timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }

    /// Closes the relay link cleanly (as [`Node::close`]) and stops.
    pub async fn shutdown(self) {
        self.close().await;
    }
}

/// Longest [`Node::close`] waits for finished channels' last bytes to be acknowledged.
const CLOSE_SETTLE: Duration = Duration::from_secs(2);

impl Node {
    /// Stops every link task (they hold the node's state, so they are stopped explicitly).
    fn stop_links(&self) {
        if let Ok(mut tasks) = self.inner.tasks.lock() {
            tasks.abort_all();
        }
        if let Ok(mut slots) = self.inner.slots.lock() {
            slots.clear();
        }
        if let Ok(mut home) = self.inner.home.lock() {
            *home = None;
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.link.abort();
        self.stop_links();
        self.endpoint
            .close(close_code::NORMAL.into(), b"node shutting down");
    }
}
