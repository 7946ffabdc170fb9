//! The `mcp` part of the binding: MCP over nullport without a bridge process.
//!
//! - The client side ([`mcp_connect`]): dials the peer's service and runs the Rust caller side
//!   of `nullport mcp bridge` ([`nullport::mcp::caller_pipe_with`]: each `tools/call` signed,
//!   each receipt checked) between the channel and an in-memory stream whose other end is an
//!   [`McpLink`] of JSON-RPC lines, which `nullport.mcp.connect` turns into the SDK's streams.
//! - The serving side ([`McpService`]): an embedded MCP service ([`nullport::mcp::embed`]: the
//!   daemon's access decision, firewall, policy file, receipts and audit) whose upstream is
//!   in this process: each caller session the firewall lets through is an [`McpLink`] that
//!   `nullport.mcp.serve` hands to the Python server.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use nullport::audit::Audit;
use nullport::home::Home;
use nullport::mcp::embed::EmbeddedMcp;
use nullport::mcp::receipt::Receipt;
use nullport::mcp::{CheckedReceipt, Embedded, EmbeddedIo, Session, UpstreamSpec};
use nullport::tasks::OwnedTask;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::errors::{ChannelClosed, NullportError, node_error};
use crate::node::{Node, NodeShared, token_blob};

/// Lines waiting in either direction of a link.
const LINK_QUEUE: usize = 64;

/// Buffer of the in-memory stream between a link and the Rust MCP side.
const LINK_BUFFER: usize = 1 << 16;

/// The Rust side of a client link: the caller pipe, and its receipts.
struct Pipe {
    task: tokio::sync::Mutex<Option<JoinHandle<io::Result<()>>>>,
    ended: Mutex<Option<String>>,
    receipts: Mutex<(mpsc::UnboundedReceiver<CheckedReceipt>, Vec<CheckedReceipt>)>,
}

impl Drop for Pipe {
    fn drop(&mut self) {
        // A link dropped without `aclose()`: its channel goes with it.
        if let Some(task) = self.task.get_mut().take() {
            task.abort();
        }
    }
}

/// One MCP session as newline-delimited JSON-RPC lines, to and from the Rust MCP side (the
/// caller pipe of a client, or the firewall of a served session). `nullport.mcp` turns it
/// into the SDK's streams of `SessionMessage`s; use that, not this.
#[pyclass(module = "nullport._native", frozen)]
pub struct McpLink {
    lines: Arc<tokio::sync::Mutex<mpsc::Receiver<Vec<u8>>>>,
    out: Mutex<Option<mpsc::Sender<Vec<u8>>>>,
    pipe: Option<Arc<Pipe>>,
    peer: String,
    alias: Option<String>,
    service: String,
    _pumps: [OwnedTask<()>; 2],
}

impl McpLink {
    /// A link over `stream` (must run inside the runtime: it spawns the two pumps).
    fn new(
        stream: DuplexStream,
        pipe: Option<Arc<Pipe>>,
        peer: String,
        alias: Option<String>,
        service: String,
    ) -> Self {
        let (read, mut write) = tokio::io::split(stream);
        let (lines_tx, lines) = mpsc::channel::<Vec<u8>>(LINK_QUEUE);
        let (out, mut outgoing) = mpsc::channel::<Vec<u8>>(LINK_QUEUE);
        let reader = OwnedTask::spawn(async move {
            let mut read = BufReader::new(read);
            loop {
                let mut line = Vec::new();
                match read.read_until(b'\n', &mut line).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                if lines_tx.send(line).await.is_err() {
                    return;
                }
            }
        });
        let writer = OwnedTask::spawn(async move {
            while let Some(mut line) = outgoing.recv().await {
                line.push(b'\n');
                if write.write_all(&line).await.is_err() {
                    return;
                }
            }
            let _ = write.shutdown().await;
        });
        McpLink {
            lines: Arc::new(tokio::sync::Mutex::new(lines)),
            out: Mutex::new(Some(out)),
            pipe,
            peer,
            alias,
            service,
            _pumps: [reader, writer],
        }
    }

    /// The error of a send after the session ended.
    fn ended(&self) -> PyErr {
        let why = self
            .pipe
            .as_ref()
            .and_then(|p| p.ended.lock().ok().and_then(|e| e.clone()));
        ChannelClosed::new_err(why.unwrap_or_else(|| "the MCP session has ended".into()))
    }

    fn stop_sending(&self) {
        if let Ok(mut out) = self.out.lock() {
            out.take();
        }
    }
}

