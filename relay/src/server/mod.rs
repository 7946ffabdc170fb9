//! The relay server, in rooms: [`Relay`] (binding, the accept loop, admission of each
//! connection), [`shared`] (state every task shares, and enforcing admission on live links),
//! [`control`] (a node's control stream: presence, witness, revocation lists, rotations),
//! [`dial`] (dial streams and the blind [`splice`]), with [`crate::store`] for what survives
//! a restart, [`crate::push`] for what is pushed to every node, and [`crate::admission`] for
//! the one admission decision.

mod broadcast;
mod control;
mod dial;
mod handle;
pub(crate) mod shared;
pub(crate) mod splice;
pub(crate) mod store_sync;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nullport_protocol::NodeId;
use nullport_protocol::relay_link::{
    LINK_VERSION, LinkErrorCode, NodeToRelay, RelayToNode, close_code,
};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, timeout, timeout_at};
use tracing::Instrument;

use crate::admission::Refusal;
use crate::config::RelayConfig;
use crate::error::{Error, StateError};
use crate::link::{ReadError, read_message, write_message};
use crate::metrics::Metrics;
use crate::rate::RateLimiter;
use crate::store::Store;
use crate::tls;
pub use handle::RelayHandle;
use shared::{PendingGuard, Route, Shared};

/// A running relay. Dropping it stops accepting and closes every connection.
#[derive(Debug)]
pub struct Relay {
    endpoint: quinn::Endpoint,
    local_addr: SocketAddr,
    node_id: NodeId,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
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
        let metrics = Arc::new(Metrics::default());
        let store = Store::open(&config.store, config.state_dir.clone(), metrics.clone()).await?;
        let store = Arc::new(store);
        // Rotated-away keys stay refused for good, across restarts.
        let retired: Vec<(NodeId, NodeId)> = store
            .rotations
            .iter()
            .filter_map(|e| {
                let r = nullport_keyring::rotation::verify_signed(e.value()).ok()?;
                Some((r.old, r.new))
            })
            .collect();
        let admission = config.admission.clone();
        let members = store.members();
        tokio::task::spawn_blocking(move || {
            // Members of a shared store first: a later rotation retires some of them.
            for id in members {
                let _ = admission.add_member(id);
            }
            for (old, new) in &retired {
                admission.retire(old, new);
            }
        })
        .await
        .map_err(StateError::from)?;
        let (push_tx, push_rx) = tokio::sync::mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            dial_limiter: RateLimiter::new(
                config.limits.dials_per_second,
                config.limits.dial_burst,
            ),
            publish_limiter: RateLimiter::new(
                config.limits.publishes_per_second,
                config.limits.publishes_per_second.saturating_mul(10),
            ),
            byte_limiter: RateLimiter::new(
                config.limits.bytes_per_second,
                config.limits.byte_burst,
            ),
            limits: config.limits,
            admission: config.admission,
            metrics,
            routes: dashmap::DashMap::new(),
            next_session: AtomicU64::new(initial_session()),
            next_generation: AtomicU64::new(1),
            identity: config.identity.clone(),
            store: store.clone(),
            push: push_tx,
            admin_version: AtomicU64::new(0),
            pending_per_ip: Mutex::new(HashMap::new()),
            map: Mutex::new(None),
            draining_until: Mutex::new(None),
            #[cfg(feature = "testing")]
            hooks: config.testing,
        });
        RelayHandle {
            shared: shared.clone(),
        }
        .reload_admin_list()
        .await?;
        // The admin lists the shared store holds (the file's list is applied above).
        shared.enforce_admin_lists();
        let node_id = config.identity.node_id();
        let (changes_tx, changes_rx) = tokio::sync::mpsc::unbounded_channel();
        let tasks = vec![
            tokio::spawn(accept_loop(endpoint.clone(), shared.clone())),
            tokio::spawn(crate::store::persist(store.clone())),
            tokio::spawn(broadcast::run(shared.clone(), push_rx)),
            tokio::spawn(
                crate::store::follow(store, changes_tx).instrument(tracing::info_span!("store")),
            ),
            tokio::spawn(
                store_sync::run(shared.clone(), changes_rx)
                    .instrument(tracing::info_span!("store_sync")),
            ),
        ];
        tracing::info!(relay = %node_id, %local_addr, open = shared.admission.is_open(), "relay listening");
        Ok(Relay {
            endpoint,
            local_addr,
            node_id,
            shared,
            tasks,
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

    /// A handle for reloading admission while the relay runs.
    pub fn handle(&self) -> RelayHandle {
        RelayHandle {
            shared: self.shared.clone(),
        }
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
        let shared = self.shared.clone();
        let nodes: crate::metrics::NodesView = Arc::new(move || shared.node_stats());
        self.tasks.push(tokio::spawn(crate::metrics::serve(
            listener,
            self.shared.metrics.clone(),
            self.shared.admission.clone(),
            nodes,
        )));
        Ok(bound)
    }

    /// The nodes online now: since when, from where, bytes each way, dials.
    pub fn nodes(&self) -> Vec<crate::NodeStats> {
        self.shared.node_stats()
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

/// Accepts connections until the endpoint closes. Every connection's task belongs to this
/// loop's set: finished ones are reaped as they end, and they all stop with the loop.
async fn accept_loop(endpoint: quinn::Endpoint, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => break,
            },
            Some(_) = connections.join_next() => continue,
        };
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
        connections.spawn(handle_incoming(shared.clone(), incoming, guard).instrument(span));
    }
}

