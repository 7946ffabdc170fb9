//! The daemon behind `nullport up`: one relay link, the exposed services, the access
//! decision, and a Unix control socket for the CLI. In rooms: this file (start, shutdown, the
//! shared `State` and the access snapshot), `channels` (the table of open channels and the
//! overseer that re-checks them), `incoming` (serving a channel a peer opened), `control`
//! (the control socket), `lists` (revocation lists and rotations from the relay), `scrape`
//! (the metrics listener).

mod attach;
pub(crate) mod channels;
mod console;
mod control;
pub(crate) mod incoming;
pub(crate) mod lists;
mod outgoing;
mod relay_map;
mod scrape;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use nullport_audit::{AuditConfig, Checkpoint, NodeEvent};
use nullport_keyring::revocation::RevocationSet;
use nullport_keyring::{Policy, TrustStore};
use nullport_protocol::relay_link::WitnessedCheckpoint;
use nullport_protocol::{Identity, NodeId};
use tokio::net::UnixStream;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::access::{Access, AccessSettings};
use crate::audit::Audit;
use crate::config_file::ConfigError;
use crate::config_file::NodeFile;
use crate::home::Home;
use crate::mcp::approvals::Approvals;
use nullport_node::{Error, Node, NodeConfig, NodeLimits, RelaySpec};

