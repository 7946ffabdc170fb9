//! `Channel`: an end-to-end channel to a peer's service, over the Rust
//! [`nullport_node::Channel`] (split into read and write halves behind separate locks, so a
//! read and a write can be in progress at once).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nullport_node::AbortHandle;
use nullport_protocol::DenyReason;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::Mutex;

use crate::errors::{ChannelClosed, channel_error};

/// Largest buffer one `read` allocates: a read returns what is available, at most this.
const MAX_READ: usize = 1 << 20;

/// Longest a close waits for its close (or abort) frame to be handed to the relay link.
const CLOSE_FLUSH: Duration = Duration::from_secs(5);

/// The message of operations on a channel that this side closed.
const CLOSED: &str = "channel is closed";

type Reader = ReadHalf<nullport_node::Channel>;
type Writer = WriteHalf<nullport_node::Channel>;

/// The halves of one channel, shared by the Python object and its running operations.
pub(crate) struct ChannelState {
    reader: Mutex<Option<Reader>>,
    writer: Mutex<Option<Writer>>,
    abort: AbortHandle,
    /// `write_eof` was called: writes are refused here (the Rust channel would fail
    /// entirely, reading included).
    eof_sent: AtomicBool,
}

impl ChannelState {
    /// Ends the channel: a close frame (`reason` None) or an abort frame with `reason`, sent
    /// even while another task waits in a read or a write (the handle wakes it); then both
    /// halves are dropped. Later operations raise `ChannelClosed`.
    async fn shut(&self, reason: Option<DenyReason>) {
        match reason {
            Some(reason) => self.abort.abort(reason),
            None => self.abort.close(),
        }
        let writer = self.writer.lock().await.take();
        let reader = self.reader.lock().await.take();
        if let Some(mut writer) = writer {
            // Flushing drives the requested ending: the frame goes out, the stream finishes.
            let _ = tokio::time::timeout(CLOSE_FLUSH, writer.flush()).await;
            if let Some(reader) = reader {
                drop(reader.unsplit(writer));
            }
        }
    }
}

impl Drop for ChannelState {
    fn drop(&mut self) {
        // A channel dropped without `close` ends as the Rust one does (its stream is reset);
        // inside the runtime, so finished channels' last bytes are still waited for.
        let _runtime = pyo3_async_runtimes::tokio::get_runtime().enter();
        drop(self.reader.get_mut().take());
        drop(self.writer.get_mut().take());
    }
}

/// Aborts the channel if the operation holding it is dropped before it finished (the
/// awaiting Python task was cancelled): the peer sees the channel end, nothing is leaked.
struct CancelGuard(Option<Arc<ChannelState>>);

impl CancelGuard {
    fn done(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if let Some(state) = self.0.take() {
            state.abort.abort(DenyReason::Unavailable);
            pyo3_async_runtimes::tokio::get_runtime().spawn(async move {
                state.shut(Some(DenyReason::Unavailable)).await;
            });
        }
    }
}

/// An end-to-end encrypted channel to one service of one peer (a byte stream both ways).
///
/// Reads and writes are coroutines; a read and a write may run at once (from two tasks).
/// Cancelling a task that awaits `read`, `readexactly` or `write` aborts the channel (the
/// peer sees it end with an error; this side's later calls raise `ChannelClosed`). Use
/// `async with channel:` or `await channel.close()` to end it cleanly.
#[pyclass(module = "nullport._native", frozen)]
pub struct Channel {
    pub(crate) state: Arc<ChannelState>,
    peer: String,
    service: String,
    handshake_hash: [u8; 32],
}

/// Wraps a Rust channel for Python.
pub(crate) fn channel_into_py(channel: nullport_node::Channel) -> Channel {
    let peer = channel.peer().to_string();
    let service = channel.service().as_str().to_owned();
    let handshake_hash = *channel.handshake_hash();
    let abort = channel.abort_handle();
    let (reader, writer) = tokio::io::split(channel);
    Channel {
        state: Arc::new(ChannelState {
            reader: Mutex::new(Some(reader)),
            writer: Mutex::new(Some(writer)),
            abort,
            eof_sent: AtomicBool::new(false),
        }),
        peer,
        service,
        handshake_hash,
    }
}

fn closed() -> PyErr {
    ChannelClosed::new_err(CLOSED)
}

#[pymethods]
impl Channel {
    /// The peer's NodeId, as proven by the end-to-end handshake.
    #[getter]
    fn peer(&self) -> &str {
        &self.peer
    }

    /// The service this channel is for.
    #[getter]
    fn service(&self) -> &str {
        &self.service
    }

    /// The handshake hash (32 bytes, unique per channel; both ends see the same).
    #[getter]
    fn handshake_hash(&self) -> &[u8] {
        &self.handshake_hash
    }