#[pymethods]
impl McpLink {
    /// The peer: the callee (client side) or the caller (serving side), a NodeId.
    #[getter]
    fn peer(&self) -> &str {
        &self.peer
    }

    /// The caller's alias in the serving node's trust store, if it has one (serving side).
    #[getter]
    fn alias(&self) -> Option<&str> {
        self.alias.as_deref()
    }

    /// The MCP service.
    #[getter]
    fn service(&self) -> &str {
        &self.service
    }

    /// The next JSON-RPC message (one line, without its newline), or None once the other
    /// side is done. Cancelling it loses nothing.
    fn recv<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let lines = self.lines.clone();
        crate::aio::future_into_coro(py, async move { Ok(lines.lock().await.recv().await) })
    }

    /// Sends one JSON-RPC message (one line, without a newline). Raises `ChannelClosed` once
    /// the session has ended or `close_input()` was called.
    fn send<'py>(&self, py: Python<'py>, line: PyBackedBytes) -> PyResult<Bound<'py, PyAny>> {
        let out = self.out.lock().ok().and_then(|o| o.clone());
        let pipe = self.pipe.clone();
        crate::aio::future_into_coro(py, async move {
            let ended = || {
                let why = pipe
                    .as_ref()
                    .and_then(|p| p.ended.lock().ok().and_then(|e| e.clone()));
                ChannelClosed::new_err(why.unwrap_or_else(|| "the MCP session has ended".into()))
            };
            if line.contains(&b'\n') {
                return Err(PyValueError::new_err("a JSON-RPC message is one line"));
            }
            let out = out.ok_or_else(ended)?;
            out.send(line.to_vec()).await.map_err(|_| ended())
        })
    }

    /// Queues one JSON-RPC message without waiting: False if the queue is full (then
    /// `await send(line)`). Raises `ChannelClosed` as `send` does.
    fn send_nowait(&self, line: PyBackedBytes) -> PyResult<bool> {
        if line.contains(&b'\n') {
            return Err(PyValueError::new_err("a JSON-RPC message is one line"));
        }
        let out = self.out.lock().ok().and_then(|o| o.clone());
        let Some(out) = out else {
            return Err(self.ended());
        };
        match out.try_send(line.to_vec()) {
            Ok(()) => Ok(true),
            Err(mpsc::error::TrySendError::Full(_)) => Ok(false),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(self.ended()),
        }
    }

    /// The next JSON-RPC message if one is already here, without waiting (None: none now,
    /// or the session is over: then `await recv()` says which).
    fn recv_nowait(&self) -> Option<Vec<u8>> {
        self.lines.try_lock().ok()?.try_recv().ok()
    }

    /// Stops sending: the other side reads the end of this session's input (the caller pipe
    /// closes the channel's sending side; a served session ends at the caller).
    fn close_input(&self) {
        self.stop_sending();
    }

    /// Ends the session: stops sending, then waits up to `timeout` seconds for the Rust
    /// side to finish (the peer to close its side); past that, the channel is dropped. Never
    /// waits longer than `timeout`.
    #[pyo3(signature = (timeout=2.0))]
    fn aclose<'py>(&self, py: Python<'py>, timeout: f64) -> PyResult<Bound<'py, PyAny>> {
        self.stop_sending();
        let within = Duration::try_from_secs_f64(timeout)
            .map_err(|e| PyValueError::new_err(format!("timeout: {e}")))?;
        let pipe = self.pipe.clone();
        crate::aio::future_into_coro(py, async move {
            let Some(pipe) = pipe else { return Ok(()) };
            let Some(mut task) = pipe.task.lock().await.take() else {
                return Ok(());
            };
            let result = match tokio::time::timeout(within, &mut task).await {
                Ok(joined) => joined.unwrap_or_else(|e| Err(io::Error::other(e))),
                Err(_) => {
                    task.abort();
                    Err(io::Error::other("closed: the peer did not finish in time"))
                }
            };
            if let (Err(e), Ok(mut ended)) = (result, pipe.ended.lock()) {
                ended.get_or_insert_with(|| e.to_string());
            }
            Ok(())
        })
    }

    /// Why the session ended, if it ended with an error (client side).
    #[getter]
    fn error(&self) -> Option<String> {
        self.pipe
            .as_ref()
            .and_then(|p| p.ended.lock().ok().and_then(|e| e.clone()))
    }

    /// The receipts the callee sent so far, each as `(json, valid)`: the receipt's JSON, and
    /// whether the caller side's checks passed (signed by the callee, for this caller and
    /// channel, over the request sent and the answer received). Client side only.
    fn receipts(&self) -> Vec<(String, bool)> {
        let Some(pipe) = &self.pipe else {
            return Vec::new();
        };
        let Ok(mut r) = pipe.receipts.lock() else {
            return Vec::new();
        };
        let (incoming, kept) = &mut *r;
        while let Ok(next) = incoming.try_recv() {
            kept.push(next);
        }
        kept.iter()
            .map(|c| {
                let json = serde_json::to_string(&c.receipt).unwrap_or_default();
                (json, c.valid)
            })
            .collect()
    }

    fn __repr__(&self) -> String {
        format!("McpLink(peer={}, service={:?})", self.peer, self.service)
    }
}

