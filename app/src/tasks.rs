//! Owned tasks: a spawned task that stops when its owner drops it, so no task outlives the
//! thing it works for (a channel, a session, the daemon).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::task::{JoinError, JoinHandle};

/// A spawned task, aborted when this handle is dropped. Await it (or `&mut` it, under a
/// timeout) for its output.
#[derive(Debug)]
pub struct OwnedTask<T>(JoinHandle<T>);

impl<T: Send + 'static> OwnedTask<T> {
    /// Spawns `future` on the current runtime, owned by the returned handle.
    pub fn spawn<F>(future: F) -> Self
    where
        F: Future<Output = T> + Send + 'static,
    {
        OwnedTask(tokio::spawn(future))
    }
}

impl<T> Future for OwnedTask<T> {
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for OwnedTask<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn dropping_the_handle_stops_the_task() {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let task = OwnedTask::spawn(async move {
            let _tx = tx;
            std::future::pending::<()>().await;
        });
        drop(task);
        // The task held the only sender: it is gone once the task is.
        let closed = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        assert_eq!(closed, Ok(None));
    }

    #[tokio::test]
    async fn awaiting_yields_the_output() {
        let task = OwnedTask::spawn(async { 7 });
        assert_eq!(task.await.unwrap(), 7);
    }
}
