//! `Node`: the embedded Rust [`nullport_node::Node`], the queue of its incoming channels
//! (`incoming()`, `accept()`), and their routing by service ([`NodeShared::route`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nullport::home::Home;
use nullport_node::{IncomingChannel, NodeConfig, RelaySpec};
use nullport_protocol::{DenyReason, NodeId};
use pyo3::exceptions::{PyStopAsyncIteration, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use tokio::sync::{mpsc, watch};

use crate::channel::channel_into_py;
use crate::errors::{NodeClosed, address_error, keyring_error, node_error};
use crate::identity::Identity;
pub(crate) use crate::incoming::Incoming;

/// Incoming channels waiting for `incoming()` (beyond: the caller is denied as unavailable).
const INCOMING_QUEUE: usize = 64;

/// Incoming channels waiting on a route.
#[allow(dead_code)] // used by the MCP serving side
const ROUTE_QUEUE: usize = 64;

/// What a Python `Node` and everything built on it (channels, routes, MCP) share.
pub(crate) struct NodeShared {
    /// The Rust node.
    pub(crate) node: nullport_node::Node,
    /// Its identity.
    #[allow(dead_code)] // used by the MCP side (signatures, receipts)
    pub(crate) identity: Arc<nullport_protocol::Identity>,
    /// The home whose trust store resolves aliases, if any.
    pub(crate) home: Option<Home>,
    /// The relay as given.
    relay: String,
    /// Where incoming channels go, by service (the rest go to `incoming`).
    routes: Mutex<HashMap<String, mpsc::Sender<IncomingChannel>>>,
    /// The incoming channels no route takes.
    incoming: tokio::sync::Mutex<mpsc::Receiver<IncomingChannel>>,
    /// Puts an incoming channel back in `incoming` (one taken for a Python task that was
    /// cancelled before it got it). Weak: the queue still ends when the node closes.
    requeue: mpsc::WeakSender<IncomingChannel>,
    /// Set once the program asks for incoming channels (`incoming()` or `accept()`). Until
    /// then a channel no route takes is refused at once as an unknown service, instead of
    /// waiting in a queue nobody reads until the caller's dial times out.
    listening: std::sync::atomic::AtomicBool,
    /// Set once the node is closed.
    closed: watch::Sender<bool>,
}

impl NodeShared {
    /// A peer by NodeId (text form) or by an alias of the home's trust store.
    pub(crate) fn resolve_peer(&self, name: &str) -> PyResult<NodeId> {
        match &self.home {
            Some(home) => nullport_keyring::TrustStore::load(&home.trust())
                .map_err(keyring_error)?
                .resolve(name)
                .map_err(address_error),
            None => name.parse::<NodeId>().map_err(|e| {
                address_error(format!(
                    "{name:?} is not a NodeId ({e}); aliases need a node started with a home"
                ))
            }),
        }
    }

    /// Sends the incoming channels for `service` to the returned receiver instead of
    /// `incoming()`. One route per service: a second one for the same service is refused
    /// while the first receiver lives.
    #[allow(dead_code)] // used by the MCP serving side
    pub(crate) fn route(&self, service: &str) -> PyResult<mpsc::Receiver<IncomingChannel>> {
        if self.is_closed() {
            return Err(NodeClosed::new_err("node is shut down"));
        }
        let mut routes = self
            .routes
            .lock()
            .map_err(|_| NodeClosed::new_err("node is shut down"))?;
        if routes.get(service).is_some_and(|tx| !tx.is_closed()) {
            return Err(PyValueError::new_err(format!(
                "service {service:?} is already routed"
            )));
        }
        let (tx, rx) = mpsc::channel(ROUTE_QUEUE);
        routes.insert(service.to_owned(), tx);
        Ok(rx)
    }

    fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Closes the node: routes and `incoming()` end, the relay link closes cleanly.
    async fn close(&self) {
        self.closed.send_replace(true);
        if let Ok(mut routes) = self.routes.lock() {
            routes.clear();
        }
        self.node.close().await;
    }
}

impl Drop for NodeShared {
    fn drop(&mut self) {
        // The Rust node's own drop closes its endpoint; inside the runtime, as it expects.
        let _runtime = pyo3_async_runtimes::tokio::get_runtime().enter();
        self.closed.send_replace(true);
    }
}

/// Hands each incoming channel to its service's route, or to `incoming()`, until the node
/// closes. Holds the node only weakly between channels, so dropping it stops this.
async fn dispatch(
    shared: std::sync::Weak<NodeShared>,
    default: mpsc::Sender<IncomingChannel>,
    mut closed: watch::Receiver<bool>,
) {
    loop {
        let Some(node) = shared.upgrade() else { return };
        let next = tokio::select! {
            next = node.node.accept() => next,
            _ = closed.wait_for(|c| *c) => None,
        };
        let Some(incoming) = next else { return };
        let route = node
            .routes
            .lock()
            .ok()
            .and_then(|r| r.get(incoming.service()).cloned());
        let listening = node.listening.load(std::sync::atomic::Ordering::Acquire);
        drop(node);
        let full = match route {
            Some(tx) => tx.try_send(incoming),
            None if listening => default.try_send(incoming),
            None => {
                tokio::spawn(async move {
                    let _ = incoming.deny(DenyReason::UnknownService).await;
                });
                continue;
            }
        };
        if let Err(
            mpsc::error::TrySendError::Full(incoming) | mpsc::error::TrySendError::Closed(incoming),
        ) = full
        {
            tokio::spawn(async move {
                let _ = incoming.deny(DenyReason::Unavailable).await;
            });
        }
    }
}

/// A running node: dials out to its relay, opens channels to peers' services, and takes
/// incoming channels. Start one with `await Node.start(identity, relay)`; use it as an
/// async context manager (`async with await Node.start(...) as node:`) or call `close()`.
#[pyclass(module = "nullport._native", frozen)]
pub struct Node {
    pub(crate) shared: Arc<NodeShared>,
}

impl Drop for Node {
    fn drop(&mut self) {
        // Stops the dispatcher, which is all that keeps the Rust node alive besides this.
        self.shared.closed.send_replace(true);
    }
}

/// Turns a token as `nullport token` prints it (or `@FILE`) into the handshake blob.
pub(crate) fn token_blob(token: Option<String>) -> PyResult<Vec<u8>> {
    let Some(token) = token else {
        return Ok(Vec::new());
    };
    let text = match token.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| address_error(format!("reading token file {path}: {e}")))?
            .trim()
            .to_owned(),
        None => token.trim().to_owned(),
    };
    nullport_keyring::token::Token::from_text(&text)
        .map(|t| t.to_bytes())
        .map_err(|e| address_error(format!("bad token: {e}")))
}