/// Audit logs opened by this process, by home: one writer per log (two would each chain
/// their own events and break the log's hash chain).
fn home_audit(home: &Home, identity: &nullport_protocol::Identity) -> PyResult<Audit> {
    static OPEN: OnceLock<Mutex<HashMap<PathBuf, Audit>>> = OnceLock::new();
    let mut open = OPEN
        .get_or_init(Mutex::default)
        .lock()
        .map_err(|_| NullportError::new_err("audit logs unavailable"))?;
    let path = home.audit();
    if let Some(audit) = open.get(&path) {
        return Ok(audit.clone());
    }
    let audit = Audit::open(&path, identity, Default::default())
        .map_err(|e| NullportError::new_err(format!("audit log {}: {e}", path.display())))?;
    open.insert(path, audit.clone());
    Ok(audit)
}

fn audit_for(shared: &NodeShared, home: Option<&Home>, audit: bool) -> PyResult<Audit> {
    match home.or(shared.home.as_ref()) {
        Some(home) if audit => home_audit(home, &shared.identity),
        _ => Ok(Audit::disabled()),
    }
}

/// Opens an MCP session with `service` on `peer` (a NodeId or an alias of the node's home),
/// presenting `token` (as `Node.dial` takes it) if given: dials it and runs the caller side
/// of `nullport mcp bridge` over the channel. Returns an `McpLink`. `audit`: record
/// signatures and receipts in the node's home audit log, as the bridge does in its daemon's
/// (when the node has a home).
#[pyfunction]
#[pyo3(signature = (node, peer, service, audit=true, token=None))]
fn mcp_connect<'py>(
    py: Python<'py>,
    node: &Node,
    peer: &str,
    service: String,
    audit: bool,
    token: Option<String>,
) -> PyResult<Bound<'py, PyAny>> {
    let shared = node.shared.clone();
    let target = shared.resolve_peer(peer)?;
    let blob = token_blob(token)?;
    let audit = audit_for(&shared, None, audit)?;
    crate::aio::future_into_coro(py, async move {
        let channel = shared
            .node
            .dial_with(target, &service, blob)
            .await
            .map_err(node_error)?;
        let session = Session {
            caller: shared.node.node_id(),
            service: service.clone(),
            handshake: *channel.handshake_hash(),
            signer: shared.identity.clone(),
            caller_alias: None,
        };
        let (local, ours) = tokio::io::duplex(LINK_BUFFER);
        let (sink, receipts) = mpsc::unbounded_channel();
        let task = tokio::spawn(nullport::mcp::caller_pipe_with(
            local,
            channel,
            session,
            target,
            audit,
            None,
            Some(sink),
        ));
        let pipe = Arc::new(Pipe {
            task: tokio::sync::Mutex::new(Some(task)),
            ended: Mutex::new(None),
            receipts: Mutex::new((receipts, Vec::new())),
        });
        Ok(McpLink::new(
            ours,
            Some(pipe),
            target.to_string(),
            None,
            service,
        ))
    })
}

/// Whether a receipt (its JSON, as `McpLink.receipts()` gives it) carries a valid signature
/// of the callee it names.
#[pyfunction]
fn mcp_receipt_signature_valid(receipt: &str) -> bool {
    serde_json::from_str::<Receipt>(receipt).is_ok_and(|r| r.verify())
}

/// An MCP service of this node served by a server in this process, behind the Rust
/// firewall (see the module doc). Each caller session the access decision admits is an
/// `McpLink` from `next_session()`.
#[pyclass(module = "nullport._native", frozen)]
pub struct McpService {
    embedded: EmbeddedMcp,
    sessions: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<McpLink>>>,
    running: Mutex<Option<OwnedTask<()>>>,
}

