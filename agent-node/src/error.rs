//! The node layer's error, typed all the way down: each variant says what failed and carries
//! the cause as a value (a NodeId, a close code's meaning, quinn's or rustls's own error), so
//! a program can match on it and a person reads one line that names cause and fix.

use std::net::SocketAddr;

use nullport_protocol::relay_link::{LinkEncodeError, LinkErrorCode};
use nullport_protocol::{DenyReason, NodeId, NodeIdError};

/// What can go wrong using a node.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The relay address is not `<relay NodeId>@<host>:<port>`.
    #[error("invalid relay address {address:?}: {problem} (expected <relay NodeId>@<host>:<port>)")]
    InvalidRelayAddress {
        /// What was given.
        address: String,
        /// What is wrong with it.
        problem: AddressProblem,
    },
    /// The relay could not be reached (no answer, DNS, network).
    #[error("relay unreachable: {0}")]
    RelayUnreachable(Unreachable),
    /// The relay refused this node, or is not the relay pinned.
    #[error("relay refused this node: {0}")]
    RelayRefused(Refusal),
    /// The connection to the relay was lost.
    #[error("relay link lost: {0}")]
    RelayLinkLost(LinkLost),
    /// The dialed node is not connected to the relay.
    #[error("peer {0} is offline")]
    PeerOffline(NodeId),
    /// The dialed node refused to start the handshake: it has as many in progress as it
    /// allows (from this node, or in all). Nothing reached it; a later dial may succeed.
    #[error("peer {0} is busy: too many channels being opened there right now; try again shortly")]
    PeerBusy(NodeId),
    /// The dial's stream was reset (or stopped) while the channel was being set up, by the
    /// peer or by the relay: the peer gave up on the handshake (its deadline passed, it is
    /// shutting down, it cut off a caller that broke the protocol) or the relay cut the
    /// splice. The relay link itself is up (a lost link is [`Error::RelayLinkLost`]); a new
    /// dial may succeed. `code` is the reset's application error code (0 unless the one who
    /// cut it said more; the busy code is [`Error::PeerBusy`]).
    #[error(
        "the channel to {peer} was cut while it was being set up (stream reset with code {code}, by the peer or the relay); the relay link is up, a new dial may succeed"
    )]
    DialReset {
        /// The peer dialed.
        peer: NodeId,
        /// The reset's (or stop's) application error code.
        code: u64,
    },
    /// The relay refused the request.
    #[error("relay refused the request: {0}")]
    Link(LinkErrorCode),
    /// A relay-link message could not be encoded (for instance, larger than its stream
    /// allows); nothing was sent.
    #[error(transparent)]
    Encode(#[from] LinkEncodeError),
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
    /// Building the TLS or QUIC configuration, or binding the client socket, failed.
    #[error("setup: {0}")]
    Setup(SetupError),
    /// Serving gRPC or HTTP over channels failed (the `http` feature).
    #[cfg(feature = "http")]
    #[error(transparent)]
    Http(#[from] HttpError),
}

/// What is wrong with a relay address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressProblem {
    /// No `@` between the NodeId and the host.
    #[error("missing '@'")]
    NoAt,
    /// The part before `@` is not a NodeId.
    #[error("relay NodeId: {0}")]
    NodeId(NodeIdError),
    /// No `:<port>`.
    #[error("missing ':<port>'")]
    NoPort,
    /// An empty host.
    #[error("empty host")]
    EmptyHost,
    /// An IPv6 address without brackets.
    #[error("IPv6 addresses go in brackets: [::1]:7443")]
    UnbracketedIpv6,
    /// The port is not 1-65535.
    #[error("port {0:?} is not 1-65535")]
    BadPort(String),
    /// A `fleet:` bootstrap that does not parse.
    #[error("{0}")]
    Fleet(String),
}

