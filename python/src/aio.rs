//! Awaitables for Python, without the GIL on any runtime thread.
//!
//! Each async method runs its Rust future on the package's tokio runtime and returns a real
//! coroutine (so `asyncio.create_task(channel.read())` works) awaiting an asyncio future.
//! The result does not cross into Python from a runtime thread: the finished task queues it
//! and writes one byte to a socket pair whose other end the event loop watches
//! (`loop.add_reader`); the loop's own thread then converts the result and completes the
//! future. So no runtime thread ever takes the GIL, and a task finishing while the
//! interpreter shuts down cannot crash it (which completing futures from other threads does).
//!
//! Cancelling the awaiting task cancels the asyncio future, whose done-callback aborts the
//! tokio task: the Rust future beneath it is dropped.

use std::any::Any;
use std::future::Future;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use pyo3::IntoPyObjectExt;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyModule;

/// A result to hand to a Python future on the loop's thread: called with `true` to make the
/// future's value, or with `false` when the future was cancelled meanwhile (the result is
/// then given back or dropped, and `None` returned).
type Deliver = Box<dyn FnOnce(Python<'_>, bool) -> Option<PyResult<Py<PyAny>>> + Send>;

/// A finished operation: its future, and how to make its result.
struct Completion {
    future: Py<PyAny>,
    deliver: Deliver,
}

/// The side of a bridge the runtime's tasks use.
struct Shared {
    queue: Mutex<Vec<Completion>>,
    /// A byte written here wakes the event loop (nonblocking).
    wake: UnixStream,
    /// A wake-up byte is on its way and not yet read.
    signalled: AtomicBool,
}

impl Shared {
    fn complete(&self, completion: Completion) {
        if let Ok(mut queue) = self.queue.lock() {
            queue.push(completion);
        }
        if !self.signalled.swap(true, Ordering::SeqCst) {
            // A full socket buffer means a wake-up is pending anyway.
            let _ = (&self.wake).write(&[1]);
        }
    }
}

/// One event loop's end of the bridge (kept per loop, in a weak-keyed dict).
#[pyclass(module = "nullport._native", frozen)]
pub(crate) struct Bridge {
    shared: Arc<Shared>,
    read: UnixStream,
}

#[pymethods]
impl Bridge {
    /// Called by the event loop when the wake-up socket is readable: completes the futures
    /// of every finished operation.
    fn _on_readable(&self, py: Python<'_>) {
        // In this order: drain the wake-up bytes, clear the flag, take the queue. A task
        // that queues after the flag is cleared writes a new byte (another call); one that
        // queued before is in the queue taken below.
        let mut sink = [0u8; 256];
        while matches!((&self.read).read(&mut sink), Ok(n) if n > 0) {}
        self.shared.signalled.store(false, Ordering::SeqCst);
        let done = match self.shared.queue.lock() {
            Ok(mut queue) => std::mem::take(&mut *queue),
            Err(_) => Vec::new(),
        };
        for Completion { future, deliver } in done {
            let future = future.bind(py);
            // A cancelled future's result is given back if its operation says how (an
            // incoming channel), else dropped (a channel in it is reset).
            if future
                .call_method0(pyo3::intern!(py, "done"))
                .and_then(|d| d.is_truthy())
                .unwrap_or(true)
            {
                let _ = deliver(py, false);
                continue;
            }
            let set = match deliver(py, true) {
                Some(Ok(value)) => future.call_method1(pyo3::intern!(py, "set_result"), (value,)),
                Some(Err(e)) => {
                    future.call_method1(pyo3::intern!(py, "set_exception"), (e.value(py),))
                }
                None => continue,
            };
            if let Err(e) = set {
                e.write_unraisable(py, Some(future));
            }
        }
    }
}

/// The done-callback of an operation's future: aborts its task if the future was cancelled.
#[pyclass(module = "nullport._native", frozen)]
struct AbortOnCancel {
    task: tokio::task::AbortHandle,
}

#[pymethods]
impl AbortOnCancel {
    fn __call__(&self, future: &Bound<'_, PyAny>) -> PyResult<()> {
        if future.call_method0("cancelled")?.is_truthy()? {
            self.task.abort();
        }
        Ok(())
    }
}

/// Python helpers: the coroutine wrappers and the per-loop bridges.
static HELPERS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

const HELPERS_CODE: &std::ffi::CStr = c"
import weakref
bridges = weakref.WeakKeyDictionary()

async def awaiting(future):
    try:
        return await future
    except BaseException:
        # Cancelled after the result was set but before this task resumed (asyncio throws
        # the cancellation in anyway): a result that must not be lost is given back.
        if future.done() and not future.cancelled() and future.exception() is None:
            give_back = getattr(future.result(), '_give_back', None)
            if give_back is not None:
                give_back()
        raise

async def ready(value):
    return value
";

fn helpers(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    HELPERS
        .get_or_try_init(py, || -> PyResult<Py<PyModule>> {
            Ok(
                PyModule::from_code(py, HELPERS_CODE, c"nullport/_aio.py", c"nullport._aio")?
                    .unbind(),
            )
        })
        .map(|m| m.bind(py))
}

/// The bridge of the running event loop (made on first use).
fn bridge<'py>(py: Python<'py>, event_loop: &Bound<'py, PyAny>) -> PyResult<Bound<'py, Bridge>> {
    let bridges = helpers(py)?.getattr("bridges")?;
    let known = bridges.call_method1("get", (event_loop,))?;
    if !known.is_none() {
        return Ok(known.cast_into::<Bridge>()?);
    }
    let (read, wake) = UnixStream::pair()
        .map_err(|e| PyRuntimeError::new_err(format!("socket pair for the event loop: {e}")))?;
    read.set_nonblocking(true)
        .and_then(|()| wake.set_nonblocking(true))
        .map_err(|e| PyRuntimeError::new_err(format!("socket pair for the event loop: {e}")))?;
    let fd = read.as_raw_fd();
    let made = Bound::new(
        py,
        Bridge {
            shared: Arc::new(Shared {
                queue: Mutex::new(Vec::new()),
                wake,
                signalled: AtomicBool::new(false),
            }),
            read,
        },
    )?;
    event_loop.call_method1("add_reader", (fd, made.getattr("_on_readable")?))?;
    bridges.set_item(event_loop, &made)?;
    Ok(made)
}

/// A future that turns a panic of the future it polls into an error.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.0.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

/// Runs `fut` on the package's tokio runtime; returns a coroutine that awaits its result.
/// Must be called with an event loop running (from a coroutine).
pub(crate) fn future_into_coro<'py, F, T>(py: Python<'py>, fut: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    future_into_coro_giving_back(py, fut, drop)
}

