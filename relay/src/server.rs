//! The relay server: QUIC accept loop, admission, routing, dials.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use nullport_protocol::relay_link::{
    LINK_VERSION, LinkErrorCode, MAX_CONTROL_MESSAGE, NodeToRelay, RelayToNode, SignedRevocations,
    SignedRotation, WitnessedCheckpoint, close_code,
};
use nullport_protocol::{NodeId, SessionId};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout, timeout_at};
use tracing::Instrument;

use crate::admission::Admission;
use crate::config::{RelayConfig, RelayLimits};
use crate::error::Error;
use crate::link::{ReadError, read_message, write_message};
use crate::metrics::Metrics;
use crate::rate::RateLimiter;
use crate::splice::{From, pump};
use crate::tls;

/// A running relay. Dropping it stops accepting and closes every connection.
#[derive(Debug)]
pub struct Relay {
    endpoint: quinn::Endpoint,
    local_addr: SocketAddr,
    node_id: NodeId,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

struct Route {
    conn: quinn::Connection,
    generation: u64,
}

/// State shared by every connection task.
pub(crate) struct Shared {
    pub(crate) limits: RelayLimits,
    pub(crate) admission: Arc<Admission>,
    pub(crate) metrics: Arc<Metrics>,
    routes: DashMap<NodeId, Route>,
    dial_limiter: RateLimiter,
    pub(crate) byte_limiter: RateLimiter,
    next_session: AtomicU64,
    next_generation: AtomicU64,
    identity: Arc<nullport_protocol::Identity>,
    witnessed: DashMap<NodeId, WitnessedCheckpoint>,
    revocations: DashMap<NodeId, (u64, SignedRevocations)>,
    invite_uses: DashMap<[u8; 16], u32>,
    rotations: DashMap<NodeId, SignedRotation>,
    witness_file: Option<std::path::PathBuf>,
    pending_per_ip: Mutex<HashMap<IpAddr, usize>>,
    #[cfg(feature = "testing")]
    hooks: crate::testing::TestHooks,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("online", &self.routes.len())
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// The chunks to forward for `chunk`, and whether to end the direction after them.
    #[cfg(feature = "testing")]
    pub(crate) fn hook_chunk(
        &self,
        session: SessionId,
        side: From,
        chunk: Bytes,
    ) -> (Vec<Bytes>, bool) {
        use crate::testing::Direction;
        match &self.hooks.splice {
            Some(h) => {
                let d = match side {
                    From::Caller => Direction::CallerToTarget,
                    From::Target => Direction::TargetToCaller,
                };
                let out = h.on_chunk(session, d, chunk);
                (out.chunks, out.finish)
            }
            None => (vec![chunk], false),
        }
    }

    /// The chunks to forward for `chunk` (always just itself without the `testing` feature).
    #[cfg(not(feature = "testing"))]
    pub(crate) fn hook_chunk(
        &self,
        _s: SessionId,
        _side: From,
        chunk: Bytes,
    ) -> (Vec<Bytes>, bool) {
        (vec![chunk], false)
    }

    #[cfg(feature = "testing")]
    fn route_target(&self, target: NodeId) -> NodeId {
        match self.hooks.reroute {
            Some((from, to)) if from == target => to,
            _ => target,
        }
    }

    #[cfg(not(feature = "testing"))]
    fn route_target(&self, target: NodeId) -> NodeId {
        target
    }

    #[cfg(feature = "testing")]
    fn caller_label(&self, caller: NodeId) -> NodeId {
        self.hooks.relabel_caller.unwrap_or(caller)
    }