/// The relay of a home's `config.toml`.
fn configured_relay(home: &Home) -> PyResult<String> {
    let config = home.config();
    nullport::config_file::NodeFile::load(&config)
        .map_err(address_error)?
        .relay
        .ok_or_else(|| {
            address_error(format!(
                "no relay given, and none in {} (relay = \"np...@host:port\")",
                config.display()
            ))
        })
}

#[pymethods]
impl Node {
    /// Starts a node with `identity`, linked to `relay` (`<relay NodeId>@<host>:<port>`, or a
    /// fleet's `fleet:<admin>/<relay>@<host>:<port>`, as the CLI takes it), and waits up to
    /// `timeout` seconds until the relay admits it.
    ///
    /// `home`: a nullport home whose trust store resolves peer aliases (default: the home the
    /// identity was loaded from, if any); without `relay`, the relay of that home's
    /// `config.toml` (as `nullport up` uses it). Raises `InvalidAddress` (bad relay string),
    /// `RelayRefused`, `RelayUnreachable` or `Timeout`.
    #[staticmethod]
    #[pyo3(signature = (identity, relay=None, home=None, *, timeout=10.0))]
    fn start<'py>(
        py: Python<'py>,
        identity: &Identity,
        relay: Option<String>,
        home: Option<PathBuf>,
        timeout: f64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let home = home.map(Home::at).or_else(|| identity.home.clone());
        let relay = match (relay, &home) {
            (Some(relay), _) => relay,
            (None, Some(home)) => configured_relay(home)?,
            (None, None) => {
                return Err(address_error(
                    "no relay given, and no home to read one from (pass relay=\"np...@host:port\")",
                ));
            }
        };
        let spec: RelaySpec = relay.trim().parse().map_err(node_error)?;
        let within = Duration::try_from_secs_f64(timeout)
            .map_err(|e| PyValueError::new_err(format!("timeout: {e}")))?;
        let id = identity.inner.clone();
        let config = NodeConfig::for_relay(id.clone(), &spec).map_err(node_error)?;
        crate::aio::future_into_coro(py, async move {
            let node = nullport_node::Node::start(config)
                .await
                .map_err(node_error)?;
            if let Err(e) = node.wait_online(within).await {
                node.shutdown().await;
                return Err(node_error(e));
            }
            let (default_tx, default_rx) = mpsc::channel(INCOMING_QUEUE);
            let (closed, closed_rx) = watch::channel(false);
            let shared = Arc::new(NodeShared {
                node,
                identity: id,
                home,
                relay: spec.to_string(),
                routes: Mutex::new(HashMap::new()),
                incoming: tokio::sync::Mutex::new(default_rx),
                requeue: default_tx.downgrade(),
                listening: std::sync::atomic::AtomicBool::new(false),
                closed,
            });
            tokio::spawn(dispatch(Arc::downgrade(&shared), default_tx, closed_rx));
            Ok(Node { shared })
        })
    }

    /// This node's NodeId.
    #[getter]
    fn node_id(&self) -> String {
        self.shared.node.node_id().to_string()
    }

    /// Opens a channel to `service` on `peer` (a NodeId, or an alias of the home's trust
    /// store), presenting `token` (a capability token as `nullport token` prints it, or
    /// `@FILE`) if given. Returns a `Channel`.
    ///
    /// `first` (at most 65,518 bytes) goes out with the handshake's last message, so the
    /// peer's first answer comes one round trip sooner than after a dial and a write; the
    /// peer reads it only once it accepted, and drops it unread if it refuses.
    ///
    /// Raises `PeerOffline`, `PeerBusy`, `DialReset`, `NotAllowed` (the peer refused: the
    /// message says why), `InvalidAddress` (bad NodeId, unknown alias, bad service name or
    /// token), `Timeout`, `HandshakeFailed`, `NodeClosed`; `ValueError` for a `first` longer
    /// than 65,518 bytes.
    #[pyo3(signature = (peer, service, token=None, *, first=None))]
    fn dial<'py>(
        &self,
        py: Python<'py>,
        peer: &str,
        service: String,
        token: Option<String>,
        first: Option<pyo3::pybacked::PyBackedBytes>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let shared = self.shared.clone();
        let target = shared.resolve_peer(peer)?;
        let blob = token_blob(token)?;
        // Checked before anything is copied.
        let first = match first {
            Some(b) if b.len() > nullport_protocol::limits::MAX_FIRST_BYTES => {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "first bytes of a dial: {} bytes, at most {}",
                    b.len(),
                    nullport_protocol::limits::MAX_FIRST_BYTES
                )));
            }
            Some(b) => b.to_vec(),
            None => Vec::new(),
        };
        crate::aio::future_into_coro(py, async move {
            let mut closed = shared.closed.subscribe();
            if *closed.borrow() {
                return Err(node_error(nullport_node::Error::Shutdown));
            }
            let dialed = tokio::select! {
                dialed = shared.node.dial_sending(
                    target,
                    &service,
                    blob,
                    nullport_node::FirstBytes::Bytes(first),
                ) => dialed,
                _ = closed.wait_for(|c| *c) => Err(nullport_node::Error::Shutdown),
            };
            dialed.map(channel_into_py).map_err(node_error)
        })
    }

    /// Whether `peer` (NodeId or alias) is connected to the relay now.
    fn presence<'py>(&self, py: Python<'py>, peer: &str) -> PyResult<Bound<'py, PyAny>> {
        let shared = self.shared.clone();
        let target = shared.resolve_peer(peer)?;
        crate::aio::future_into_coro(py, async move {
            shared.node.presence(target).await.map_err(node_error)
        })
    }

    /// The incoming channels, as an async iterator of `Incoming` (accept or deny each);
    /// it ends when the node closes. Channels arrive only once the peer proved who it is.
    /// Until a caller is accepted or denied it waits (up to its own dial timeout); more
    /// than 64 waiting are denied as unavailable. Until the program first calls
    /// `incoming()` or `accept()`, a channel to a service no route serves is refused at once
    /// as an unknown service (a node that only dials never leaves a caller waiting).
    fn incoming(&self) -> IncomingIter {
        self.shared
            .listening
            .store(true, std::sync::atomic::Ordering::Release);
        IncomingIter {
            shared: self.shared.clone(),
        }
    }

    /// The next incoming channel (as `incoming()` yields them); raises `NodeClosed` once the
    /// node is closed.
    fn accept<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        next_incoming_coro(py, &self.shared, || {
            NodeClosed::new_err("node is shut down")
        })
    }

    /// The node's state: a dict with `node_id`, `state` (the relay link's state in words),
    /// `online` (bool), `relay` (as given), `relay_id`, `home_relay` (the relay it is homed
    /// on now, or None) and `links` (a list of `{"relay": NodeId, "up": bool}`).
    fn status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let node = &self.shared.node;
        let dict = PyDict::new(py);
        let state = node.state();
        dict.set_item("node_id", node.node_id().to_string())?;
        dict.set_item("state", state.to_string())?;
        dict.set_item("online", state.is_online() && !self.shared.is_closed())?;
        dict.set_item("closed", self.shared.is_closed())?;
        dict.set_item("relay", &self.shared.relay)?;
        dict.set_item("relay_id", node.relay_id().to_string())?;
        dict.set_item("home_relay", node.home_relay().map(|r| r.to_string()))?;
        let links = PyList::empty(py);
        for (relay, up) in node.relay_links() {
            let link = PyDict::new(py);
            link.set_item("relay", relay.to_string())?;
            link.set_item("up", up)?;
            links.append(link)?;
        }
        dict.set_item("links", links)?;
        Ok(dict)
    }

    /// Closes the node: the relay link closes cleanly (after the last bytes of finished
    /// channels are acknowledged, up to two seconds), `incoming()` ends, later dials raise
    /// `NodeClosed`. Open channels end with the link. Closing twice is harmless.
    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let shared = self.shared.clone();
        crate::aio::future_into_coro(py, async move {
            shared.close().await;
            Ok(())
        })
    }

    fn __aenter__<'py>(slf: Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        crate::aio::ready(slf.py(), slf.into_any())
    }

    #[pyo3(signature = (*_exc))]
    fn __aexit__<'py>(
        &self,
        py: Python<'py>,
        _exc: &Bound<'py, pyo3::types::PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.close(py)
    }

    fn __repr__(&self) -> String {
        format!("Node({})", self.shared.node.node_id())
    }
}

/// A coroutine for the next incoming channel (`ended` once the node is closed); a channel
/// taken for a task cancelled before it got it is given back.
fn next_incoming_coro<'py>(
    py: Python<'py>,
    shared: &Arc<NodeShared>,
    ended: fn() -> PyErr,
) -> PyResult<Bound<'py, PyAny>> {
    shared
        .listening
        .store(true, std::sync::atomic::Ordering::Release);
    let shared = shared.clone();
    crate::aio::future_into_coro_giving_back(
        py,
        async move { next_incoming(&shared).await.ok_or_else(ended) },
        |incoming: Incoming| incoming.give_back(),
    )
}

async fn next_incoming(shared: &NodeShared) -> Option<Incoming> {
    let incoming = shared.incoming.lock().await.recv().await?;
    Some(Incoming::new(incoming, shared.requeue.clone()))
}

/// The async iterator `Node.incoming()` returns.
#[pyclass(module = "nullport._native", frozen)]
pub struct IncomingIter {
    shared: Arc<NodeShared>,
}

#[pymethods]
impl IncomingIter {
    fn __aiter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        next_incoming_coro(py, &self.shared, || PyStopAsyncIteration::new_err(()))
    }
}
