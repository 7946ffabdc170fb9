//! [`Node`]: the embeddable API. One outbound relay link, dials out, accepts in.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nullport_protocol::relay_link::{
    LINK_VERSION, LinkErrorCode, MAX_CONTROL_MESSAGE, MAX_LINK_MESSAGE, NodeToRelay, RelayToNode,
    SignedRevocations, SignedRotation, TLS_ACCESS_DENIED, WitnessedCheckpoint, close_code,
};
use nullport_protocol::{
    DenyReason, DialRequest, HandshakeKeys, Identity, Limits, NodeId, ServiceName,
};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tracing::Instrument;

use crate::backoff::Backoff;
use crate::channel::Channel;
use crate::error::Error;
use crate::handshake::{IncomingChannel, initiate, respond};
use crate::link::{read_message, write_message};
use crate::relay_addr::RelayAddr;
use crate::tls::{PresentedKey, client_crypto};

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

/// The state of the relay link, as a person would want to see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// Not (yet, or no longer) connected; retrying with backoff.
    Connecting {
        /// Attempts since the last success.
        attempt: u32,
        /// Why the last attempt or connection failed.
        last_error: Option<String>,
    },
    /// Connected and admitted.
    Online,
    /// The relay refused this node (or the relay key did not match); still retrying, slowly.
    Refused {
        /// Why.
        reason: String,
    },
}

/// Bounds and timings of a node. `Default` gives safe values.
#[derive(Debug, Clone)]
pub struct NodeLimits {
    /// End-to-end handshake limits (deadline, rekey interval).
    pub handshake: Limits,
    /// Time to connect to the relay and be admitted.
    pub connect_timeout: Duration,
    /// Total time a dial may take, including waiting for the relay link.
    pub dial_timeout: Duration,
    /// Incoming handshakes in progress at once.
    pub max_pending_handshakes: usize,
    /// Incoming handshakes in progress at once from one caller.
    pub max_pending_per_peer: usize,
    /// Authenticated channels waiting for [`Node::accept`]; over it, callers are denied
    /// with "unavailable".
    pub accept_queue: usize,
    /// Reconnect backoff: first wait.
    pub backoff_min: Duration,
    /// Reconnect backoff: longest wait.
    pub backoff_max: Duration,
    /// Reconnect backoff after the relay refused this node.
    pub refused_backoff_max: Duration,
    /// QUIC keep-alive interval towards the relay.
    pub keep_alive: Duration,
    /// Relay link considered dead after this much silence.
    pub idle_timeout: Duration,
    /// Streams the relay may open to this node at once (incoming dials).
    pub max_incoming_streams: u32,
    /// Time a control request to the relay (presence, witness, publish, catch-up) may take.
    pub control_timeout: Duration,
    /// Reconnect backoff after another connection with this identity superseded this one.
    pub superseded_backoff: Duration,
}

impl Default for NodeLimits {
    fn default() -> Self {
        Self {
            handshake: Limits::default(),
            connect_timeout: Duration::from_secs(5),
            dial_timeout: Duration::from_secs(15),
            max_pending_handshakes: 256,
            max_pending_per_peer: 32,
            accept_queue: 64,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            refused_backoff_max: Duration::from_secs(30),
            keep_alive: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_incoming_streams: 256,
            control_timeout: Duration::from_secs(10),
            superseded_backoff: Duration::from_secs(30),
        }
    }
}

/// What a node needs to start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The node's identity.
    pub identity: Arc<Identity>,
    /// The relay to dial out to.
    pub relay: RelayAddr,
    /// Bounds and timings.
    pub limits: NodeLimits,
    /// Local UDP address for the client socket (default: any address, ephemeral port). This
    /// is a source address, never a listener.
    pub bind: Option<SocketAddr>,
    /// An enrollment invite to present instead of `Hello` on the first admission (a relay in
    /// allowlist mode then adds this node).
    pub join: Option<Vec<u8>>,
}

impl NodeConfig {
    /// A config with default limits.
    pub fn new(identity: Arc<Identity>, relay: RelayAddr) -> Self {
        Self {
            identity,
            relay,
            limits: NodeLimits::default(),
            bind: None,
            join: None,
        }
    }
}