    #[cfg(not(feature = "testing"))]
    fn caller_label(&self, caller: NodeId) -> NodeId {
        caller
    }
}

/// Counts a connection as pending (globally and for its source IP) until dropped.
struct PendingGuard {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl PendingGuard {
    fn try_new(shared: &Arc<Shared>, ip: IpAddr) -> Option<Self> {
        let mut per_ip = shared.pending_per_ip.lock().ok()?;
        let total = shared.metrics.pending.load(Ordering::Relaxed) as usize;
        let online = shared.metrics.nodes_online.load(Ordering::Relaxed) as usize;
        let mine = per_ip.entry(ip).or_insert(0);
        if total >= shared.limits.max_pending
            || *mine >= shared.limits.max_pending_per_ip
            || online >= shared.limits.max_connections
        {
            if *mine == 0 {
                per_ip.remove(&ip);
            }
            return None;
        }
        *mine += 1;
        shared.metrics.pending.fetch_add(1, Ordering::Relaxed);
        Some(Self {
            shared: shared.clone(),
            ip,
        })
    }
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.shared.metrics.pending.fetch_sub(1, Ordering::Relaxed);
        if let Ok(mut per_ip) = self.shared.pending_per_ip.lock()
            && let Some(n) = per_ip.get_mut(&self.ip)
        {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

impl Relay {
    /// Binds the UDP socket and starts serving.
    pub async fn bind(config: RelayConfig) -> Result<Relay, Error> {
        let crypto = tls::server_crypto(&config.identity, config.admission.clone())?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server.transport_config(Arc::new(config.limits.transport_config()));
        let socket =
            udp_socket(config.listen, config.limits.socket_buffer).map_err(|error| Error::Io {
                what: format!("binding UDP {}", config.listen),
                error,
            })?;
        let runtime = quinn::default_runtime().ok_or_else(|| Error::Io {
            what: "starting QUIC".into(),
            error: std::io::Error::other("no async runtime"),
        })?;
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server),
            socket,
            runtime,
        )
        .map_err(|error| Error::Io {
            what: format!("binding UDP {}", config.listen),
            error,
        })?;
        let local_addr = endpoint.local_addr().map_err(|error| Error::Io {
            what: "reading local address".into(),
            error,
        })?;
        let shared = Arc::new(Shared {
            dial_limiter: RateLimiter::new(
                config.limits.dials_per_second,
                config.limits.dial_burst,
            ),
            byte_limiter: RateLimiter::new(
                config.limits.bytes_per_second,
                config.limits.byte_burst,
            ),
            limits: config.limits,
            admission: config.admission,
            metrics: Arc::new(Metrics::default()),
            routes: DashMap::new(),
            next_session: AtomicU64::new(initial_session()),
            next_generation: AtomicU64::new(1),
            identity: config.identity.clone(),
            witnessed: load_witnesses(config.state_dir.as_deref()),
            revocations: load_revocations(config.state_dir.as_deref()),
            invite_uses: load_invite_uses(config.state_dir.as_deref()),
            rotations: load_rotations(config.state_dir.as_deref()),
            witness_file: config.state_dir.as_ref().map(|d| d.join("witnessed.json")),
            pending_per_ip: Mutex::new(HashMap::new()),
            #[cfg(feature = "testing")]
            hooks: config.testing,
        });
        let node_id = config.identity.node_id();
        let accept = tokio::spawn(accept_loop(endpoint.clone(), shared.clone()));
        tracing::info!(relay = %node_id, %local_addr, open = shared.admission.is_open(), "relay listening");
        Ok(Relay {
            endpoint,
            local_addr,
            node_id,
            shared,
            tasks: vec![accept],
        })
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The relay's NodeId (what nodes pin).
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The address nodes use: `<relay NodeId>@<host:port>`.
    pub fn address(&self) -> String {
        format!("{}@{}", self.node_id, self.local_addr)
    }

    /// The relay's counters.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.shared.metrics.clone()
    }

    /// Prometheus text of the current counters.
    pub fn render_metrics(&self) -> String {
        self.shared.metrics.render(self.shared.admission.refusals())
    }

    /// Serves Prometheus metrics on `addr` (TCP); returns the bound address.
    pub async fn serve_metrics(&mut self, addr: SocketAddr) -> Result<SocketAddr, Error> {
        let listener = crate::metrics::bind(addr).await?;
        let bound = listener.local_addr().map_err(|error| Error::Io {
            what: "reading metrics address".into(),
            error,
        })?;
        self.tasks.push(tokio::spawn(crate::metrics::serve(
            listener,
            self.shared.metrics.clone(),
            self.shared.admission.clone(),
        )));
        Ok(bound)
    }