    /// Reads up to `n` bytes; returns `b""` once the peer has finished sending (and for
    /// `n == 0`). With `n < 0`, reads until the peer has finished sending and returns it
    /// all (as `asyncio.StreamReader.read(-1)`). Raises `ChannelClosed` if the channel
    /// failed or was closed by this side.
    #[pyo3(signature = (n=65536))]
    fn read<'py>(&self, py: Python<'py>, n: isize) -> PyResult<Bound<'py, PyAny>> {
        let state = self.state.clone();
        crate::aio::future_into_coro(py, async move {
            if n == 0 {
                return Ok(Vec::new());
            }
            let guard = CancelGuard(Some(state.clone()));
            let mut reader = state.reader.lock().await;
            let Some(reader) = reader.as_mut() else {
                guard.done();
                return Err(closed());
            };
            let got = match usize::try_from(n) {
                Ok(n) => {
                    let mut buf = vec![0u8; n.min(MAX_READ)];
                    reader.read(&mut buf).await.map(|got| {
                        buf.truncate(got);
                        buf
                    })
                }
                Err(_) => {
                    let mut buf = Vec::new();
                    reader.read_to_end(&mut buf).await.map(|_| buf)
                }
            };
            guard.done();
            got.map_err(channel_error)
        })
    }

    /// Reads exactly `n` bytes. Raises `asyncio.IncompleteReadError` (with the bytes read)
    /// if the peer finishes sending first.
    fn readexactly<'py>(&self, py: Python<'py>, n: usize) -> PyResult<Bound<'py, PyAny>> {
        let state = self.state.clone();
        crate::aio::future_into_coro(py, async move {
            let guard = CancelGuard(Some(state.clone()));
            let mut reader = state.reader.lock().await;
            let Some(reader) = reader.as_mut() else {
                guard.done();
                return Err(closed());
            };
            let mut buf = vec![0u8; n];
            let mut filled = 0;
            while filled < n {
                match reader.read(&mut buf[filled..]).await {
                    Ok(0) => break,
                    Ok(got) => filled += got,
                    Err(e) => {
                        guard.done();
                        return Err(channel_error(e));
                    }
                }
            }
            guard.done();
            if filled < n {
                buf.truncate(filled);
                return Err(Python::attach(|py| incomplete_read(py, buf, n)));
            }
            Ok(buf)
        })
    }

    /// Writes all of `data` (bytes or bytearray) and waits until it is handed to the relay
    /// link (flow control: a slow peer slows the writer down).
    fn write<'py>(&self, py: Python<'py>, data: PyBackedBytes) -> PyResult<Bound<'py, PyAny>> {
        let state = self.state.clone();
        crate::aio::future_into_coro(py, async move {
            let guard = CancelGuard(Some(state.clone()));
            let mut writer = state.writer.lock().await;
            let Some(writer) = writer.as_mut() else {
                guard.done();
                return Err(closed());
            };
            if state.eof_sent.load(Ordering::Acquire) {
                guard.done();
                return Err(ChannelClosed::new_err("cannot write after write_eof()"));
            }
            let written = async {
                writer.write_all(&data).await?;
                writer.flush().await
            }
            .await;
            guard.done();
            written.map_err(channel_error)
        })
    }

    /// Finishes sending (the peer reads the end); reading goes on.
    fn write_eof<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let state = self.state.clone();
        crate::aio::future_into_coro(py, async move {
            let mut writer = state.writer.lock().await;
            let writer = writer.as_mut().ok_or_else(closed)?;
            state.eof_sent.store(true, Ordering::Release);
            writer.shutdown().await.map_err(channel_error)
        })
    }

    /// Closes the channel cleanly (a close frame; the peer reads the end) and releases it.
    /// A read or write waiting in another task ends. Closing twice is harmless.
    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let state = self.state.clone();
        crate::aio::future_into_coro(py, async move {
            state.shut(None).await;
            Ok(())
        })
    }

    /// Aborts the channel now: the peer's reads fail with "service unavailable".
    fn abort<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let state = self.state.clone();
        crate::aio::future_into_coro(py, async move {
            state.shut(Some(DenyReason::Unavailable)).await;
            Ok(())
        })
    }

    /// Whether this side closed the channel (or it was aborted by a cancelled operation).
    #[getter]
    fn is_closed(&self) -> bool {
        self.state.abort.reason().is_some()
            || self
                .state
                .writer
                .try_lock()
                .map(|w| w.is_none())
                .unwrap_or(false)
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
        format!("Channel(peer={}, service={:?})", self.peer, self.service)
    }
}

/// `asyncio.IncompleteReadError(partial, expected)`.
fn incomplete_read(py: Python<'_>, partial: Vec<u8>, expected: usize) -> PyErr {
    let made = py
        .import("asyncio")
        .and_then(|asyncio| asyncio.getattr("IncompleteReadError"))
        .and_then(|class| class.call1((pyo3::types::PyBytes::new(py, &partial), expected)));
    match made {
        Ok(error) => PyErr::from_value(error),
        Err(e) => e,
    }
}