struct Inner {
    node_id: NodeId,
    keys: HandshakeKeys,
    config: NodeConfig,
    client: quinn::ClientConfig,
    presented: PresentedKey,
    state: watch::Sender<LinkState>,
    conn: watch::Sender<Option<quinn::Connection>>,
    control: tokio::sync::Mutex<Option<(quinn::SendStream, quinn::RecvStream)>>,
    pending: Arc<Semaphore>,
    per_peer: Mutex<HashMap<NodeId, usize>>,
    incoming: mpsc::Sender<IncomingChannel>,
    revocations: tokio::sync::broadcast::Sender<Vec<SignedRevocations>>,
    rotations: tokio::sync::broadcast::Sender<Vec<SignedRotation>>,
    join: Mutex<Option<Vec<u8>>>,
}

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
        let presented: PresentedKey = Arc::default();
        let crypto = client_crypto(&config.identity, config.relay.node_id, presented.clone())?;
        let mut client = quinn::ClientConfig::new(Arc::new(crypto));
        client.transport_config(Arc::new(transport_config(&config.limits)));
        let relay_ip = config
            .relay
            .resolve()
            .await
            .ok()
            .and_then(|a| a.first().copied());
        let bind: SocketAddr = match (config.bind, relay_ip) {
            (Some(bind), _) => bind,
            (None, Some(SocketAddr::V6(_))) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
            (None, _) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        };
        let endpoint = quinn::Endpoint::client(bind)
            .map_err(|e| Error::Setup(format!("binding UDP {bind}: {e}")))?;
        let (incoming_tx, incoming_rx) = mpsc::channel(config.limits.accept_queue.max(1));
        let inner = Arc::new(Inner {
            node_id: config.identity.node_id(),
            keys,
            pending: Arc::new(Semaphore::new(config.limits.max_pending_handshakes)),
            client,
            presented,
            state: watch::Sender::new(LinkState::Connecting {
                attempt: 0,
                last_error: None,
            }),
            conn: watch::Sender::new(None),
            control: tokio::sync::Mutex::new(None),
            per_peer: Mutex::new(HashMap::new()),
            incoming: incoming_tx,
            revocations: tokio::sync::broadcast::channel(16).0,
            rotations: tokio::sync::broadcast::channel(16).0,
            join: Mutex::new(config.join.clone()),
            config,
        });
        let span = tracing::info_span!("node", id = %inner.node_id.fmt_short());
        let link = tokio::spawn(run_link(inner.clone(), endpoint.clone()).instrument(span));
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
        let service = ServiceName::new(service)?;
        if target == self.inner.node_id {
            return Err(nullport_protocol::Error::SelfDial.into());
        }
        let inner = &self.inner;
        let limits = &inner.config.limits;
        let span = tracing::debug_span!("dial", peer = %target.fmt_short(), %service);
        timeout(
            limits.dial_timeout,
            async {
                let conn = wait_connection(inner, limits.dial_timeout).await?;
                let (mut send, mut recv) = conn.open_bi().await.map_err(|e| describe(&e))?;
                write_message(&mut send, &NodeToRelay::Dial { target }, MAX_LINK_MESSAGE).await?;
                let session = match read_message::<RelayToNode>(&mut recv, MAX_LINK_MESSAGE).await?
                {
                    RelayToNode::Dialed { session } => session,
                    RelayToNode::Error {
                        code: LinkErrorCode::Offline,
                    } => return Err(Error::PeerOffline(target)),
                    RelayToNode::Error { code } => return Err(Error::Link(code)),
                    _ => return Err(Error::Link(LinkErrorCode::Malformed)),
                };
                let request = DialRequest {
                    expected: target,
                    session,
                    service,
                    blob,
                };
                initiate(&inner.keys, request, limits.handshake, send, recv).await
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
        while let Some(incoming) = self.accept().await {
            let Some(handler) = handlers.map.get(incoming.service()).cloned() else {
                tokio::spawn(incoming.deny(DenyReason::UnknownService));
                continue;
            };
            if !allow(incoming.peer(), incoming.service()) {
                tokio::spawn(incoming.deny(DenyReason::NotAllowed));
                continue;
            }
            let peer = incoming.peer();
            tokio::spawn(async move {
                match incoming.accept().await {
                    Ok(channel) => handler(channel).await,
                    Err(e) => tracing::info!(peer = %peer.fmt_short(), "accept failed: {e}"),
                }
            });
        }
    }

    /// Asks the relay whether `target` is online.
    pub async fn presence(&self, target: NodeId) -> Result<bool, Error> {
        match self
            .control_request(NodeToRelay::Presence { target })
            .await?
        {
            RelayToNode::Presence { target: t, online } if t == target => Ok(online),
            RelayToNode::Error { code } => Err(Error::Link(code)),
            _ => Err(Error::Link(LinkErrorCode::Malformed)),
        }
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

    /// The pinned relay's NodeId.
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

    /// Key rotations as they arrive from the relay (unverified here).
    pub fn rotation_updates(&self) -> tokio::sync::broadcast::Receiver<Vec<SignedRotation>> {
        self.inner.rotations.subscribe()
    }

    /// Revocation lists as they arrive from the relay (all held at each connect, then each
    /// new one). Lists are unverified here: the receiver checks signatures and trust.
    pub fn revocation_updates(&self) -> tokio::sync::broadcast::Receiver<Vec<SignedRevocations>> {
        self.inner.revocations.subscribe()
    }

    /// Closes the relay link (after a grace period for bytes already written, such as close
    /// frames, to leave) without consuming the node.
    pub async fn close(&self, grace: Duration) {
        tokio::time::sleep(grace).await;
        self.link.abort();
        self.endpoint
            .close(close_code::NORMAL.into(), b"node shutting down");
        let _ = timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }

    /// Closes the relay link cleanly and stops.
    pub async fn shutdown(self) {
        self.link.abort();
        self.endpoint
            .close(close_code::NORMAL.into(), b"node shutting down");
        let _ = timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.link.abort();
        self.endpoint
            .close(close_code::NORMAL.into(), b"node shutting down");
    }
}

fn transport_config(limits: &NodeLimits) -> quinn::TransportConfig {
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

async fn control_request(inner: &Inner, request: NodeToRelay) -> Result<RelayToNode, Error> {
    let mut answers = control_exchange(inner, request).await?;
    answers.pop().ok_or(Error::Link(LinkErrorCode::Malformed))
}

/// Sends one control request and reads its answer: one message, or every page of a paged
/// answer (`Revocations`/`Rotations` with `more`). Bounded in time: a relay that does not
/// answer within the deadline loses the control stream (the link is closed and reconnects,
/// since a half-read answer would leave the stream out of step).
async fn control_exchange(inner: &Inner, request: NodeToRelay) -> Result<Vec<RelayToNode>, Error> {
    let limit = inner.config.limits.control_timeout;
    wait_connection(inner, inner.config.limits.connect_timeout).await?;
    let mut control = inner.control.lock().await;
    let exchanged = timeout(limit, async {
        let (send, recv) = control.as_mut().ok_or(Error::RelayLinkLost {
            reason: "no control stream".into(),
        })?;
        write_message(send, &request, MAX_CONTROL_MESSAGE).await?;
        read_pages(recv).await
    })
    .await;
    match exchanged {
        Ok(answers) => answers,
        Err(_) => {
            *control = None;
            if let Some(conn) = inner.conn.borrow().clone() {
                conn.close(close_code::NORMAL.into(), b"control request timed out");
            }
            Err(Error::Timeout {
                what: "relay control request",
            })
        }
    }
}

/// Reads one message from `recv`, and the pages that follow it when it says `more`.
async fn read_pages(recv: &mut quinn::RecvStream) -> Result<Vec<RelayToNode>, Error> {
    let mut pages = Vec::new();
    loop {
        let message = read_message::<RelayToNode>(recv, MAX_CONTROL_MESSAGE).await?;
        let more = matches!(
            message,
            RelayToNode::Revocations { more: true, .. } | RelayToNode::Rotations { more: true, .. }
        );
        pages.push(message);
        if !more {
            return Ok(pages);
        }
        if pages.len() > MAX_PAGES {
            return Err(Error::Link(LinkErrorCode::TooLarge));
        }
    }
}

/// Pages of one paged answer a node reads at most (4 GiB at the relay's page size).
const MAX_PAGES: usize = 8192;

/// Splits paged answers into the revocation lists and the rotations they carry.
fn collect_pages(pages: Vec<RelayToNode>) -> (Vec<SignedRevocations>, Vec<SignedRotation>) {
    let (mut lists, mut rotations) = (Vec::new(), Vec::new());
    for page in pages {
        match page {
            RelayToNode::Revocations { lists: l, .. } => lists.extend(l),
            RelayToNode::Rotations { rotations: r, .. } => rotations.extend(r),
            _ => {}
        }
    }
    (lists, rotations)
}

async fn wait_connection(inner: &Inner, within: Duration) -> Result<quinn::Connection, Error> {
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
fn describe(e: &quinn::ConnectionError) -> Error {
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

async fn connect_once(
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

async fn run_link(inner: Arc<Inner>, endpoint: quinn::Endpoint) {
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

async fn serve_incoming(inner: &Arc<Inner>, conn: &quinn::Connection) -> Error {
    loop {
        match conn.accept_bi().await {
            Ok((send, recv)) => {
                tokio::spawn(handle_incoming(inner.clone(), send, recv).in_current_span());
            }
            Err(e) => return describe(&e),
        }
    }
}

/// Decrements a caller's pending-handshake count when dropped.
struct PeerSlot<'a> {
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

async fn handle_incoming(
    inner: Arc<Inner>,
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
            // A push from the relay: new revocation lists or rotations.
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
    let span = tracing::info_span!("incoming", peer = %caller.fmt_short(), %session);
    async {
        let Ok(_permit) = inner.pending.clone().try_acquire_owned() else {
            tracing::warn!("too many handshakes in progress; refusing");
            let _ = send.reset(0u32.into());
            return;
        };
        let slot = {
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
            respond(&inner.keys, caller, session, limits.handshake, send, recv),
        )
        .await;
        drop(slot);
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