    /// Whether `id` is connected now.
    pub fn is_online(&self, id: &NodeId) -> bool {
        self.shared.routes.contains_key(id)
    }

    /// Closes every connection ("relay shutting down") and waits (bounded) for the socket to
    /// drain.
    pub async fn shutdown(mut self) {
        self.endpoint
            .close(close_code::SHUTDOWN.into(), b"relay shutting down");
        let _ = timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        for task in self.tasks.drain(..) {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        self.endpoint
            .close(close_code::SHUTDOWN.into(), b"relay shutting down");
    }
}

/// A UDP socket bound to `addr` with `buffer` bytes of kernel receive and send buffer
/// (as much of it as the kernel allows).
fn udp_socket(addr: SocketAddr, buffer: usize) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    let _ = socket.set_recv_buffer_size(buffer);
    let _ = socket.set_send_buffer_size(buffer);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Session ids start at a random point so that a restarted relay does not reuse recent ones.
fn initial_session() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t.rotate_left(17) ^ u64::from(std::process::id())
}

async fn accept_loop(endpoint: quinn::Endpoint, shared: Arc<Shared>) {
    while let Some(incoming) = endpoint.accept().await {
        let remote = incoming.remote_address();
        let Some(guard) = PendingGuard::try_new(&shared, remote.ip()) else {
            shared
                .metrics
                .admission_refused
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%remote, "refusing connection: over a connection limit");
            incoming.refuse();
            continue;
        };
        let span = tracing::info_span!("conn", %remote);
        tokio::spawn(handle_incoming(shared.clone(), incoming, guard).instrument(span));
    }
}

async fn handle_incoming(shared: Arc<Shared>, incoming: quinn::Incoming, guard: PendingGuard) {
    let deadline = Instant::now() + shared.limits.admission_deadline;
    let refused = || {
        shared
            .metrics
            .admission_refused
            .fetch_add(1, Ordering::Relaxed);
    };
    let Ok(connecting) = incoming.accept() else {
        refused();
        return;
    };
    let conn = match timeout_at(deadline, connecting).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::debug!("handshake failed: {e}");
            refused();
            return;
        }
        Err(_) => {
            tracing::debug!("admission deadline passed during handshake");
            refused();
            return;
        }
    };
    let Some(node_id) = tls::peer_node_id(&conn) else {
        conn.close(close_code::NOT_ADMITTED.into(), b"no valid node key");
        refused();
        return;
    };
    // The verifier admitted it (or let it in to enroll); check again in case the allowlist
    // changed since.
    let admitted = shared.admission.admits(&node_id);
    if !admitted && !shared.admission.enrolling() {
        conn.close(close_code::NOT_ADMITTED.into(), b"not admitted");
        refused();
        return;
    }
    let (mut ctl_send, mut ctl_recv) = match timeout_at(deadline, conn.accept_bi()).await {
        Ok(Ok(streams)) => streams,
        _ => {
            conn.close(close_code::ADMISSION_TIMEOUT.into(), b"no hello in time");
            refused();
            return;
        }
    };
    let hello = timeout_at(
        deadline,
        read_message::<NodeToRelay>(&mut ctl_recv, shared.limits.max_link_message),
    )
    .await;
    match hello {
        Ok(Ok(NodeToRelay::Hello { version })) if version == LINK_VERSION && admitted => {}
        Ok(Ok(NodeToRelay::Join { invite, version })) if version == LINK_VERSION => {
            if let Err(code) = enroll(&shared, node_id, &invite) {
                tracing::info!(peer = %node_id.fmt_short(), "enrollment refused: {code}");
                let _ = write_message(&mut ctl_send, &RelayToNode::Error { code }).await;
                let _ = ctl_send.finish();
                tokio::time::sleep(Duration::from_millis(100)).await;
                conn.close(close_code::NOT_ADMITTED.into(), b"enrollment refused");
                refused();
                return;
            }
        }
        Ok(Ok(NodeToRelay::Hello { version })) if version == LINK_VERSION => {
            // Let in only to enroll, and it did not: refused, learning nothing.
            conn.close(close_code::NOT_ADMITTED.into(), b"not admitted");
            refused();
            return;
        }
        Ok(Ok(NodeToRelay::Hello { .. })) => {
            let _ = write_message(
                &mut ctl_send,
                &RelayToNode::Error {
                    code: LinkErrorCode::UnsupportedVersion,
                },
            )
            .await;
            conn.close(
                close_code::UNSUPPORTED_VERSION.into(),
                b"unsupported relay-link version",
            );
            refused();
            return;
        }
        Err(_) => {
            conn.close(close_code::ADMISSION_TIMEOUT.into(), b"no hello in time");
            refused();
            return;
        }
        Ok(_) => {
            conn.close(close_code::PROTOCOL_VIOLATION.into(), b"expected hello");
            refused();
            return;
        }
    }
    drop(guard);
    if write_message(
        &mut ctl_send,
        &RelayToNode::Welcome {
            version: LINK_VERSION,
            node_id,
        },
    )
    .await
    .is_err()
    {
        return;
    }
    let generation = shared.next_generation.fetch_add(1, Ordering::Relaxed);
    let old = shared.routes.insert(
        node_id,
        Route {
            conn: conn.clone(),
            generation,
        },
    );
    if let Some(old) = old {
        shared.metrics.superseded.fetch_add(1, Ordering::Relaxed);
        tracing::info!(peer = %node_id.fmt_short(), "newer connection supersedes the old one");
        old.conn.close(
            close_code::SUPERSEDED.into(),
            b"superseded by a newer connection",
        );
    } else {
        shared.metrics.nodes_online.fetch_add(1, Ordering::Relaxed);
    }
    shared.metrics.admitted.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!("node", peer = %node_id.fmt_short());
    serve_node(shared.clone(), node_id, conn, ctl_send, ctl_recv)
        .instrument(span)
        .await;
    let removed = shared
        .routes
        .remove_if(&node_id, |_, r| r.generation == generation);
    if removed.is_some() {
        shared.metrics.nodes_online.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve_node(
    shared: Arc<Shared>,
    node_id: NodeId,
    conn: quinn::Connection,
    ctl_send: quinn::SendStream,
    ctl_recv: quinn::RecvStream,
) {
    tracing::info!("node online");
    let control = tokio::spawn(
        control_stream(shared.clone(), node_id, conn.clone(), ctl_send, ctl_recv).in_current_span(),
    );
    // Dial streams open now (the control stream is one more).
    let open = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut granted = shared.limits.initial_streams();
    loop {
        match conn.accept_bi().await {
            Ok((send, recv)) => {
                let in_use = open.fetch_add(1, Ordering::Relaxed) + 2;
                if in_use * 2 > granted && granted < shared.limits.max_streams_per_node {
                    granted = (granted * 2).min(shared.limits.max_streams_per_node);
                    conn.set_max_concurrent_bi_streams(granted.into());
                }
                let span = tracing::debug_span!("dial");
                let (open, shared) = (open.clone(), shared.clone());
                tokio::spawn(
                    async move {
                        handle_dial(shared, node_id, send, recv).await;
                        open.fetch_sub(1, Ordering::Relaxed);
                    }
                    .instrument(span),
                );
            }
            Err(e) => {
                tracing::info!("node offline: {e}");
                break;
            }
        }
    }
    control.abort();
}

async fn control_stream(
    shared: Arc<Shared>,
    node_id: NodeId,
    conn: quinn::Connection,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    loop {
        match read_message::<NodeToRelay>(&mut recv, MAX_CONTROL_MESSAGE).await {
            Ok(NodeToRelay::Presence { target }) => {
                let online = target != node_id && shared.routes.contains_key(&target);
                if write_message(&mut send, &RelayToNode::Presence { target, online })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Ok(NodeToRelay::Witness { checkpoint }) => {
                let answer = match witness(&shared, node_id, checkpoint) {
                    Ok(cp) => RelayToNode::Witnessed {
                        checkpoint: Some(cp),
                    },
                    Err(code) => RelayToNode::Error { code },
                };
                if write_message(&mut send, &answer).await.is_err() {
                    return;
                }
            }
            Ok(NodeToRelay::PublishRevocations { list }) => {
                let answer = match publish_revocations(&shared, list.clone()) {
                    Ok(()) => {
                        push_to_all(
                            &shared,
                            RelayToNode::Revocations {
                                lists: vec![list.clone()],
                            },
                        );
                        RelayToNode::Revocations { lists: vec![list] }
                    }
                    Err(code) => RelayToNode::Error { code },
                };
                if write_message(&mut send, &answer).await.is_err() {
                    return;
                }
            }
            Ok(NodeToRelay::PublishRotation { rotation }) => {
                let answer = match publish_rotation(&shared, node_id, rotation.clone()) {
                    Ok(()) => {
                        push_to_all(
                            &shared,
                            RelayToNode::Rotations {
                                rotations: vec![rotation.clone()],
                            },
                        );
                        RelayToNode::Rotations {
                            rotations: vec![rotation],
                        }
                    }
                    Err(code) => RelayToNode::Error { code },
                };
                if write_message(&mut send, &answer).await.is_err() {
                    return;
                }
            }
            Ok(NodeToRelay::RotationQuery) => {
                let rotations = shared.rotations.iter().map(|e| e.value().clone()).collect();
                if write_message(&mut send, &RelayToNode::Rotations { rotations })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Ok(NodeToRelay::RevocationQuery) => {
                let lists = shared
                    .revocations
                    .iter()
                    .map(|e| e.value().1.clone())
                    .collect();
                if write_message(&mut send, &RelayToNode::Revocations { lists })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Ok(NodeToRelay::WitnessQuery) => {
                let checkpoint = shared.witnessed.get(&node_id).map(|c| c.clone());
                if write_message(&mut send, &RelayToNode::Witnessed { checkpoint })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Ok(_) => {
                conn.close(
                    close_code::PROTOCOL_VIOLATION.into(),
                    b"unexpected control message",
                );
                return;
            }
            Err(ReadError::Decode(e)) => {
                let _ = write_message(&mut send, &RelayToNode::Error { code: e.into() }).await;
                conn.close(
                    close_code::PROTOCOL_VIOLATION.into(),
                    b"malformed control message",
                );
                return;
            }
            Err(ReadError::Eof) => {
                conn.close(close_code::NORMAL.into(), b"control stream closed");
                return;
            }
            Err(ReadError::Stream(_)) => return,
        }
    }
}

/// Checks a node's audit checkpoint signature, countersigns it and keeps it as the node's
/// latest. A checkpoint older than the one held is refused, so a node (or someone holding its
/// disk) cannot roll the witness back.
fn witness(
    shared: &Shared,
    node: NodeId,
    mut cp: WitnessedCheckpoint,
) -> Result<WitnessedCheckpoint, LinkErrorCode> {
    use nullport_protocol::domain;
    let sig = unhex::<64>(&cp.node_sig).ok_or(LinkErrorCode::Malformed)?;
    if cp.head.len() != 64 || !cp.head.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(LinkErrorCode::Malformed);
    }
    let body = format!("seq:{}\nhead:{}", cp.seq, cp.head);
    nullport_protocol::identity::verify(&node, domain::AUDIT_CHECKPOINT_V1, body.as_bytes(), &sig)
        .map_err(|_| LinkErrorCode::Refused)?;
    if let Some(held) = shared.witnessed.get(&node)
        && held.seq > cp.seq
    {
        return Err(LinkErrorCode::Refused);
    }
    let relay_sig = shared
        .identity
        .sign(domain::AUDIT_WITNESS_V1, &cp.witness_body(&node));
    cp.relay_sig = nullport_protocol::hex::encode(&relay_sig);
    shared.witnessed.insert(node, cp.clone());
    save_witnesses(shared);
    tracing::debug!(seq = cp.seq, "witnessed audit checkpoint");
    Ok(cp)
}

/// Takes a key rotation published by the old key itself: both signatures must verify. In
/// allowlist mode the new key is admitted and the old one retired.
fn publish_rotation(
    shared: &Shared,
    sender: NodeId,
    rotation: SignedRotation,
) -> Result<(), LinkErrorCode> {
    let r =
        nullport_keyring::rotation::verify_signed(&rotation).map_err(|_| LinkErrorCode::Refused)?;
    if r.old != sender {
        return Err(LinkErrorCode::Refused);
    }
    if !shared.admission.is_open() {
        shared
            .admission
            .add(r.new)
            .map_err(|_| LinkErrorCode::Refused)?;
        shared.admission.retire(&r.old);
    }
    shared.rotations.insert(r.old, rotation);
    if let Some(dir) = shared.witness_file.as_ref().and_then(|f| f.parent()) {
        let all: Vec<SignedRotation> = shared.rotations.iter().map(|e| e.value().clone()).collect();
        if let Ok(bytes) = serde_json::to_vec(&all) {
            let _ = nullport_keyring::fs::write_private(&dir.join("rotations.json"), &bytes, true);
        }
    }
    tracing::info!(old = %r.old.fmt_short(), new = %r.new.fmt_short(), "key rotation stored");
    Ok(())
}

fn load_rotations(state_dir: Option<&std::path::Path>) -> DashMap<NodeId, SignedRotation> {
    let map = DashMap::new();
    if let Some(path) = state_dir.map(|d| d.join("rotations.json"))
        && let Ok(bytes) = std::fs::read(&path)
        && let Ok(all) = serde_json::from_slice::<Vec<SignedRotation>>(&bytes)
    {
        for r in all {
            if let Ok(parsed) = nullport_keyring::rotation::verify_signed(&r) {
                map.insert(parsed.old, r);
            }
        }
    }
    map
}

/// Enrolls `node` with an invite signed by this relay's key: valid, unexpired, and with a use
/// left (counted atomically, so two nodes racing for a one-time invite cannot both win).
fn enroll(shared: &Shared, node: NodeId, invite: &[u8]) -> Result<(), LinkErrorCode> {
    use nullport_keyring::invite::{Invite, InviteError};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let invite = Invite::verify(invite, &shared.identity.node_id(), now).map_err(|e| match e {
        InviteError::Expired => LinkErrorCode::InviteExpired,
        _ => LinkErrorCode::InviteInvalid,
    })?;
    {
        let mut used = shared.invite_uses.entry(invite.id).or_insert(0);
        if *used >= invite.uses {
            return Err(LinkErrorCode::InviteUsed);
        }
        *used += 1;
    }
    if let Some(dir) = shared.witness_file.as_ref().and_then(|f| f.parent()) {
        let all: Vec<(String, u32)> = shared
            .invite_uses
            .iter()
            .map(|e| {
                (
                    nullport_protocol::hex::encode(e.key().as_slice()),
                    *e.value(),
                )
            })
            .collect();
        if let Ok(bytes) = serde_json::to_vec(&all) {
            let _ =
                nullport_keyring::fs::write_private(&dir.join("invites-used.json"), &bytes, true);
        }
    }
    shared.admission.add(node).map_err(|e| {
        tracing::error!("enrolling {node}: {e}");
        LinkErrorCode::Refused
    })?;
    tracing::info!(peer = %node.fmt_short(), invite = %invite.id_hex(), "enrolled with an invite");
    Ok(())
}

fn load_invite_uses(state_dir: Option<&std::path::Path>) -> DashMap<[u8; 16], u32> {
    let map = DashMap::new();
    if let Some(path) = state_dir.map(|d| d.join("invites-used.json"))
        && let Ok(bytes) = std::fs::read(&path)
        && let Ok(entries) = serde_json::from_slice::<Vec<(String, u32)>>(&bytes)
    {
        for (id, n) in entries {
            let raw: Option<Vec<u8>> = (0..id.len())
                .step_by(2)
                .map(|i| {
                    id.get(i..i + 2)
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                })
                .collect();
            if let Some(Ok(id)) = raw.map(<[u8; 16]>::try_from) {
                map.insert(id, n);
            }
        }
    }
    map
}

/// Stores a revocation list if its signature verifies and it is newer than the one held
/// from its signer. The relay cannot forge lists, and does not let them roll back.
fn publish_revocations(shared: &Shared, list: SignedRevocations) -> Result<(), LinkErrorCode> {
    let parsed =
        nullport_keyring::revocation::verify_signed(&list).map_err(|_| LinkErrorCode::Refused)?;
    if let Some(held) = shared.revocations.get(&parsed.signer)
        && held.0 >= parsed.version
    {
        return Err(LinkErrorCode::Refused);
    }
    shared
        .revocations
        .insert(parsed.signer, (parsed.version, list));
    if let Some(dir) = &shared
        .witness_file
        .as_ref()
        .and_then(|f| f.parent().map(|d| d.to_owned()))
    {
        let all: Vec<SignedRevocations> = shared
            .revocations
            .iter()
            .map(|e| e.value().1.clone())
            .collect();
        if let Ok(bytes) = serde_json::to_vec(&all)
            && let Err(e) =
                nullport_keyring::fs::write_private(&dir.join("revocations.json"), &bytes, true)
        {
            tracing::error!("saving revocation lists: {e}");
        }
    }
    tracing::info!(signer = %parsed.signer.fmt_short(), version = parsed.version, "revocation list stored");
    Ok(())
}

/// Pushes `message` (new revocation lists or rotations) to every connected node, each on a
/// stream of its own.
fn push_to_all(shared: &Shared, message: RelayToNode) {
    for route in shared.routes.iter() {
        let conn = route.conn.clone();
        let message = message.clone();
        tokio::spawn(async move {
            if let Ok(Ok((mut send, _recv))) = timeout(Duration::from_secs(5), conn.open_bi()).await
            {
                let _ = write_message(&mut send, &message).await;
                let _ = send.finish();
            }
        });
    }
}

fn load_revocations(
    state_dir: Option<&std::path::Path>,
) -> DashMap<NodeId, (u64, SignedRevocations)> {
    let map = DashMap::new();
    let Some(path) = state_dir.map(|d| d.join("revocations.json")) else {
        return map;
    };
    if let Ok(bytes) = std::fs::read(&path)
        && let Ok(lists) = serde_json::from_slice::<Vec<SignedRevocations>>(&bytes)
    {
        for list in lists {
            if let Ok(parsed) = nullport_keyring::revocation::verify_signed(&list) {
                map.insert(parsed.signer, (parsed.version, list));
            }
        }
    }
    map
}

/// Loads the witnessed checkpoints kept in `state_dir` (a missing or unreadable file: none,
/// logged).
fn load_witnesses(state_dir: Option<&std::path::Path>) -> DashMap<NodeId, WitnessedCheckpoint> {
    let map = DashMap::new();
    let Some(path) = state_dir.map(|d| d.join("witnessed.json")) else {
        return map;
    };
    match std::fs::read(&path) {
        Ok(bytes) => match serde_json::from_slice::<
            std::collections::BTreeMap<String, WitnessedCheckpoint>,
        >(&bytes)
        {
            Ok(entries) => {
                for (id, cp) in entries {
                    if let Ok(id) = id.parse::<NodeId>() {
                        map.insert(id, cp);
                    }
                }
            }
            Err(e) => tracing::error!(
                "{}: unreadable, starting without witnesses: {e}",
                path.display()
            ),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::error!("{}: {e}", path.display()),
    }
    map
}

/// Writes the witnessed checkpoints atomically (whole file; fine for a small network).
fn save_witnesses(shared: &Shared) {
    let Some(path) = &shared.witness_file else {
        return;
    };
    let entries: std::collections::BTreeMap<String, WitnessedCheckpoint> = shared
        .witnessed
        .iter()
        .map(|e| (e.key().to_string(), e.value().clone()))
        .collect();
    let result = serde_json::to_vec(&entries)
        .map_err(|e| e.to_string())
        .and_then(|bytes| {
            nullport_keyring::fs::write_private(path, &bytes, true).map_err(|e| e.to_string())
        });
    if let Err(e) = result {
        tracing::error!("saving witnessed checkpoints: {e}");
    }
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    nullport_protocol::hex::decode_array(s)
}

async fn handle_dial(
    shared: Arc<Shared>,
    caller: NodeId,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let refuse = |code: LinkErrorCode| RelayToNode::Error { code };
    let request = timeout(
        shared.limits.request_deadline,
        read_message::<NodeToRelay>(&mut recv, shared.limits.max_link_message),
    )
    .await;
    let target = match request {
        Ok(Ok(NodeToRelay::Dial { target })) => target,
        Ok(Err(ReadError::Decode(e))) => {
            shared
                .metrics
                .dials_bad_request
                .fetch_add(1, Ordering::Relaxed);
            let _ = write_message(&mut send, &refuse(e.into())).await;
            let _ = send.finish();
            return;
        }
        Ok(Ok(_)) => {
            shared
                .metrics
                .dials_bad_request
                .fetch_add(1, Ordering::Relaxed);
            let _ = write_message(&mut send, &refuse(LinkErrorCode::Malformed)).await;
            let _ = send.finish();
            return;
        }
        _ => {
            shared
                .metrics
                .dials_bad_request
                .fetch_add(1, Ordering::Relaxed);
            let _ = send.reset(0u32.into());
            return;
        }
    };
    if !shared
        .dial_limiter
        .try_take(&caller, 1, std::time::Instant::now())
    {
        shared
            .metrics
            .dials_rate_limited
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(target = %target.fmt_short(), "dial rate limited");
        let _ = write_message(&mut send, &refuse(LinkErrorCode::RateLimited)).await;
        let _ = send.finish();
        return;
    }
    let target = shared.route_target(target);
    if target == caller {
        shared
            .metrics
            .dials_bad_request
            .fetch_add(1, Ordering::Relaxed);
        let _ = write_message(&mut send, &refuse(LinkErrorCode::Refused)).await;
        let _ = send.finish();
        return;
    }
    let target_conn = shared.routes.get(&target).map(|r| r.conn.clone());
    let opened = match target_conn {
        Some(conn) => timeout(shared.limits.request_deadline, conn.open_bi())
            .await
            .ok()
            .and_then(Result::ok),
        None => None,
    };
    let Some((mut t_send, t_recv)) = opened else {
        shared.metrics.dials_offline.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(target = %target.fmt_short(), "dial: target offline");
        let _ = write_message(&mut send, &refuse(LinkErrorCode::Offline)).await;
        let _ = send.finish();
        return;
    };
    let session = SessionId(shared.next_session.fetch_add(1, Ordering::Relaxed));
    let incoming = RelayToNode::Incoming {
        caller: shared.caller_label(caller),
        session,
    };
    if write_message(&mut t_send, &incoming).await.is_err()
        || write_message(&mut send, &RelayToNode::Dialed { session })
            .await
            .is_err()
    {
        let _ = t_send.reset(0u32.into());
        let _ = send.reset(0u32.into());
        return;
    }
    shared.metrics.dials_ok.fetch_add(1, Ordering::Relaxed);
    shared.metrics.splices_open.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(%session, target = %target.fmt_short(), "splicing");
    let forward = pump(shared.clone(), session, From::Caller, caller, recv, t_send);
    let backward = pump(shared.clone(), session, From::Target, target, t_recv, send);
    tokio::join!(forward, backward);
    shared.metrics.splices_open.fetch_sub(1, Ordering::Relaxed);
}
