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
    /// Bytes of requests one channel may have waiting for handlers; past it the channel is
    /// not read until they catch up (backpressure on that caller only). Default 16 MiB.
    pub max_buffered_per_channel: usize,
    /// Channels one caller may hold open to this server at once; more are refused
    /// (`RateLimited`) before any application byte. Default 8.
    pub max_channels_per_caller: u32,
}

impl Default for RpcLimits {
    fn default() -> Self {
        Self {
            max_message: 4 << 20,
            max_in_flight_per_caller: 256,
            window: 32,
            max_buffered_per_channel: 16 << 20,
            max_channels_per_caller: 8,
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
    pub(super) channels: Mutex<HashMap<NodeId, u32>>,
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

/// Counts one open channel for its caller while it lives.
pub(super) struct ChannelSlot {
    inner: Arc<Inner>,
    peer: NodeId,
}

impl ChannelSlot {
    /// Takes a channel slot for `peer`, or `None` when it holds the most it may.
    pub(super) fn take(inner: &Arc<Inner>, peer: NodeId) -> Option<Self> {
        let mut counts = inner.channels.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(peer).or_insert(0);
        if *n >= inner.limits.max_channels_per_caller {
            return None;
        }
        *n += 1;
        Some(Self {
            inner: inner.clone(),
            peer,
        })
    }
}

impl Drop for ChannelSlot {
    fn drop(&mut self) {
        let mut counts = self
            .inner
            .channels
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
