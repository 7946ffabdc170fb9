//! What the operator sees of each node online: since when, from where, bytes through the
//! relay each way (never payload). Kept per connection, read by `/nodes` on the metrics
//! listener (`nullport-relay nodes`) and, for the busiest few, exported as metrics.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use nullport_protocol::NodeId;
use serde::{Deserialize, Serialize};

/// How many nodes get their own series in the metrics (the busiest by bytes): the label
/// `node` has at most this many values, whatever the number of nodes online.
pub const MAX_NODE_SERIES: usize = 50;

/// The counters of one admitted connection.
#[derive(Debug)]
pub(crate) struct NodeCounters {
    pub(crate) since: SystemTime,
    pub(crate) remote: SocketAddr,
    /// Bytes the node sent through the relay (into channels).
    pub(crate) sent: AtomicU64,
    /// Bytes the relay delivered to the node.
    pub(crate) received: AtomicU64,
    /// Dials the node made.
    pub(crate) dials: AtomicU64,
}

impl NodeCounters {
    pub(crate) fn new(remote: SocketAddr) -> NodeCounters {
        NodeCounters {
            since: SystemTime::now(),
            remote,
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            dials: AtomicU64::new(0),
        }
    }

    pub(crate) fn snapshot(&self, node: NodeId) -> NodeStats {
        NodeStats {
            node,
            since: self
                .since
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            remote: self.remote,
            bytes_sent: self.sent.load(Ordering::Relaxed),
            bytes_received: self.received.load(Ordering::Relaxed),
            dials: self.dials.load(Ordering::Relaxed),
        }
    }
}

/// One node online, as `/nodes` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStats {
    /// The node.
    pub node: NodeId,
    /// Connected since (Unix seconds).
    pub since: u64,
    /// Its address as the relay sees it.
    pub remote: SocketAddr,
    /// Bytes it sent into channels through the relay.
    pub bytes_sent: u64,
    /// Bytes the relay delivered to it.
    pub bytes_received: u64,
    /// Dials it made on this connection.
    pub dials: u64,
}

/// The `n` busiest of `nodes` (by bytes both ways), busiest first.
pub(crate) fn busiest(mut nodes: Vec<NodeStats>, n: usize) -> Vec<NodeStats> {
    nodes.sort_by_key(|s| std::cmp::Reverse(s.bytes_sent + s.bytes_received));
    nodes.truncate(n);
    nodes
}