/// [`future_into_coro`] for an operation whose result must not be lost: if the awaiting
/// task was cancelled after the operation finished but before its result reached Python,
/// `give_back` gets the result (an incoming channel goes back to its queue).
pub(crate) fn future_into_coro_giving_back<'py, F, T, G>(
    py: Python<'py>,
    fut: F,
    give_back: G,
) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
    G: FnOnce(T) + Send + 'static,
{
    let event_loop = py.import("asyncio")?.call_method0("get_running_loop")?;
    let bridge = bridge(py, &event_loop)?;
    let future = event_loop.call_method0("create_future")?;
    let shared = bridge.get().shared.clone();
    let target = future.clone().unbind();
    let task = pyo3_async_runtimes::tokio::get_runtime().spawn(async move {
        let result = CatchUnwind(Box::pin(fut)).await;
        let deliver: Deliver = Box::new(move |py, to_python| {
            if !to_python {
                if let Ok(Ok(value)) = result {
                    give_back(value);
                }
                return None;
            }
            Some(match result {
                Ok(Ok(value)) => value.into_py_any(py),
                Ok(Err(e)) => Err(e),
                Err(panic) => Err(PyRuntimeError::new_err(format!(
                    "nullport: internal error (a Rust panic): {}",
                    panic_message(&*panic)
                ))),
            })
        });
        shared.complete(Completion {
            future: target,
            deliver,
        });
    });
    future.call_method1(
        "add_done_callback",
        (AbortOnCancel {
            task: task.abort_handle(),
        },),
    )?;
    helpers(py)?.getattr("awaiting")?.call1((future,))
}

/// A coroutine that returns `value` at once (for `__aenter__`).
pub(crate) fn ready<'py>(py: Python<'py>, value: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    helpers(py)?.getattr("ready")?.call1((value,))
}
