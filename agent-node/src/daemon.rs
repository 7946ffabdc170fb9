//! The daemon behind `nullport up`: one relay link, the exposed services, the policy, and a
//! Unix control socket for the CLI.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use nullport_keyring::{Decision, Policy, TrustStore};
use nullport_protocol::{DenyReason, Identity, NodeId};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::audit::Audit;
use crate::config_file::{NodeFile, ServiceSpec};
use crate::control::{ChannelStatus, ControlRequest, ControlResponse, ServiceStatus, Status};
use crate::home::Home;
use crate::mcp::approvals::Approvals;
use crate::mcp::{GrantSource, Session, UpstreamSpec, serve};
use crate::service::{Counted, Counters, connect_tcp, forward, run_exec, spawn_exec};
use crate::tokens;
use crate::{Error, IncomingChannel, Node, NodeConfig, NodeLimits, RelayAddr};
use nullport_keyring::audit::{AuditConfig, Checkpoint};
use nullport_keyring::revocation::RevocationSet;
use nullport_protocol::relay_link::WitnessedCheckpoint;

/// Largest control request line.
const MAX_CONTROL_LINE: usize = 4096;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// Another daemon answers on this home's control socket.
    #[error("a nullport daemon is already running for {0}")]
    AlreadyRunning(String),
    /// A file in the home is unusable.
    #[error("{0}")]
    Config(String),
    /// The node could not start.
    #[error(transparent)]
    Node(#[from] Error),
    /// The control socket could not be created.
    #[error("control socket {path}: {error}")]
    Socket {
        /// The socket path.
        path: String,
        /// The OS error.
        error: std::io::Error,
    },
}

struct OpenChannel {
    direction: &'static str,
    peer: NodeId,
    stop: watch::Sender<bool>,
    service: String,
    counters: Arc<Counters>,
    opened: Instant,
}

struct State {
    home: Home,
    relay: RelayAddr,
    node: Node,
    identity: Arc<Identity>,
    config: RwLock<NodeFile>,
    policy: RwLock<Policy>,
    trust: RwLock<TrustStore>,
    channels: Mutex<HashMap<u64, OpenChannel>>,
    next_channel: AtomicU64,
    shutdown: watch::Sender<bool>,
    approvals: Arc<Approvals>,
    audit: Audit,
    witness_idle: std::sync::atomic::AtomicBool,
    revocations: RwLock<RevocationSet>,
    retired: RwLock<std::collections::HashSet<NodeId>>,
}

/// A running daemon. [`Daemon::shutdown`] closes every channel with a close frame.
pub struct Daemon {
    state: Arc<State>,
    tasks: Vec<JoinHandle<()>>,
}

fn load_files(home: &Home) -> Result<(NodeFile, Policy, TrustStore), DaemonError> {
    let config = NodeFile::load(&home.config()).map_err(|e| DaemonError::Config(e.to_string()))?;
    let policy = Policy::load(&home.policy()).map_err(|e| DaemonError::Config(e.to_string()))?;
    let trust = TrustStore::load(&home.trust()).map_err(|e| DaemonError::Config(e.to_string()))?;
    Ok((config, policy, trust))
}