/// Starts serving MCP service `service` of `node`: its incoming channels are decided by
/// `home`'s policy.toml and trust.toml (default: the node's home) and served behind the
/// firewall, audited to the home's audit log if `audit`.
#[pyfunction]
#[pyo3(signature = (node, service, home=None, audit=true))]
fn mcp_serve(
    node: &Node,
    service: &str,
    home: Option<PathBuf>,
    audit: bool,
) -> PyResult<McpService> {
    let shared = node.shared.clone();
    let home = home
        .map(Home::at)
        .or_else(|| shared.home.clone())
        .ok_or_else(|| {
            PyValueError::new_err(
                "serving MCP needs a home (its policy.toml and trust.toml decide who may call): pass home=",
            )
        })?;
    let audit = audit_for(&shared, Some(&home), audit)?;
    let _runtime = pyo3_async_runtimes::tokio::get_runtime().enter();
    let (tx, sessions) = mpsc::unbounded_channel::<McpLink>();
    let upstream = UpstreamSpec::Embedded(Embedded::new(move |session: &Session| {
        let (ours, theirs) = tokio::io::duplex(LINK_BUFFER);
        let link = McpLink::new(
            theirs,
            None,
            session.caller.to_string(),
            session.caller_alias.clone(),
            session.service.clone(),
        );
        tx.send(link)
            .map_err(|_| io::Error::other("the Python MCP server stopped serving"))?;
        Ok(Box::new(ours) as Box<dyn EmbeddedIo>)
    }));
    let embedded = EmbeddedMcp::new(shared.identity.clone(), service, upstream, &home, audit)
        .map_err(|e| NullportError::new_err(e.to_string()))?;
    let incoming = shared.route(service)?;
    let running = {
        let embedded = embedded.clone();
        // Revocation lists and rotations from the relay, as the daemon takes them: subscribed
        // before fetching what the relay holds, so nothing published meanwhile is missed.
        // The node is held only weakly: this ends with it.
        let node = Arc::downgrade(&shared);
        let lists = shared.node.revocation_updates();
        let rotations = shared.node.rotation_updates();
        OwnedTask::spawn(async move {
            let following = async {
                let forget = |key: &nullport_protocol::NodeId| {
                    if let Some(shared) = node.upgrade() {
                        shared.node.forget_sessions(key);
                    }
                };
                if let Some(shared) = node.upgrade() {
                    embedded.catch_up(&shared.node, &forget).await;
                }
                embedded.follow_lists(lists, rotations, forget).await;
            };
            tokio::select! {
                _ = embedded.run(incoming) => {}
                _ = following => {}
            }
        })
    };
    Ok(McpService {
        embedded,
        sessions: Arc::new(tokio::sync::Mutex::new(sessions)),
        running: Mutex::new(Some(running)),
    })
}

#[pymethods]
impl McpService {
    /// The service's name.
    #[getter]
    fn service(&self) -> &str {
        self.embedded.service()
    }

    /// Caller sessions open now.
    #[getter]
    fn open_sessions(&self) -> usize {
        self.embedded.open_sessions()
    }

    /// The next caller session (an `McpLink`), or None once the service is closed.
    fn next_session<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let sessions = self.sessions.clone();
        crate::aio::future_into_coro(py, async move { Ok(sessions.lock().await.recv().await) })
    }

    /// Re-reads the home's policy, trust store and revocation lists. Live sessions whose
    /// caller is no longer allowed end at once (aborted with the reason), as at a daemon's
    /// reload; every later message is decided on the new rules. Raises `NullportError` if a
    /// file cannot be read (the rules in force stay).
    fn reload(&self) -> PyResult<()> {
        self.embedded
            .reload()
            .map_err(|e| NullportError::new_err(e.to_string()))
    }

    /// Stops serving: open sessions end, new callers are refused as unavailable.
    fn close(&self) {
        let running = self.running.lock().ok().and_then(|mut r| r.take());
        let _runtime = pyo3_async_runtimes::tokio::get_runtime().enter();
        drop(running);
    }

    fn __repr__(&self) -> String {
        format!("McpService({:?})", self.embedded.service())
    }
}

impl Drop for McpService {
    fn drop(&mut self) {
        self.close();
    }
}

/// Registers the MCP classes and functions on the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<McpLink>()?;
    m.add_class::<McpService>()?;
    m.add_function(wrap_pyfunction!(mcp_connect, m)?)?;
    m.add_function(wrap_pyfunction!(mcp_serve, m)?)?;
    m.add_function(wrap_pyfunction!(mcp_receipt_signature_valid, m)?)?;
    Ok(())
}