pub use outgoing::explain;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// Another daemon answers on this home's control socket.
    #[error("a nullport daemon is already running for {}", .0.display())]
    AlreadyRunning(std::path::PathBuf),
    /// The node's config file is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A key, trust, policy or revocation file (or the home's permissions) is unusable.
    #[error(transparent)]
    Keyring(#[from] nullport_keyring::Error),
    /// The audit log cannot be opened.
    #[error(transparent)]
    Audit(#[from] nullport_audit::AuditError),
    /// The node could not start.
    #[error(transparent)]
    Node(#[from] Error),
    /// The webhook in `[approvals]` is not usable.
    #[error("{path}: {error}")]
    Webhook {
        /// The config file.
        path: std::path::PathBuf,
        /// What is wrong.
        error: crate::notify::WebhookError,
    },
    /// A sandboxed service cannot be made as configured (checked at every load).
    #[error("{path}: service {service:?}: {error}")]
    Sandbox {
        /// The config file.
        path: std::path::PathBuf,
        /// The service.
        service: String,
        /// What is wrong.
        error: crate::sandbox::SandboxError,
    },
    /// Metrics are served on loopback only.
    #[error("metrics listen on loopback only (127.0.0.1:PORT or [::1]:PORT), not {0}")]
    MetricsNotLoopback(std::net::SocketAddr),
    /// The console's listener could not be bound.
    #[error("console on {addr}: {error}")]
    Console {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        error: std::io::Error,
    },
    /// The metrics listener could not be bound.
    #[error("metrics listener {addr}: {error}")]
    Metrics {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        error: std::io::Error,
    },
    /// The control socket could not be created.
    #[error("control socket {path}: {error}")]
    Socket {
        /// The socket path.
        path: String,
        /// The OS error.
        error: std::io::Error,
    },
}

/// The files of the home the daemon works from.
#[derive(Debug, Clone)]
pub(crate) struct Files {
    pub(crate) config: NodeFile,
    pub(crate) policy: Policy,
    pub(crate) trust: TrustStore,
}

impl Files {
    fn load(home: &Home) -> Result<Files, DaemonError> {
        let config = NodeFile::load(&home.config())?;
        let path_var = std::env::var("PATH").ok();
        crate::sandbox::check_all(config.sandboxes(), home.dir(), path_var.as_deref()).map_err(
            |(service, error)| DaemonError::Sandbox {
                path: home.config(),
                service,
                error,
            },
        )?;
        if let Some(url) = &config.approvals.webhook {
            crate::notify::Webhook::parse(url).map_err(|error| DaemonError::Webhook {
                path: home.config(),
                error,
            })?;
        }
        let policy = Policy::load(&home.policy())?;
        let trust = TrustStore::load(&home.trust())?;
        Ok(Files {
            config,
            policy,
            trust,
        })
    }
}

pub(crate) struct State {
    pub(crate) home: Home,
    pub(crate) relay: RelaySpec,
    pub(crate) node: Node,
    pub(crate) identity: Arc<Identity>,
    pub(crate) files: RwLock<Files>,
    /// Revocation lists held (the source of the snapshot's copy).
    pub(crate) revocations: Mutex<RevocationSet>,
    /// Rotations followed, old -> new (the old keys are refused for good).
    pub(crate) rotations: Mutex<BTreeMap<NodeId, NodeId>>,
    /// The access snapshot every decision reads; replaced whenever what it holds changes.
    pub(crate) access: watch::Sender<Arc<Access>>,
    pub(crate) channels: channels::Table,
    pub(crate) shutdown: watch::Sender<bool>,
    pub(crate) approvals: Arc<Approvals>,
    pub(crate) audit: Audit,
    pub(crate) witness_idle: watch::Sender<bool>,
    /// How recent pipes ended (id -> the reason, if not cleanly), for `nullport pipe` to say.
    pub(crate) pipe_endings: watch::Sender<PipeEndings>,
    /// Short jobs started by control requests (fetching lists after a reload); stopped at
    /// shutdown.
    pub(crate) jobs: Mutex<JoinSet<()>>,
    /// Why the files on disk are not the ones in force (the last reload that failed), until
    /// a reload succeeds.
    pub(crate) reload_error: Mutex<Option<String>>,
    /// Set when someone asked the daemon to stop (`nullport down`).
    pub(crate) stop: watch::Sender<bool>,
    /// Counters for the metrics listener (fed by the audit events).
    pub(crate) metrics: Arc<crate::metrics::NodeMetrics>,
    /// Pinned MCP tool manifests (`pins.json`).
    pub(crate) pins: Arc<crate::mcp::pins::Pins>,
    /// The `[link]` settings the daemon started with (changes take effect at the next start).
    pub(crate) started_link: crate::config_file::LinkTable,
    /// The local console's address while it runs (`http://127.0.0.1:PORT`, no token).
    pub(crate) console_url: watch::Sender<Option<String>>,
    /// The local console, once started.
    pub(crate) console: Mutex<Option<console::Running>>,
}

/// The last [`PipeEndings::KEPT`] pipe endings.
#[derive(Debug, Default)]
pub(crate) struct PipeEndings {
    next: u64,
    ended: std::collections::VecDeque<(u64, Option<String>)>,
}

impl PipeEndings {
    const KEPT: usize = 256;

    /// A new pipe's id.
    pub(crate) fn open(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// Records how pipe `id` ended.
    pub(crate) fn end(&mut self, id: u64, reason: Option<String>) {
        if self.ended.len() >= Self::KEPT {
            self.ended.pop_front();
        }
        self.ended.push_back((id, reason));
    }

    /// How pipe `id` ended (None: not yet, or long forgotten).
    pub(crate) fn ending(&self, id: u64) -> Option<&Option<String>> {
        self.ended.iter().find(|(i, _)| *i == id).map(|(_, r)| r)
    }
}

impl State {
    /// Re-reads config, policy and trust store. If any of them cannot be loaded, the ones in
    /// force stay, the failure is logged at warn and kept for `status` until a reload
    /// succeeds.
    pub(crate) fn reload(self: &Arc<Self>) -> Result<(), DaemonError> {
        let files = match Files::load(&self.home) {
            Ok(files) => files,
            Err(e) => {
                tracing::warn!("reload refused, the previous configuration stays in force: {e}");
                if let Ok(mut r) = self.reload_error.lock() {
                    *r = Some(e.to_string());
                }
                return Err(e);
            }
        };
        if let Ok(mut r) = self.reload_error.lock() {
            *r = None;
        }
        let signers = |f: &Files| f.policy.revocation_signers(&f.trust);
        let new_signers = signers(&files);
        let changed = self
            .files
            .read()
            .map(|f| signers(&f) != new_signers)
            .unwrap_or(true);
        if let Ok(mut f) = self.files.write() {
            *f = files;
        }
        self.rebuild_access();
        tracing::info!("reloaded config, policy and trust store");
        if changed {
            // Lists of newly trusted signers were not kept before: fetch them now.
            let state = self.clone();
            self.spawn_job(async move {
                match state.node.revocation_lists().await {
                    Ok(all) => {
                        for list in all {
                            let _ = lists::apply_list(&state, &list);
                        }
                    }
                    Err(e) => tracing::info!("revocation lists not fetched: {e}"),
                }
            });
        }
        Ok(())
    }

    /// Runs `job` on a task the daemon owns (reaping the jobs already finished).
    pub(crate) fn spawn_job(&self, job: impl std::future::Future<Output = ()> + Send + 'static) {
        if let Ok(mut jobs) = self.jobs.lock() {
            while jobs.try_join_next().is_some() {}
            jobs.spawn(job.in_current_span());
        }
    }

    /// Rebuilds the access snapshot from the files, lists and retired keys; live channels
    /// are re-checked against it by the overseer.
    pub(crate) fn rebuild_access(&self) {
        let Ok(files) = self.files.read() else {
            return;
        };
        let revocations = self
            .revocations
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default();
        let rotations = self.rotations.lock().map(|r| r.clone()).unwrap_or_default();
        let access = Access {
            me: self.identity.node_id(),
            services: files.config.services.clone(),
            policy: files.policy.clone(),
            trust: files.trust.clone(),
            revocations,
            rotations,
            settings: AccessSettings::from(&files.config.access),
        };
        let access = Arc::new(access);
        self.access.send_replace(access.clone());
        // A standing approval ends with the access it was made under.
        let now = crate::tokens::unix_now();
        self.approvals.retain_grants(|g| {
            access
                .mcp_grant(&g.caller, &g.service, &[], now)
                .is_some_and(|m| {
                    nullport_keyring::pattern::any_matches(
                        nullport_keyring::pattern::PatternKind::Glob,
                        &m.rules.tools,
                        &g.tool,
                    )
                })
        });
    }

    /// The access snapshot now.
    pub(crate) fn access(&self) -> Arc<Access> {
        self.access.borrow().clone()
    }
}

/// A bound metrics listener, ready for [`Daemon::serve_metrics`].
#[derive(Debug)]
pub struct MetricsListener(tokio::net::TcpListener);

/// Removes the control socket when dropped, unless disarmed (a start that failed).
struct SocketGuard(Option<std::path::PathBuf>);

impl Drop for SocketGuard {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A running daemon. [`Daemon::shutdown`] closes every channel with a close frame.
pub struct Daemon {
    state: Arc<State>,
    tasks: JoinSet<()>,
}

impl Daemon {
    /// Starts the node, the service acceptor and the control socket.
    pub async fn start(
        home: Home,
        identity: Arc<Identity>,
        relay: RelaySpec,
        limits: NodeLimits,
    ) -> Result<Daemon, DaemonError> {
        let socket = home.socket();
        if UnixStream::connect(&socket).await.is_ok() {
            return Err(DaemonError::AlreadyRunning(home.dir().to_owned()));
        }
        // The socket first, the files second: a command that edits a file while the daemon
        // starts finds the socket and asks for a reload, which is served once the daemon
        // runs, so no edit falls between the load and the socket. The socket is removed
        // again if starting fails.
        let listener = control::bind(&socket)?;
        let mut unbind = SocketGuard(Some(socket.clone()));
        let files = Files::load(&home)?;
        let revocations = RevocationSet::load(&home.revocations())?;
        let rotations = lists::load_rotations(&home);
        let (witness_tx, witness_rx) = tokio::sync::mpsc::unbounded_channel();
        let defaults = AuditConfig::default();
        let audit_config = AuditConfig {
            fsync: match std::env::var("NULLPORT_AUDIT_FSYNC").as_deref() {
                Ok("entry") => nullport_audit::FsyncPolicy::EveryEntry,
                Ok("never") => nullport_audit::FsyncPolicy::Never,
                _ => nullport_audit::FsyncPolicy::AtCheckpoint,
            },
            checkpoint_every: std::env::var("NULLPORT_AUDIT_CHECKPOINT_EVERY")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(defaults.checkpoint_every),
            ..defaults
        };
        let metrics = Arc::new(crate::metrics::NodeMetrics::default());
        let audit = Audit::open(&home.audit(), &identity, audit_config)?
            .with_witness(witness_tx)
            .with_metrics(metrics.clone());
        audit.node(NodeEvent::Start, format!("relay {relay}"));
        let approval_timeout = files.config.approvals.timeout();
        let started_link = files.config.link.clone();
        let pins = Arc::new(crate::mcp::pins::Pins::load(home.pins(), audit.clone())?);
        let mut node_config = NodeConfig::for_relay(identity.clone(), &relay)?;
        node_config.limits = limits;
        if relay.admin().is_some() {
            node_config.relay_map = relay_map::load(&home.relay_map());
        }
        let node = Node::start(node_config).await?;
        let placeholder = Access {
            me: identity.node_id(),
            services: Default::default(),
            policy: files.policy.clone(),
            trust: files.trust.clone(),
            revocations: RevocationSet::default(),
            rotations: BTreeMap::new(),
            settings: AccessSettings::default(),
        };
        let state = Arc::new(State {
            home,
            relay,
            node,
            identity: identity.clone(),
            files: RwLock::new(files),
            revocations: Mutex::new(revocations),
            rotations: Mutex::new(rotations),
            access: watch::Sender::new(Arc::new(placeholder)),
            channels: channels::Table::default(),
            shutdown: watch::Sender::new(false),
            approvals: Arc::new(Approvals::new(approval_timeout, audit.clone())),
            audit,
            witness_idle: watch::Sender::new(true),
            pipe_endings: watch::Sender::new(PipeEndings::default()),
            jobs: Mutex::new(JoinSet::new()),
            reload_error: Mutex::new(None),
            stop: watch::Sender::new(false),
            metrics,
            console_url: watch::Sender::new(None),
            console: Mutex::new(None),
            started_link,
            pins,
        });
        state.rebuild_access();
        let span = tracing::info_span!("daemon", id = %state.node.node_id().fmt_short());
        let mut tasks = JoinSet::new();
        tasks.spawn(incoming::accept_loop(state.clone()).instrument(span.clone()));
        tasks.spawn(control::serve(state.clone(), listener).instrument(span.clone()));
        tasks.spawn(witness_loop(state.clone(), witness_rx).instrument(span.clone()));
        tasks.spawn(link_events(state.clone()).instrument(span.clone()));
        tasks.spawn(lists::revocation_loop(state.clone()).instrument(span.clone()));
        tasks.spawn(lists::rotation_loop(state.clone()).instrument(span.clone()));
        tasks.spawn(channels::oversee(state.clone()).instrument(span.clone()));
        if state.relay.admin().is_some() {
            tasks.spawn(relay_map::keep(state.clone()).instrument(span.clone()));
        }
        tasks.spawn(notifications(state.clone()).instrument(span));
        unbind.0 = None;
        Ok(Daemon { state, tasks })
    }

    /// The node behind the daemon.
    pub fn node(&self) -> &Node {
        &self.state.node
    }

    /// Re-reads config, policy and trust store (as `nullport reload` and SIGHUP do). On
    /// failure the previous configuration stays in force and `status` says why.
    pub fn reload(&self) -> Result<(), DaemonError> {
        self.state.reload()
    }

    /// Binds the metrics listener on `addr` (loopback only), before the daemon starts, so a
    /// bad address or a port in use fails the start rather than a running daemon.
    pub async fn bind_metrics(addr: std::net::SocketAddr) -> Result<MetricsListener, DaemonError> {
        Ok(MetricsListener(scrape::bind(addr).await?))
    }

    /// Serves Prometheus metrics on `listener` until shutdown; returns its address.
    pub fn serve_metrics(&mut self, listener: MetricsListener) -> std::net::SocketAddr {
        let bound = listener
            .0
            .local_addr()
            .unwrap_or_else(|_| std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        self.tasks
            .spawn(scrape::serve(self.state.clone(), listener.0).in_current_span());
        bound
    }

    /// Resolves when someone asked this daemon to stop (`nullport down`).
    pub async fn stop_requested(&self) {
        let mut stop = self.state.stop.subscribe();
        let _ = stop.wait_for(|s| *s).await;
    }

    /// Closes every open channel (bounded wait), the control socket and the relay link.
    pub async fn shutdown(mut self) {
        self.state.shutdown.send_replace(true);
        self.state.channels.close_all();
        self.state.audit.node(NodeEvent::Stop, "shutdown");
        self.state.audit.checkpoint();
        let deadline = Instant::now() + Duration::from_secs(3);
        let _ = tokio::time::timeout_at(deadline.into(), self.state.channels.wait_empty()).await;
        // Give the final checkpoint a moment to reach the relay.
        let mut idle = self.state.witness_idle.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(2), idle.wait_for(|i| *i)).await;
        // The close frames just written reach the relay before the link closes; then the
        // tasks stop (the control socket last, so `nullport down` returns once all is done).
        self.state.node.close().await;
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        if let Ok(mut jobs) = self.state.jobs.lock() {
            jobs.abort_all();
        }
        let _ = std::fs::remove_file(self.state.home.socket());
    }
}

/// Sends each new audit checkpoint to the relay to be witnessed, and keeps the latest
/// countersigned one in the home (`audit.witness`). While the relay is unreachable, only the
/// newest checkpoint waits.
async fn witness_loop(state: Arc<State>, mut rx: tokio::sync::mpsc::UnboundedReceiver<Checkpoint>) {
    while let Some(mut cp) = rx.recv().await {
        state.witness_idle.send_replace(false);
        while let Ok(newer) = rx.try_recv() {
            cp = newer;
        }
        let (Some(head), Some(node_sig)) = (
            nullport_protocol::Digest::from_hex(&cp.head),
            nullport_protocol::Signature::from_hex(&cp.sig),
        ) else {
            tracing::error!(
                "audit checkpoint {} is not hex: not sent to be witnessed",
                cp.seq
            );
            state.witness_idle.send_replace(rx.is_empty());
            continue;
        };
        let request = WitnessedCheckpoint {
            seq: cp.seq,
            head,
            node_sig,
            relay_sig: None,
        };
        loop {
            match state.node.witness(request.clone()).await {
                Ok(witnessed) => {
                    if let Ok(json) =
                        serde_json::to_vec_pretty(&nullport_audit::witness::to_json(&witnessed))
                    {
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
            state.witness_idle.send_replace(true);
        }
    }
}

/// Notifies the approvals' webhook and desktop, with the targets in force at each event.
async fn notifications(state: Arc<State>) {
    let events = state.approvals.subscribe();
    let files = state.clone();
    let targets = Arc::new(move || {
        let approvals = files
            .files
            .read()
            .map(|f| f.config.approvals.clone())
            .unwrap_or_default();
        crate::notify::Targets {
            webhook: approvals
                .webhook
                .as_deref()
                .and_then(|u| crate::notify::Webhook::parse(u).ok()),
            desktop: approvals.desktop.unwrap_or(true),
        }
    });
    let console = state.clone();
    let console = Arc::new(move || console.console_url.borrow().clone());
    crate::notify::run(events, state.node.node_id().to_string(), targets, console).await;
}

/// Audits relay link changes.
async fn link_events(state: Arc<State>) {
    let mut rx = state.node.watch_state();
    let mut online = false;
    while rx.changed().await.is_ok() {
        let now = matches!(*rx.borrow_and_update(), nullport_node::LinkState::Online);
        if now != online {
            online = now;
            state.audit.node(
                if now {
                    NodeEvent::LinkUp
                } else {
                    NodeEvent::LinkDown
                },
                state.relay.to_string(),
            );
        }
    }
}