impl Daemon {
    /// Starts the node, the service acceptor and the control socket.
    pub async fn start(
        home: Home,
        identity: Arc<Identity>,
        relay: RelayAddr,
        limits: NodeLimits,
    ) -> Result<Daemon, DaemonError> {
        let (config, policy, trust) = load_files(&home)?;
        let socket = home.socket();
        if UnixStream::connect(&socket).await.is_ok() {
            return Err(DaemonError::AlreadyRunning(
                home.dir().display().to_string(),
            ));
        }
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket).map_err(|error| DaemonError::Socket {
            path: socket.display().to_string(),
            error,
        })?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).map_err(
                |error| DaemonError::Socket {
                    path: socket.display().to_string(),
                    error,
                },
            )?;
        }
        let home_rotations = home.dir().join("rotations.json");
        let revocations = RevocationSet::load(&home.revocations())
            .map_err(|e| DaemonError::Config(e.to_string()))?;
        let (witness_tx, witness_rx) = tokio::sync::mpsc::unbounded_channel();
        let defaults = AuditConfig::default();
        let audit_config = AuditConfig {
            fsync: match std::env::var("NULLPORT_AUDIT_FSYNC").as_deref() {
                Ok("entry") => nullport_keyring::audit::FsyncPolicy::EveryEntry,
                Ok("never") => nullport_keyring::audit::FsyncPolicy::Never,
                _ => nullport_keyring::audit::FsyncPolicy::AtCheckpoint,
            },
            checkpoint_every: std::env::var("NULLPORT_AUDIT_CHECKPOINT_EVERY")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(defaults.checkpoint_every),
            ..defaults
        };
        let audit = Audit::open(&home.audit(), &identity, audit_config)
            .map_err(|error| DaemonError::Config(error.to_string()))?
            .with_witness(witness_tx);
        audit.node("node-start", &format!("relay {relay}"));
        let approval_timeout = std::env::var("NULLPORT_APPROVAL_TIMEOUT_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_secs)
            .unwrap_or(Duration::from_secs(120));
        let mut node_config = NodeConfig::new(identity.clone(), relay.clone());
        node_config.limits = limits;
        let node = Node::start(node_config).await?;
        let state = Arc::new(State {
            home,
            relay,
            node,
            identity: identity.clone(),
            config: RwLock::new(config),
            policy: RwLock::new(policy),
            trust: RwLock::new(trust),
            channels: Mutex::new(HashMap::new()),
            next_channel: AtomicU64::new(1),
            shutdown: watch::Sender::new(false),
            approvals: Arc::new(Approvals::new(approval_timeout)),
            audit,
            witness_idle: std::sync::atomic::AtomicBool::new(true),
            revocations: RwLock::new(revocations),
            retired: RwLock::new(load_retired(&home_rotations)),
        });
        let span = tracing::info_span!("daemon", id = %state.node.node_id().fmt_short());
        let tasks = vec![
            tokio::spawn(accept_loop(state.clone()).instrument(span.clone())),
            tokio::spawn(control_loop(state.clone(), listener).instrument(span.clone())),
            tokio::spawn(witness_loop(state.clone(), witness_rx).instrument(span.clone())),
            tokio::spawn(link_events(state.clone()).instrument(span.clone())),
            tokio::spawn(revocation_loop(state.clone()).instrument(span.clone())),
            tokio::spawn(rotation_loop(state.clone()).instrument(span)),
        ];
        Ok(Daemon { state, tasks })
    }

    /// The node behind the daemon.
    pub fn node(&self) -> &Node {
        &self.state.node
    }

    /// Closes every open channel with a close frame (bounded wait), the control socket and
    /// the relay link.
    pub async fn shutdown(self) {
        self.state.shutdown.send_replace(true);
        self.state.audit.node("node-stop", "shutdown");
        self.state.audit.checkpoint();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline
            && self
                .state
                .channels
                .lock()
                .map(|c| !c.is_empty())
                .unwrap_or(false)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Give the final checkpoint a moment to reach the relay.
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline && !self.state.witness_idle.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for t in &self.tasks {
            t.abort();
        }
        let _ = std::fs::remove_file(self.state.home.socket());
        // Let the close frames just written reach the relay, then close the link cleanly.
        self.state.node.close(Duration::from_millis(300)).await;
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Removes a channel from the table when dropped.
struct Registered {
    state: Arc<State>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut c) = self.state.channels.lock() {
            c.remove(&self.id);
        }
    }
}

fn register(
    state: &Arc<State>,
    direction: &'static str,
    peer: NodeId,
    service: &str,
) -> (Registered, Arc<Counters>, watch::Receiver<bool>) {
    let id = state.next_channel.fetch_add(1, Ordering::Relaxed);
    let counters = Arc::new(Counters::default());
    let (stop, stop_rx) = watch::channel(false);
    if let Ok(mut c) = state.channels.lock() {
        c.insert(
            id,
            OpenChannel {
                direction,
                peer,
                stop,
                service: service.to_owned(),
                counters: counters.clone(),
                opened: Instant::now(),
            },
        );
    }
    (
        Registered {
            state: state.clone(),
            id,
        },
        counters,
        stop_rx,
    )
}

