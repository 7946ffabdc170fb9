//! The protocol layer's error.

use crate::node_id::NodeId;
use crate::reason::DenyReason;

/// Everything that can go wrong in a handshake or on a channel. Each variant is final for
/// the handshake or channel it came from: the state machine is closed afterwards.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The responder proved a different identity than the one dialed (misrouted or spliced).
    #[error("expected peer {expected}, but {got} answered")]
    UnexpectedPeer {
        /// The NodeId that was dialed.
        expected: NodeId,
        /// The NodeId the responder proved.
        got: NodeId,
    },
    /// The peer's identity proof is malformed, or does not bind its Noise static key.
    #[error("peer's identity proof is invalid")]
    BadIdentityProof,
    /// The relay named another caller than the one the handshake proved.
    #[error("relay said the caller is {relay_said}, the handshake proved {proven}")]
    CallerMismatch {
        /// The caller NodeId the relay reported.
        relay_said: NodeId,
        /// The NodeId the Noise handshake proved.
        proven: NodeId,
    },
    /// A node tried to open a channel to itself, or a message was reflected to its sender.
    #[error("a node cannot open a channel to itself")]
    SelfDial,
    /// A message failed AEAD authentication: tampered, replayed, reordered, dropped before,
    /// spliced from another session, or sent under another prologue (peer, session, version).
    #[error("message failed authentication (tampered, replayed, reordered or misrouted)")]
    Authentication,
    /// A resumed open arrived a second time (its ticket counter was used before): a replay.
    #[error("resumed open replayed (its counter was used before)")]
    Replayed,
    /// The open named an earlier resumed open of the same dial that reached this node and
    /// was accepted or is still undecided: it may have taken effect, so this one is not
    /// (the caller gets `Deny` with [`crate::DenyReason::Duplicate`]).
    #[error(
        "an earlier open of the same dial may already have taken effect; denied as a duplicate"
    )]
    Duplicate,
    /// A Diffie-Hellman result was all zero: the peer sent a low-order key.
    #[error("peer sent a low-order X25519 key")]
    LowOrderKey,
    /// A message does not have the expected structure.
    #[error("malformed {what}")]
    Malformed {
        /// What was malformed.
        what: &'static str,
    },
    /// A message or field exceeds its bound.
    #[error("{what} of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The service name is empty, too long, or has characters outside `[A-Za-z0-9._-]`.
    #[error("invalid service name")]
    InvalidServiceName,
    /// The responder refused the channel.
    #[error("channel refused by peer: {reason}")]
    Denied {
        /// Why.
        reason: DenyReason,
    },
    /// The peer ended the channel (both directions) with a reason: what authorised it was
    /// withdrawn (revoked key or token, expired token, policy change), it sat idle too long,
    /// or the peer is shutting down. Nothing after it is delivered.
    #[error("channel closed by the peer: {reason}")]
    Aborted {
        /// Why.
        reason: DenyReason,
    },
    /// A frame arrived that is not valid at this point (e.g. data before accept).
    #[error("unexpected {what} frame")]
    UnexpectedFrame {
        /// The frame's kind.
        what: &'static str,
    },
    /// The byte stream ended without a close frame: it was truncated.
    #[error("channel truncated: stream ended without a close frame")]
    Truncated,
    /// The channel was already closed (by a close frame or an earlier error).
    #[error("channel is closed")]
    Closed,
    /// The handshake did not complete before its deadline.
    #[error("handshake timed out")]
    Timeout,
    /// The message counter reached its limit; the channel must be re-established.
    #[error("message counter exhausted; open a new channel")]
    NonceExhausted,
    /// Operating-system randomness failed.
    #[error("randomness unavailable")]
    Random,
    /// Any other failure inside the Noise implementation (a bug, not an attack: the inputs
    /// an attacker controls map to the variants above).
    #[error("noise: {0}")]
    Noise(NoiseFailure),
}

/// Where inside the Noise implementation a failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoiseFailure {
    /// Building the handshake state (pattern, keys, prerequisites).
    #[error("handshake setup failed")]
    Setup,
    /// A call out of order for the handshake or transport state.
    #[error("called in the wrong state")]
    State,
    /// The random number generator failed.
    #[error("randomness unavailable")]
    Random,
    /// Anything else.
    #[error("internal failure")]
    Other,
}

impl From<snow::Error> for Error {
    fn from(e: snow::Error) -> Self {
        match e {
            snow::Error::Decrypt => Error::Authentication,
            snow::Error::Dh => Error::LowOrderKey,
            snow::Error::Input => Error::Malformed {
                what: "noise message",
            },
            snow::Error::Rng => Error::Random,
            snow::Error::Pattern(_) | snow::Error::Init(_) | snow::Error::Prereq(_) => {
                Error::Noise(NoiseFailure::Setup)
            }
            snow::Error::State(_) => Error::Noise(NoiseFailure::State),
            _ => Error::Noise(NoiseFailure::Other),
        }
    }
}