/// How a connection that passed TLS may proceed.
enum Entry {
    /// Admitted: its first message must be `Hello`.
    Admitted,
    /// Unknown but enrolling is on: its first message must be a valid `Join`.
    MayEnroll,
}

/// An admitted connection: its node and its control stream, `Hello` (or `Join`) read.
struct Admitted {
    node_id: NodeId,
    conn: quinn::Connection,
    ctl_send: quinn::SendStream,
    ctl_recv: quinn::RecvStream,
}

/// Admits one connection, then serves its node until it goes.
///
/// The admission runs in a future of its own on the heap, freed once it is done: this task
/// lives as long as the node, and a task's memory is its future's largest state, so the
/// handshake and `Hello` (timers, enrollment) would otherwise be paid for by every idle node.
async fn handle_incoming(shared: Arc<Shared>, incoming: quinn::Incoming, guard: PendingGuard) {
    let Some(admitted) = Box::pin(admit(&shared, incoming)).await else {
        return;
    };
    drop(guard);
    let Admitted {
        node_id,
        conn,
        mut ctl_send,
        ctl_recv,
    } = admitted;
    // The route first, then the Welcome: a node that reads Welcome is reachable at once (a
    // caller it tells right away, or one walking a fleet, never finds it "not here").
    let generation = shared.next_generation.fetch_add(1, Ordering::Relaxed);
    let old = shared.routes.insert(
        node_id,
        Route {
            conn: conn.clone(),
            generation,
            counters: Arc::new(crate::nodes::NodeCounters::new(conn.remote_address())),
        },
    );
    if let Some(old) = old {
        shared.metrics.superseded.fetch_add(1, Ordering::Relaxed);
        tracing::info!(peer = %node_id, "newer connection supersedes the old one");
        old.conn.close(
            close_code::SUPERSEDED.into(),
            b"superseded by a newer connection",
        );
    } else {
        shared.metrics.nodes_online.fetch_add(1, Ordering::Relaxed);
    }
    // Admission may have changed while this node was being admitted: check once more now
    // that its route is visible to `enforce_admission`.
    if let Err(refusal) = shared.admission.check(&node_id) {
        conn.close(refusal.close_code().into(), refusal.to_string().as_bytes());
    }
    let welcomed = write_message(
        &mut ctl_send,
        &RelayToNode::Welcome {
            version: LINK_VERSION,
            node_id,
        },
    )
    .await
    .is_ok();
    if welcomed {
        shared.metrics.admitted.fetch_add(1, Ordering::Relaxed);
        // A node that arrives while the relay drains is told too, with the time left.
        if let Some(left) = shared.drain_left() {
            let secs = u32::try_from(left.as_secs().max(1)).unwrap_or(u32::MAX);
            let told = conn.clone();
            tokio::spawn(async move {
                if let Ok((mut send, _recv)) = told.open_bi().await {
                    let _ = crate::link::write_control(
                        &mut send,
                        &RelayToNode::Draining { within_secs: secs },
                    )
                    .await;
                    let _ = send.finish();
                }
            });
        }
        let span = tracing::info_span!("node", peer = %node_id);
        serve_node(shared.clone(), node_id, conn, ctl_send, ctl_recv)
            .instrument(span)
            .await;
    }
    let removed = shared
        .routes
        .remove_if(&node_id, |_, r| r.generation == generation);
    if removed.is_some() {
        shared.metrics.nodes_online.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The handshake (bounded by the admission deadline), the admission decision, and the
/// control stream's first message; `None` if the connection was refused (and closed).
async fn admit(shared: &Arc<Shared>, incoming: quinn::Incoming) -> Option<Admitted> {
    let deadline = Instant::now() + shared.limits.admission_deadline;
    let refused = || {
        shared
            .metrics
            .admission_refused
            .fetch_add(1, Ordering::Relaxed);
    };
    let Ok(connecting) = incoming.accept() else {
        refused();
        return None;
    };
    let conn = match timeout_at(deadline, connecting).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::debug!("handshake failed: {e}");
            refused();
            return None;
        }
        Err(_) => {
            tracing::debug!("admission deadline passed during handshake");
            refused();
            return None;
        }
    };
    let Some(node_id) = tls::peer_node_id(&conn) else {
        conn.close(close_code::NOT_ADMITTED.into(), b"no valid node key");
        refused();
        return None;
    };
    // The verifier decided during the handshake; decide again in case admission changed.
    let entry = match shared.admission.check(&node_id) {
        Ok(()) => Entry::Admitted,
        Err(Refusal::NotListed) if shared.admission.enrolling() => Entry::MayEnroll,
        Err(refusal) => {
            conn.close(refusal.close_code().into(), refusal.to_string().as_bytes());
            refused();
            return None;
        }
    };
    let (mut ctl_send, mut ctl_recv) = match timeout_at(deadline, conn.accept_bi()).await {
        Ok(Ok(streams)) => streams,
        _ => {
            conn.close(close_code::ADMISSION_TIMEOUT.into(), b"no hello in time");
            refused();
            return None;
        }
    };
    let hello = timeout_at(
        deadline,
        read_message::<NodeToRelay>(&mut ctl_recv, shared.limits.max_link_message),
    )
    .await;
    match (hello, entry) {
        (Ok(Ok(NodeToRelay::Hello { version })), Entry::Admitted) if version == LINK_VERSION => {}
        (Ok(Ok(NodeToRelay::Join { invite, version })), _) if version == LINK_VERSION => {
            if let Err(code) = control::enroll(shared, node_id, &invite).await {
                tracing::info!(peer = %node_id, "enrollment refused: {code}");
                let _ = write_message(&mut ctl_send, &RelayToNode::Error { code }).await;
                let _ = ctl_send.finish();
                // Close once the node has the reason (acknowledged), not after a guess.
                let _ = timeout(control::ANSWER_DELIVERY, ctl_send.stopped()).await;
                conn.close(close_code::NOT_ADMITTED.into(), b"enrollment refused");
                refused();
                return None;
            }
        }
        (Ok(Ok(NodeToRelay::Hello { version })), Entry::MayEnroll) if version == LINK_VERSION => {
            // Let in only to enroll, and it did not: refused, learning nothing.
            conn.close(close_code::NOT_ADMITTED.into(), b"not admitted");
            refused();
            return None;
        }
        (Ok(Ok(NodeToRelay::Hello { .. } | NodeToRelay::Join { .. })), _) => {
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
            return None;
        }
        (Err(_), _) => {
            conn.close(close_code::ADMISSION_TIMEOUT.into(), b"no hello in time");
            refused();
            return None;
        }
        (Ok(Err(ReadError::Decode(_))) | Ok(Ok(_)), _) => {
            conn.close(close_code::PROTOCOL_VIOLATION.into(), b"expected hello");
            refused();
            return None;
        }
        (Ok(Err(_)), _) => {
            refused();
            return None;
        }
    }
    Some(Admitted {
        node_id,
        conn,
        ctl_send,
        ctl_recv,
    })
}

