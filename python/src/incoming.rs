//! `Incoming`: an authenticated caller waiting for this node's decision (accept or deny),
//! given back to its node's queue if the wait that took it was cancelled.

use std::sync::Arc;

use nullport_node::IncomingChannel;
use nullport_protocol::DenyReason;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use tokio::sync::mpsc;

use crate::channel::{Channel, channel_into_py};
use crate::errors::node_error;

/// An authenticated caller waiting for this node's decision: `await accept()` (returns a
/// `Channel`) or `await deny(reason)`. No application byte flows before `accept`.
#[pyclass(module = "nullport._native", frozen)]
pub struct Incoming {
    inner: Arc<tokio::sync::Mutex<Option<IncomingChannel>>>,
    /// The queue it came from, to give it back to if the wait that took it was cancelled.
    requeue: mpsc::WeakSender<IncomingChannel>,
    peer: String,
    service: String,
    blob: Vec<u8>,
}

impl Incoming {
    pub(crate) fn new(
        incoming: IncomingChannel,
        requeue: mpsc::WeakSender<IncomingChannel>,
    ) -> Self {
        Incoming {
            requeue,
            peer: incoming.peer().to_string(),
            service: incoming.service().to_owned(),
            blob: incoming.blob().to_vec(),
            inner: Arc::new(tokio::sync::Mutex::new(Some(incoming))),
        }
    }
}

impl Incoming {
    /// Puts the channel back in its node's queue, so that the next `accept()` or
    /// `incoming()` sees it: for one taken for a wait that was cancelled before it got it
    /// (denied as unavailable if the queue is full or gone).
    pub(crate) fn give_back(&self) {
        let Some(channel) = self.take() else {
            return;
        };
        let returned = match self.requeue.upgrade() {
            Some(queue) => queue.try_send(channel).map_err(|e| match e {
                mpsc::error::TrySendError::Full(c) | mpsc::error::TrySendError::Closed(c) => c,
            }),
            None => Err(channel),
        };
        if let Err(channel) = returned {
            deny_unavailable(channel);
        }
    }

    /// The channel, if still undecided (then this object no longer holds it).
    fn take(&self) -> Option<IncomingChannel> {
        self.inner.try_lock().ok().and_then(|mut i| i.take())
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        // Undecided: the caller is told the service is unavailable, instead of waiting out
        // its dial or seeing a broken stream.
        if let Some(incoming) = self.take() {
            deny_unavailable(incoming);
        }
    }
}

/// Tells an undecided caller, in the background, that the service is unavailable.
fn deny_unavailable(incoming: IncomingChannel) {
    pyo3_async_runtimes::tokio::get_runtime().spawn(async move {
        let _ = incoming.deny(DenyReason::Unavailable).await;
    });
}

fn decided() -> PyErr {
    PyValueError::new_err("this incoming channel was already accepted or denied")
}

#[pymethods]
impl Incoming {
    /// Gives the channel back to the node's queue (the package's own coroutine wrapper
    /// calls it for a wait cancelled after the channel was handed to it).
    fn _give_back(&self) {
        self.give_back();
    }

    /// The caller's NodeId, proven by the handshake.
    #[getter]
    fn peer(&self) -> &str {
        &self.peer
    }

    /// The service asked for.
    #[getter]
    fn service(&self) -> &str {
        &self.service
    }

    /// The opaque blob (capability tokens) the caller presented; empty if none.
    #[getter]
    fn token_blob(&self) -> &[u8] {
        &self.blob
    }

    /// Accepts the channel; returns the `Channel`.
    fn accept<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        crate::aio::future_into_coro(py, async move {
            let incoming = inner.lock().await.take().ok_or_else(decided)?;
            let channel: Channel = incoming
                .accept()
                .await
                .map(channel_into_py)
                .map_err(node_error)?;
            Ok(channel)
        })
    }

    /// Refuses the channel; the caller's dial raises `NotAllowed` with this reason:
    /// `"not allowed"` (default), `"service not exposed"`, `"capability token rejected"`,
    /// `"rate limited"`, `"service unavailable"`, ... (or their names: `"unknown_service"`...).
    #[pyo3(signature = (reason="not allowed"))]
    fn deny<'py>(&self, py: Python<'py>, reason: &str) -> PyResult<Bound<'py, PyAny>> {
        let reason = deny_reason(reason)?;
        let inner = self.inner.clone();
        crate::aio::future_into_coro(py, async move {
            let incoming = inner.lock().await.take().ok_or_else(decided)?;
            incoming.deny(reason).await.map_err(node_error)
        })
    }

    fn __repr__(&self) -> String {
        format!("Incoming(peer={}, service={:?})", self.peer, self.service)
    }
}

/// A deny reason by its text (`"not allowed"`) or name (`"not_allowed"`).
fn deny_reason(text: &str) -> PyResult<DenyReason> {
    let all = [
        DenyReason::NotAllowed,
        DenyReason::UnknownService,
        DenyReason::BadToken,
        DenyReason::RateLimited,
        DenyReason::Unavailable,
        DenyReason::Revoked,
        DenyReason::Expired,
        DenyReason::Idle,
    ];
    let names = [
        "not_allowed",
        "unknown_service",
        "bad_token",
        "rate_limited",
        "unavailable",
        "revoked",
        "expired",
        "idle",
    ];
    let wanted = text.trim().to_ascii_lowercase();
    all.iter()
        .zip(names)
        .find(|(reason, name)| reason.to_string() == wanted || *name == wanted)
        .map(|(reason, _)| *reason)
        .ok_or_else(|| {
            PyValueError::new_err(format!(
                "unknown deny reason {text:?} (one of: {})",
                names.join(", ")
            ))
        })
}
