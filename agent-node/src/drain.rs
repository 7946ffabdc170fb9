//! Streams this node has finished whose last bytes (a close or abort frame, a denial) may
//! still be in flight. Closing the QUIC connection discards unsent stream data, so the node
//! waits for the relay to acknowledge them before it closes, instead of sleeping and hoping.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::{Instant, timeout_at};

/// Longest a finished stream is watched for its acknowledgement.
const ACK_LIMIT: Duration = Duration::from_secs(5);

/// The node's finished streams awaiting acknowledgement, each watched by a task owned here
/// (aborted when the node is dropped). A clone may also carry a lease on the relay link its
/// channel runs over ([`Drain::leased`]): while any channel holds one, that link is in use
/// and is not closed as idle.
#[derive(Debug, Clone, Default)]
pub(crate) struct Drain {
    set: Arc<Mutex<JoinSet<()>>>,
    _lease: Option<Arc<()>>,
}

impl Drain {
    /// Watches `send` (already finished) until the peer has acknowledged all its data, it is
    /// stopped, or [`ACK_LIMIT`] passes. Outside a runtime (a drop at exit) there is nothing
    /// to wait for.
    pub(crate) fn hand_over(&self, send: &quinn::SendStream) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let acknowledged = send.stopped();
        if let Ok(mut set) = self.set.lock() {
            while set.try_join_next().is_some() {}
            set.spawn(async move {
                let _ = tokio::time::timeout(ACK_LIMIT, acknowledged).await;
            });
        }
    }

    /// A clone that also holds `lease` (a relay link's use count) for as long as it lives.
    pub(crate) fn leased(&self, lease: &Arc<()>) -> Drain {
        Drain {
            set: self.set.clone(),
            _lease: Some(lease.clone()),
        }
    }

    /// Waits until every stream handed over so far is acknowledged, or `within` passes.
    pub(crate) async fn settle(&self, within: Duration) {
        let deadline = Instant::now() + within;
        let mut set = match self.set.lock() {
            Ok(mut set) => std::mem::take(&mut *set),
            Err(_) => return,
        };
        let _ = timeout_at(deadline, async { while set.join_next().await.is_some() {} }).await;
    }
}