/// Sends each new audit checkpoint to the relay to be witnessed, and keeps the latest
/// countersigned one in the home (`audit.witness`). While the relay is unreachable, only the
/// newest checkpoint waits.
async fn witness_loop(state: Arc<State>, mut rx: tokio::sync::mpsc::UnboundedReceiver<Checkpoint>) {
    while let Some(mut cp) = rx.recv().await {
        state.witness_idle.store(false, Ordering::Relaxed);
        while let Ok(newer) = rx.try_recv() {
            cp = newer;
        }
        let request = WitnessedCheckpoint {
            seq: cp.seq,
            head: cp.head.clone(),
            node_sig: cp.sig.clone(),
            relay_sig: String::new(),
        };
        loop {
            match state.node.witness(request.clone()).await {
                Ok(witnessed) => {
                    if let Ok(json) = serde_json::to_vec_pretty(&witness_json(&witnessed)) {
                        let _ = nullport_keyring::fs::write_private(
                            &state.home.audit_witness(),
                            &json,
                            true,
                        );
                    }
                    break;
                }
                Err(e) => {
                    tracing::debug!("audit checkpoint {} not witnessed yet: {e}", cp.seq);
                    if !rx.is_empty() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
        if rx.is_empty() {
            state.witness_idle.store(true, Ordering::Relaxed);
        }
    }
}

/// The witness file's content.
pub fn witness_json(cp: &WitnessedCheckpoint) -> serde_json::Value {
    serde_json::json!({ "seq": cp.seq, "head": cp.head, "node_sig": cp.node_sig, "relay_sig": cp.relay_sig })
}

/// Applies revocation lists from the relay (trusted signers only, never an older list),
/// keeps them in the home, and stops live channels of revoked keys at once.
async fn revocation_loop(state: Arc<State>) {
    let mut updates = state.node.revocation_updates();
    loop {
        let lists = match updates.recv().await {
            Ok(lists) => lists,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(_) => return,
        };
        let signers = match (state.policy.read(), state.trust.read()) {
            (Ok(p), Ok(t)) => p.revocation_signers(&t),
            _ => continue,
        };
        for signed in lists {
            let applied = state
                .revocations
                .write()
                .map(|mut set| set.apply(&signed, |s| signers.contains(s)));
            match applied {
                Ok(Ok(list)) => {
                    tracing::warn!(signer = %list.signer.fmt_short(), version = list.version, keys = list.keys.len(), tokens = list.tokens.len(), "revocation list applied");
                    state.audit.revocation(&list);
                    if let Ok(set) = state.revocations.read()
                        && let Err(e) = set.save(&state.home.revocations())
                    {
                        tracing::error!("saving revocations: {e}");
                    }
                    if let Ok(channels) = state.channels.lock() {
                        for ch in channels.values().filter(|c| list.keys.contains(&c.peer)) {
                            let _ = ch.stop.send(true);
                        }
                    }
                }
                Ok(Err(e)) => tracing::debug!("revocation list not applied: {e}"),
                Err(_) => {}
            }
        }
    }
}

fn load_retired(path: &std::path::Path) -> std::collections::HashSet<NodeId> {
    std::fs::read(path)
        .ok()
        .and_then(|b| {
            serde_json::from_slice::<Vec<nullport_protocol::relay_link::SignedRotation>>(&b).ok()
        })
        .unwrap_or_default()
        .iter()
        .filter_map(|r| nullport_keyring::rotation::verify_signed(r).ok())
        .map(|r| r.old)
        .collect()
}

/// Follows key rotations: a statement signed by both keys moves every alias that named the
/// old key to the new one (so policy written with aliases keeps working), retires the old
/// key (refused from then on) and stops its live channels.
async fn rotation_loop(state: Arc<State>) {
    let path = state.home.dir().join("rotations.json");
    let mut updates = state.node.rotation_updates();
    loop {
        let rotations = match updates.recv().await {
            Ok(r) => r,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(_) => return,
        };
        for signed in rotations {
            let Ok(r) = nullport_keyring::rotation::verify_signed(&signed) else {
                tracing::warn!("ignoring a key rotation that is not signed by both keys");
                continue;
            };
            let newly = state
                .retired
                .write()
                .map(|mut set| set.insert(r.old))
                .unwrap_or(false);
            if !newly {
                continue;
            }
            let mut moved = Vec::new();
            if let Ok(mut trust) = state.trust.write() {
                let aliases: Vec<String> = trust
                    .entries()
                    .filter(|(_, id)| **id == r.old)
                    .map(|(a, _)| a.to_owned())
                    .collect();
                for alias in aliases {
                    if trust.add(&alias, r.new, true).is_ok() {
                        moved.push(alias);
                    }
                }
                if !moved.is_empty()
                    && let Err(e) = trust.save()
                {
                    tracing::error!("saving the trust store: {e}");
                }
            }
            let mut all: Vec<nullport_protocol::relay_link::SignedRotation> = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
            all.push(signed);
            if let Ok(bytes) = serde_json::to_vec(&all) {
                let _ = nullport_keyring::fs::write_private(&path, &bytes, true);
            }
            tracing::warn!(old = %r.old.fmt_short(), new = %r.new.fmt_short(), aliases = ?moved, "key rotation applied");
            state.audit.node(
                "rotation",
                &format!(
                    "{} -> {} (aliases moved: {})",
                    r.old,
                    r.new,
                    moved.join(", ")
                ),
            );
            if let Ok(channels) = state.channels.lock() {
                for ch in channels.values().filter(|c| c.peer == r.old) {
                    let _ = ch.stop.send(true);
                }
            }
        }
    }
}

/// Audits relay link changes.
async fn link_events(state: Arc<State>) {
    let mut rx = state.node.watch_state();
    let mut online = false;
    while rx.changed().await.is_ok() {
        let now = matches!(*rx.borrow_and_update(), crate::LinkState::Online);
        if now != online {
            online = now;
            state.audit.node(
                if now { "link-up" } else { "link-down" },
                &state.relay.to_string(),
            );
        }
    }
}

async fn accept_loop(state: Arc<State>) {
    while let Some(incoming) = state.node.accept().await {
        let span = tracing::info_span!("channel", peer = %incoming.peer().fmt_short(), service = incoming.service());
        tokio::spawn(serve_incoming(state.clone(), incoming).instrument(span));
    }
}

async fn serve_incoming(state: Arc<State>, incoming: IncomingChannel) {
    let peer = incoming.peer();
    let name = incoming.service().to_owned();
    let spec = state
        .config
        .read()
        .ok()
        .and_then(|c| c.services.get(&name).cloned());
    let Some(spec) = spec else {
        tracing::info!("denied: service not exposed");
        state
            .audit
            .channel(&peer, &name, "denied", "service not exposed");
        let _ = incoming.deny(DenyReason::UnknownService).await;
        return;
    };
    // A capability token, if presented, is the authority for this channel (its scope within
    // the issuer's rules); otherwise the caller's own policy entry.
    let blob = incoming.blob().to_vec();
    let me = state.node.node_id();
    let retired = state
        .retired
        .read()
        .map(|r| r.contains(&peer))
        .unwrap_or(true);
    if retired
        || state
            .revocations
            .read()
            .map(|r| r.is_key_revoked(&peer))
            .unwrap_or(true)
    {
        tracing::warn!("denied: the caller's key is revoked");
        state.audit.channel(&peer, &name, "denied", "key revoked");
        let _ = incoming.deny(DenyReason::NotAllowed).await;
        return;
    }
    let presented = if blob.is_empty() {
        None
    } else {
        let checked = match (state.policy.read(), state.trust.read()) {
            (Ok(policy), Ok(trust)) => tokens::check(&blob, &peer, &me, &name, &policy, &trust),
            _ => Err("policy unavailable".to_owned()),
        };
        let checked = checked.and_then(|p| {
            let revoked = state.revocations.read().map(|r| {
                p.token.links.iter().any(|l| {
                    r.is_token_revoked(&l.body.id)
                        || r.is_key_revoked(&l.body.issuer)
                        || r.is_key_revoked(&l.body.holder)
                })
            });
            match revoked {
                Ok(false) => Ok(p),
                _ => Err("token revoked".to_owned()),
            }
        });
        match checked {
            Ok(p) => {
                state
                    .audit
                    .token(&peer, &name, &p.token.ids(), "accepted", &p.rule);
                Some(p)
            }
            Err(reason) => {
                tracing::info!("denied: capability token refused: {reason}");
                state.audit.token(&peer, &name, &[], "denied", &reason);
                state
                    .audit
                    .channel(&peer, &name, "denied", &format!("token: {reason}"));
                let _ = incoming.deny(DenyReason::BadToken).await;
                return;
            }
        }
    };
    let decision = match (&presented, state.policy.read(), state.trust.read()) {
        (Some(p), _, _) => Decision::Allowed {
            rule: p.rule.clone(),
        },
        (None, Ok(policy), Ok(trust)) => policy.decide(&peer, &name, &trust),
        _ => Decision::Denied,
    };
    let rule = match decision {
        Decision::Allowed { rule } => rule,
        Decision::Denied => {
            tracing::info!(
                "denied: no policy rule allows this peer (nullport allow <peer> {name})"
            );
            state.audit.channel(&peer, &name, "denied", "no rule");
            let _ = incoming.deny(DenyReason::NotAllowed).await;
            return;
        }
    };
    tracing::info!(%rule, target = %spec, "accepted");
    state.audit.channel(&peer, &name, "accepted", &rule);
    let mut shutdown = state.shutdown.subscribe();
    match spec {
        ServiceSpec::Tcp(addr) => {
            let mut tcp = match connect_tcp(&addr).await {
                Ok(tcp) => tcp,
                Err(e) => {
                    tracing::warn!("service target {addr} unavailable: {e}");
                    let _ = incoming.deny(DenyReason::Unavailable).await;
                    return;
                }
            };
            let Ok(channel) = incoming.accept().await else {
                return;
            };
            let (_reg, counters, mut stop) = register(&state, "in", peer, &name);
            let mut channel = Counted::new(channel, counters);
            tokio::select! {
                r = forward(&mut channel, &mut tcp) => if let Err(e) = r { tracing::info!("channel ended: {e}") },
                _ = stop_requested(&mut shutdown, &mut stop) => {
                    let _ = tokio::time::timeout(Duration::from_secs(2), channel.get_mut().shutdown()).await;
                }
            }
        }
        ServiceSpec::Mcp(_) | ServiceSpec::McpUrl(_) => {
            let upstream = match &spec {
                ServiceSpec::McpUrl(url) => match crate::mcp::http::HttpTarget::parse(url) {
                    Ok(t) => UpstreamSpec::Http(t),
                    Err(e) => {
                        tracing::warn!("bad MCP URL {url}: {e}");
                        let _ = incoming.deny(DenyReason::Unavailable).await;
                        return;
                    }
                },
                ServiceSpec::Mcp(command) => UpstreamSpec::Stdio(command.clone()),
                _ => return,
            };
            let source: GrantSource = {
                let (state, name) = (state.clone(), name.clone());
                let with_token = presented.is_some();
                Arc::new(move || {
                    let (policy, trust) = (state.policy.read().ok()?, state.trust.read().ok()?);
                    if with_token {
                        // Re-checked for every message: an expired token stops working.
                        let p = tokens::check(&blob, &peer, &me, &name, &policy, &trust).ok()?;
                        return Some(tokens::grant(&p, &policy, &trust, &name));
                    }
                    policy.mcp_grant(&peer, &name, &trust).or_else(|| {
                        match policy.decide(&peer, &name, &trust) {
                            Decision::Allowed { rule } => Some(nullport_keyring::McpGrant {
                                rule,
                                rules: Default::default(),
                                approve: Vec::new(),
                            }),
                            Decision::Denied => None,
                        }
                    })
                })
            };
            let Ok(channel) = incoming.accept().await else {
                return;
            };
            let (_reg, counters, mut stop) = register(&state, "in", peer, &name);
            let handshake = *channel.handshake_hash();
            let channel = Counted::new(channel, counters);
            let session = Session {
                caller: peer,
                service: name.clone(),
                handshake,
                signer: state.identity.clone(),
            };
            tokio::select! {
                r = serve(channel, &upstream, source, session, state.approvals.clone(), state.audit.clone()) => {
                    if let Err(e) = r { tracing::info!("mcp session ended: {e}") }
                }
                _ = stop_requested(&mut shutdown, &mut stop) => {}
            }
        }
        ServiceSpec::Exec(command) => {
            let child = match spawn_exec(&command) {
                Ok(child) => child,
                Err(e) => {
                    tracing::warn!("cannot start {command:?}: {e}");
                    let _ = incoming.deny(DenyReason::Unavailable).await;
                    return;
                }
            };
            let Ok(channel) = incoming.accept().await else {
                return;
            };
            let (_reg, counters, mut stop) = register(&state, "in", peer, &name);
            let channel = Counted::new(channel, counters);
            if let Err(e) = run_exec(
                channel,
                child,
                &name,
                stop_requested(&mut shutdown, &mut stop),
            )
            .await
            {
                tracing::info!("exec channel ended: {e}");
            }
        }
    }
}

async fn control_loop(state: Arc<State>, listener: UnixListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(control_conn(state.clone(), stream).in_current_span());
    }
}

async fn control_conn(state: Arc<State>, stream: UnixStream) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut limited = tokio::io::AsyncReadExt::take(&mut reader, MAX_CONTROL_LINE as u64);
        tokio::io::AsyncBufReadExt::read_until(&mut limited, b'\n', &mut line).await
    })
    .await;
    if !matches!(read, Ok(Ok(n)) if n > 0) {
        return;
    }
    let request: ControlRequest = match serde_json::from_slice(&line) {
        Ok(r) => r,
        Err(e) => {
            let _ = respond(
                reader.get_mut(),
                &ControlResponse::error(format!("bad request: {e}")),
            )
            .await;
            return;
        }
    };
    match request {
        ControlRequest::Status => {
            let mut response = ControlResponse::ok();
            response.status = Some(status(&state));
            let _ = respond(reader.get_mut(), &response).await;
        }
        ControlRequest::PublishRotation { rotation } => {
            let response = match state.node.publish_rotation(rotation).await {
                Ok(()) => ControlResponse::ok(),
                Err(e) => ControlResponse::error(e),
            };
            let _ = respond(reader.get_mut(), &response).await;
        }
        ControlRequest::PublishRevocations { list } => {
            let response = match state.node.publish_revocations(list).await {
                Ok(()) => ControlResponse::ok(),
                Err(e) => ControlResponse::error(e),
            };
            let _ = respond(reader.get_mut(), &response).await;
        }
        ControlRequest::AuditWitness => {
            let response = match state.node.witnessed().await {
                Ok(cp) => {
                    let mut r = ControlResponse::ok();
                    r.witness = cp.map(|c| witness_json(&c));
                    r
                }
                Err(e) => ControlResponse::error(e),
            };
            let _ = respond(reader.get_mut(), &response).await;
        }
        ControlRequest::Approvals => {
            let mut response = ControlResponse::ok();
            response.approvals = Some(state.approvals.list());
            let _ = respond(reader.get_mut(), &response).await;
        }
        ControlRequest::Answer { id, approve } => {
            let response = match state.approvals.answer(&id, approve) {
                Ok(info) => {
                    let mut r = ControlResponse::ok();
                    r.approvals = Some(vec![info]);
                    r
                }
                Err(e) => ControlResponse::error(e),
            };
            let _ = respond(reader.get_mut(), &response).await;
        }
        ControlRequest::Reload => {
            let response = match load_files(&state.home) {
                Ok((config, policy, trust)) => {
                    if let (Ok(mut c), Ok(mut p), Ok(mut t)) = (
                        state.config.write(),
                        state.policy.write(),
                        state.trust.write(),
                    ) {
                        *c = config;
                        *p = policy;
                        *t = trust;
                    }
                    tracing::info!("reloaded config, policy and trust store");
                    ControlResponse::ok()
                }
                Err(e) => ControlResponse::error(e),
            };
            let _ = respond(reader.get_mut(), &response).await;
        }
        ControlRequest::Pipe {
            peer,
            service,
            mcp,
            token,
        } => {
            let blob = match token
                .as_deref()
                .map(nullport_keyring::token::Token::from_text)
            {
                None => Vec::new(),
                Some(Ok(t)) => t.to_bytes(),
                Some(Err(e)) => {
                    let _ = respond(
                        reader.get_mut(),
                        &ControlResponse::error(format!("bad token: {e}")),
                    )
                    .await;
                    return;
                }
            };
            let resolved = state
                .trust
                .read()
                .map_err(|_| "trust store unavailable".to_owned())
                .and_then(|t| t.resolve(&peer).map_err(|e| e.to_string()));
            let target = match resolved {
                Ok(id) => id,
                Err(e) => {
                    let _ = respond(reader.get_mut(), &ControlResponse::error(e)).await;
                    return;
                }
            };
            let dialed = state.node.dial_with(target, &service, blob).await;
            state.audit.dial(
                &target,
                &service,
                if dialed.is_ok() { "open" } else { "failed" },
            );
            let channel = match dialed {
                Ok(ch) => ch,
                Err(e) => {
                    let _ = respond(
                        reader.get_mut(),
                        &ControlResponse::error(explain(&e, &peer, &service)),
                    )
                    .await;
                    return;
                }
            };
            if respond(reader.get_mut(), &ControlResponse::ok())
                .await
                .is_err()
            {
                return;
            }
            let (_reg, counters, mut stop) = register(&state, "out", target, &service);
            let handshake = *channel.handshake_hash();
            let mut channel = Counted::new(channel, counters);
            let mut shutdown = state.shutdown.subscribe();
            let mut local = reader;
            if mcp {
                let session = Session {
                    caller: state.node.node_id(),
                    service: service.clone(),
                    handshake,
                    signer: state.identity.clone(),
                };
                tokio::select! {
                    r = crate::mcp::caller_pipe(local, channel, session, target, state.audit.clone()) => {
                        if let Err(e) = r { tracing::info!("mcp bridge ended: {e}") }
                    }
                    _ = stop_requested(&mut shutdown, &mut stop) => {}
                }
                return;
            }
            tokio::select! {
                r = forward(&mut channel, &mut local) => if let Err(e) = r { tracing::info!("pipe ended: {e}") },
                _ = stop_requested(&mut shutdown, &mut stop) => {
                    let _ = tokio::time::timeout(Duration::from_secs(2), channel.get_mut().shutdown()).await;
                }
            }
        }
    }
}

