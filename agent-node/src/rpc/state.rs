//! The state an RPC server shares between its sessions and calls: its services, access,
//! approver, audit queue and bounds, the calls each caller has in flight, and each caller's
//! call gate (quotas survive reconnection).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use nullport_audit::Event;
use nullport_keyring::CallGate;
use nullport_protocol::NodeId;
use tokio::sync::mpsc;

use super::access::{Access, Approver};
use super::service::RpcService;

/// The callee's bounds.
#[derive(Debug, Clone, Copy)]
pub struct RpcLimits {
    /// Largest request accepted (announced to callers; a caller that sends more loses its
    /// channel). Default 4 MiB, at most 16 MiB.
    pub max_message: u32,
    /// Calls one caller may have running at once, over all its channels (announced; callers
    /// queue locally within it, and calls past it are refused). Default 256.
    pub max_in_flight_per_caller: u32,
    /// Requests a caller may send on one call before the handler reads them. Default 32.
    pub window: u32,
}

impl Default for RpcLimits {
    fn default() -> Self {
        Self {
            max_message: 4 << 20,
            max_in_flight_per_caller: 256,
            window: 32,
        }
    }
}

pub(super) struct Inner {
    pub(super) services: HashMap<String, RpcService>,
    pub(super) access: Arc<dyn Access>,
    pub(super) approver: Option<Arc<dyn Approver>>,
    pub(super) audit: Option<mpsc::Sender<Event>>,
    pub(super) limits: RpcLimits,
    pub(super) in_flight: Mutex<HashMap<NodeId, u32>>,
    pub(super) gates: Mutex<HashMap<(NodeId, String), CallGate>>,
}

/// Counts one call in flight for its caller while it lives.
pub(super) struct InFlight {
    inner: Arc<Inner>,
    peer: NodeId,
}

impl InFlight {
    /// Counts a call the caller already has counted in `inner.in_flight` (the count was
    /// taken under the same lock as the decision).
    pub(super) fn new(inner: Arc<Inner>, peer: NodeId) -> Self {
        Self { inner, peer }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut counts = self
            .inner
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.peer);
            }
        }
    }
}