/// Why the relay could not be reached.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Unreachable {
    /// The host name did not resolve.
    #[error("resolving {host}: {kind}")]
    Resolve {
        /// The host.
        host: String,
        /// What the resolver said.
        kind: std::io::ErrorKind,
    },
    /// The host resolved to no address.
    #[error("{host} has no address")]
    NoAddress {
        /// The host.
        host: String,
    },
    /// No answer to the QUIC handshake in time.
    #[error("no answer from {addr}")]
    NoAnswer {
        /// Where.
        addr: SocketAddr,
    },
    /// The connection attempt could not start.
    #[error(transparent)]
    Connect(#[from] quinn::ConnectError),
    /// The QUIC handshake failed.
    #[error(transparent)]
    Connection(quinn::ConnectionError),
    /// The relay did not answer `Hello` in time.
    #[error("the relay did not answer hello")]
    NoWelcome,
    /// No connection yet, and no attempt has failed (still trying).
    #[error("no answer from the relay yet")]
    NotYet,
}

/// Why the relay refused this node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// Refused inside the TLS handshake: the relay does not know this key.
    #[error("not on the relay's allowlist (TLS access denied)")]
    NotListed,
    /// Closed as not admitted (removed from the allowlist while online, or not admitted).
    #[error("not admitted (not on the relay's allowlist)")]
    NotAdmitted,
    /// The network admin revoked this node's key.
    #[error("this node's key was revoked by the network admin")]
    KeyRevoked,
    /// A rotation retired this node's key.
    #[error("this node's key was retired by a rotation")]
    KeyRetired,
    /// Another connection with this node's identity replaced this one at the relay.
    #[error("superseded: another connection with this identity replaced this one at the relay")]
    Superseded,
    /// The relay speaks another relay-link version.
    #[error("unsupported relay-link version")]
    UnsupportedVersion,
    /// Enrollment with an invite was refused.
    #[error("{0}")]
    Enrollment(LinkErrorCode),
    /// The relay presented another key than the one pinned in its address.
    #[error("relay key mismatch: the address pins {expected}, the relay presented {presented}")]
    WrongRelayKey {
        /// The pinned key.
        expected: NodeId,
        /// What the relay presented (a NodeId, or a description of an unusable key).
        presented: String,
    },
}

/// Why the link to the relay ended.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LinkLost {
    /// The relay is shutting down.
    #[error("relay shutting down")]
    ShuttingDown,
    /// The relay is at its connection limit.
    #[error("relay at capacity")]
    AtCapacity,
    /// The QUIC connection ended.
    #[error(transparent)]
    Connection(quinn::ConnectionError),
    /// A stream failed while reading.
    #[error("stream failed: {0}")]
    Read(#[from] quinn::ReadExactError),
    /// A stream failed while reading.
    #[error("stream failed: {0}")]
    ReadStream(#[from] quinn::ReadError),
    /// A stream failed while writing.
    #[error("stream failed: {0}")]
    Write(#[from] quinn::WriteError),
    /// The control stream is gone (the link is reconnecting).
    #[error("no control stream")]
    NoControlStream,
    /// A channel's stream failed.
    #[error("channel stream failed: {0}")]
    Stream(std::io::ErrorKind),
}

/// Why the node could not be set up.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The TLS configuration could not be built.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// QUIC does not accept the TLS configuration.
    #[error("QUIC TLS: {0}")]
    QuicTls(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    /// The client UDP socket could not be bound.
    #[error("binding UDP {addr}: {kind}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        kind: std::io::ErrorKind,
    },
}

impl From<LinkLost> for Error {
    fn from(e: LinkLost) -> Self {
        Error::RelayLinkLost(e)
    }
}

#[cfg(feature = "http")]
/// A failure of the HTTP layer (the `http` feature), inside [`Error::Http`]. Dialing failures are not here:
/// they are the node's own errors (`Denied`, `PeerOffline`, ...).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The tonic server stopped with an error.
    #[error("gRPC server for service {service:?} failed: {source}")]
    Server {
        /// The nullport service it served.
        service: String,
        /// tonic's error.
        source: std::sync::Arc<tonic::transport::Error>,
    },
    /// Serving one HTTP connection (one channel) failed: the caller broke the protocol, or
    /// the channel ended before the exchange was complete.
    #[error("HTTP connection from {peer} to service {service:?} failed: {source}")]
    Connection {
        /// The caller.
        peer: NodeId,
        /// The service its channel was for.
        service: String,
        /// hyper's error (its source chain may hold the channel's `io::Error`).
        source: std::sync::Arc<dyn std::error::Error + Send + Sync>,
    },
}