/// Resolves when the daemon shuts down or this channel must stop (its peer was revoked).
async fn stop_requested(shutdown: &mut watch::Receiver<bool>, stop: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = cancelled(shutdown) => {}
        _ = cancelled(stop) => {}
    }
}

/// Resolves when the daemon is shutting down.
async fn cancelled(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Turns a dial error into what a person should read.
pub fn explain(e: &Error, peer: &str, service: &str) -> String {
    match e {
        Error::Denied {
            reason: DenyReason::UnknownService,
            ..
        } => format!("{peer} does not expose a service named {service:?}"),
        Error::Denied {
            reason: DenyReason::NotAllowed,
            ..
        } => {
            format!(
                "{peer} refused {service:?}: not allowed (its operator can run `nullport allow <your NodeId> {service}`)"
            )
        }
        Error::Denied {
            reason: DenyReason::BadToken,
            ..
        } => format!(
            "{peer} refused the capability token for {service:?} (expired, not yours, not trusted, or wider than its issuer may grant)"
        ),
        Error::Denied {
            reason: DenyReason::Unavailable,
            ..
        } => {
            format!("{peer} accepted you for {service:?}, but the service behind it is unavailable")
        }
        Error::PeerOffline(_) => format!("{peer} is offline (not connected to the relay)"),
        other => other.to_string(),
    }
}

async fn respond(stream: &mut UnixStream, response: &ControlResponse) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(response).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line).await
}

