//! The node layer's error.

use nullport_protocol::relay_link::LinkErrorCode;
use nullport_protocol::{DenyReason, NodeId};

/// What can go wrong using a node.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The relay address is not `<relay NodeId>@<host>:<port>`.
    #[error("invalid relay address {address:?}: {reason} (expected <relay NodeId>@<host>:<port>)")]
    InvalidRelayAddress {
        /// What was given.
        address: String,
        /// What is wrong.
        reason: String,
    },
    /// The relay could not be reached (no answer, DNS, network).
    #[error("relay unreachable: {reason}")]
    RelayUnreachable {
        /// Details.
        reason: String,
    },
    /// The relay presented another key than the one pinned in its address.
    #[error("relay key mismatch: the address pins {expected}, the relay presented {presented}")]
    WrongRelayKey {
        /// The pinned key.
        expected: NodeId,
        /// The key presented.
        presented: String,
    },
    /// The relay refused this node (not on its allowlist, revoked, superseded, ...).
    #[error("relay refused this node: {reason}")]
    RelayRefused {
        /// Why.
        reason: String,
    },
    /// Another connection with this node's identity replaced this one at the relay (newest
    /// wins). The node keeps trying with a long backoff (so two copies of one identity do
    /// not flap), and says so in its link state.
    #[error("superseded: another connection with this identity replaced this one at the relay")]
    Superseded,
    /// The connection to the relay was lost.
    #[error("relay link lost: {reason}")]
    RelayLinkLost {
        /// Details.
        reason: String,
    },
    /// The dialed node is not connected to the relay.
    #[error("peer {0} is offline")]
    PeerOffline(NodeId),
    /// The relay refused the request.
    #[error("relay refused the request: {0}")]
    Link(LinkErrorCode),
    /// A relay-link message could not be encoded (for instance, larger than its stream
    /// allows); nothing was sent.
    #[error(transparent)]
    Encode(#[from] nullport_protocol::relay_link::LinkEncodeError),
    /// The peer refused the channel.
    #[error("peer {peer} refused service {service:?}: {reason}")]
    Denied {
        /// The peer.
        peer: NodeId,
        /// The service asked for.
        service: String,
        /// Why.
        reason: DenyReason,
    },
    /// The end-to-end handshake or channel failed.
    #[error(transparent)]
    Protocol(#[from] nullport_protocol::Error),
    /// A step did not complete in time.
    #[error("timed out: {what}")]
    Timeout {
        /// What timed out.
        what: &'static str,
    },
    /// The node is shutting down.
    #[error("node is shut down")]
    Shutdown,
    /// Building the TLS or QUIC configuration failed.
    #[error("setup: {0}")]
    Setup(String),
}