/// Serves an admitted node until its connection ends: the control stream on one task, each
/// dial on its own, every task owned here and aborted when the node goes.
async fn serve_node(
    shared: Arc<Shared>,
    node_id: NodeId,
    conn: quinn::Connection,
    ctl_send: quinn::SendStream,
    ctl_recv: quinn::RecvStream,
) {
    tracing::info!("node online");
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(
        control::serve(shared.clone(), node_id, conn.clone(), ctl_send, ctl_recv).in_current_span(),
    );
    // Dial streams open now (the control stream is one more).
    let open = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut granted = shared.limits.initial_streams();
    loop {
        tokio::select! {
            accepted = conn.accept_bi() => match accepted {
                Ok((send, recv)) => {
                    let in_use = open.fetch_add(1, Ordering::Relaxed) + 2;
                    if in_use * 2 > granted && granted < shared.limits.max_streams_per_node {
                        granted = (granted * 2).min(shared.limits.max_streams_per_node);
                        conn.set_max_concurrent_bi_streams(granted.into());
                    }
                    let span = tracing::debug_span!("dial");
                    let (open, shared) = (open.clone(), shared.clone());
                    tasks.spawn(
                        async move {
                            dial::handle(shared, node_id, send, recv).await;
                            open.fetch_sub(1, Ordering::Relaxed);
                        }
                        .instrument(span),
                    );
                }
                Err(e) => {
                    tracing::info!("node offline: {e}");
                    break;
                }
            },
            // Reap finished dials so the set stays the size of what is running.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    tasks.abort_all();
}