fn status(state: &State) -> Status {
    let trust = state.trust.read().ok();
    let name_of = |id: &NodeId| {
        trust
            .as_ref()
            .and_then(|t| t.alias_of(id).map(str::to_owned))
            .unwrap_or_else(|| id.to_string())
    };
    let services = state
        .config
        .read()
        .map(|c| {
            c.services
                .iter()
                .map(|(n, s)| ServiceStatus {
                    name: n.clone(),
                    target: s.to_string(),
                })
                .collect()
        })
        .unwrap_or_default();
    let mut channels: Vec<ChannelStatus> = state
        .channels
        .lock()
        .map(|c| {
            c.values()
                .map(|ch| ChannelStatus {
                    direction: ch.direction.to_owned(),
                    peer: name_of(&ch.peer),
                    service: ch.service.clone(),
                    bytes_in: ch.counters.bytes_in.load(Ordering::Relaxed),
                    bytes_out: ch.counters.bytes_out.load(Ordering::Relaxed),
                    age_secs: ch.opened.elapsed().as_secs(),
                })
                .collect()
        })
        .unwrap_or_default();
    channels.sort_by_key(|c| std::cmp::Reverse(c.age_secs));
    let link = match state.node.state() {
        crate::LinkState::Online => "online".to_owned(),
        crate::LinkState::Connecting {
            attempt,
            last_error,
        } => match last_error {
            Some(e) => format!("connecting (attempt {attempt}; last error: {e})"),
            None => "connecting".to_owned(),
        },
        crate::LinkState::Refused { reason } => format!("refused: {reason}"),
    };
    Status {
        node_id: state.node.node_id().to_string(),
        relay: state.relay.to_string(),
        link,
        services,
        channels,
    }
}
