//! Messages between a node and the relay (the relay link), and their codec.
//!
//! Every message is `len (u16) || postcard(message)`, with `len` at most the receiver's
//! bound (default [`MAX_LINK_MESSAGE`]). The relay link runs over QUIC streams:
//! - the **control stream** (opened by the node right after the QUIC handshake):
//!   `NodeToRelay::Hello` → `RelayToNode::Welcome`, then presence queries;
//! - a **dial stream** (opened by the caller): `NodeToRelay::Dial` → `RelayToNode::Dialed`
//!   or `RelayToNode::Error`, then the relay splices raw bytes (the end-to-end handshake and
//!   channel) to
//! - an **incoming stream** (opened by the relay to the target): `RelayToNode::Incoming`,
//!   then the same raw bytes.
//!
//! A dial names only the target NodeId; the service travels inside the end-to-end handshake.

use serde::{Deserialize, Serialize};

use crate::handshake::SessionId;
use crate::node_id::NodeId;

/// Version of the relay-link protocol.
pub const LINK_VERSION: u16 = 1;
/// TLS ALPN protocol id of the relay link.
pub const ALPN: &[u8] = b"nullport/1";
/// Default bound on one relay-link message.
pub const MAX_LINK_MESSAGE: usize = 1024;
/// Bound on a control-stream message (revocation lists are larger than dials).
pub const MAX_CONTROL_MESSAGE: usize = 65_535;

/// QUIC application close codes used on relay links.
pub mod close_code {
    /// Orderly close.
    pub const NORMAL: u32 = 0;
    /// Another connection with the same NodeId replaced this one (newest wins).
    pub const SUPERSEDED: u32 = 1;
    /// The node is not (or no longer) admitted.
    pub const NOT_ADMITTED: u32 = 2;
    /// The peer broke the relay-link protocol.
    pub const PROTOCOL_VIOLATION: u32 = 3;
    /// The relay is shutting down.
    pub const SHUTDOWN: u32 = 4;
    /// The relay is at its connection limit.
    pub const CAPACITY: u32 = 5;
    /// The node did not complete admission (Hello) in time.
    pub const ADMISSION_TIMEOUT: u32 = 6;
    /// Unsupported relay-link version.
    pub const UNSUPPORTED_VERSION: u32 = 7;
}

/// Why the relay refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum LinkErrorCode {
    /// The target is not connected to this relay.
    #[error("peer is offline")]
    Offline,
    /// The caller may not dial this target.
    #[error("refused by relay policy")]
    Refused,
    /// The caller is over its dial or byte rate.
    #[error("rate limited by the relay")]
    RateLimited,
    /// A message exceeded its size bound.
    #[error("message too large")]
    TooLarge,
    /// The relay does not speak this relay-link version.
    #[error("unsupported relay-link version")]
    UnsupportedVersion,
    /// A message could not be decoded, or came at the wrong time.
    #[error("malformed relay-link message")]
    Malformed,
    /// The caller or target has too many streams open.
    #[error("too many streams")]
    TooManyStreams,
    /// The enrollment invite is not valid (forged, for another relay, or malformed).
    #[error("invalid invite")]
    InviteInvalid,
    /// The enrollment invite has expired.
    #[error("invite expired")]
    InviteExpired,
    /// The enrollment invite was already used.
    #[error("invite already used")]
    InviteUsed,
}

/// Node → relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeToRelay {
    /// First message on the control stream.
    Hello {
        /// The node's relay-link version.
        version: u16,
    },
    /// First message on a dial stream: connect me to `target`.
    Dial {
        /// The NodeId to reach.
        target: NodeId,
    },
    /// Control stream: is `target` online (and may I dial it)?
    Presence {
        /// The NodeId asked about.
        target: NodeId,
    },
    /// Control stream: countersign and keep this audit checkpoint of mine.
    Witness {
        /// The checkpoint.
        checkpoint: WitnessedCheckpoint,
    },
    /// Control stream: the latest checkpoint of mine you witnessed.
    WitnessQuery,
    /// Control stream: store this signed revocation list and push it to every node.
    PublishRevocations {
        /// The list.
        list: SignedRevocations,
    },
    /// Control stream: every revocation list you hold.
    RevocationQuery,
    /// Control stream: I am moving to a new key; here is the statement signed by both.
    PublishRotation {
        /// The statement.
        rotation: SignedRotation,
    },
    /// Control stream: every key rotation you hold.
    RotationQuery,
    /// First message on the control stream of a node that is not admitted yet: enroll me
    /// with this invite (then `Welcome`, as for `Hello`).
    Join {
        /// The signed invite (its wire bytes).
        invite: Vec<u8>,
        /// The node's relay-link version.
        version: u16,
    },
}

/// A key rotation statement as it travels: `postcard({old, new, issued})` signed by both
/// keys (context `nullport-rotation-v1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRotation {
    /// The exact bytes signed.
    pub body: Vec<u8>,
    /// The old key's signature.
    pub old_sig: Vec<u8>,
    /// The new key's signature.
    pub new_sig: Vec<u8>,
}

/// A signed revocation list as it travels (decoded and checked by `nullport-keyring`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRevocations {
    /// `postcard(RevocationList)`: the exact bytes signed.
    pub body: Vec<u8>,
    /// Ed25519 over `"nullport-revocation-v1" 0x00 body`.
    pub sig: Vec<u8>,
}

/// An audit checkpoint as a witness holds it: the node's signed head, and (once witnessed)
/// the relay's countersignature over `"node:{id}\nseq:{seq}\nhead:{head}"` in the
/// [`crate::domain::AUDIT_WITNESS_V1`] context. Hex strings, as in the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WitnessedCheckpoint {
    /// Checkpoint sequence number.
    pub seq: u64,
    /// Chain head the checkpoint signs (64 hex).
    pub head: String,
    /// The node's checkpoint signature (128 hex).
    pub node_sig: String,
    /// The relay's countersignature (128 hex; empty when sent by the node).
    pub relay_sig: String,
}

impl WitnessedCheckpoint {
    /// The bytes the relay countersigns.
    pub fn witness_body(&self, node: &NodeId) -> Vec<u8> {
        format!("node:{node}\nseq:{}\nhead:{}", self.seq, self.head).into_bytes()
    }
}

/// Relay → node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RelayToNode {
    /// Answer to `Hello`: the node is admitted.
    Welcome {
        /// The relay's relay-link version.
        version: u16,
        /// The NodeId the relay authenticated for this connection.
        node_id: NodeId,
    },
    /// Answer to `Dial`: the target's stream is open; raw bytes follow.
    Dialed {
        /// The session id to bind into the end-to-end prologue.
        session: SessionId,
    },
    /// First message on an incoming stream: `caller` dialed you in `session`.
    Incoming {
        /// The NodeId the relay authenticated as the caller.
        caller: NodeId,
        /// The session id to bind into the end-to-end prologue.
        session: SessionId,
    },
    /// Answer to `Presence`.
    Presence {
        /// The NodeId asked about.
        target: NodeId,
        /// Whether it is connected and dialable by the asker.
        online: bool,
    },
    /// A refusal of the request on this stream.
    Error {
        /// Why.
        code: LinkErrorCode,
    },
    /// Answer to `Witness` and `WitnessQuery`: the checkpoint as witnessed (none yet: `None`).
    Witnessed {
        /// The countersigned checkpoint.
        checkpoint: Option<WitnessedCheckpoint>,
    },
    /// Revocation lists: the answer to `RevocationQuery` and `PublishRevocations`, and the
    /// first message of a stream the relay opens to push new lists.
    Revocations {
        /// The newest list of each signer.
        lists: Vec<SignedRevocations>,
    },
    /// Key rotations: the answer to `RotationQuery` and `PublishRotation`, and pushed like
    /// revocation lists.
    Rotations {
        /// The statements.
        rotations: Vec<SignedRotation>,
    },
}

impl Serialize for SessionId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for SessionId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u64::deserialize(d).map(SessionId)
    }
}

/// Why a relay-link message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkDecodeError {
    /// The length prefix exceeds the bound.
    #[error("relay-link message of {len} bytes exceeds {max}")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// Bound.
        max: usize,
    },
    /// Not a valid message (bad postcard, unknown variant, invalid NodeId, trailing bytes).
    #[error("malformed relay-link message")]
    Malformed,
}

impl From<LinkDecodeError> for LinkErrorCode {
    fn from(e: LinkDecodeError) -> Self {
        match e {
            LinkDecodeError::TooLarge { .. } => LinkErrorCode::TooLarge,
            LinkDecodeError::Malformed => LinkErrorCode::Malformed,
        }
    }
}

/// Appends `len || postcard(message)` to `out`.
pub fn encode<T: Serialize>(message: &T, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0, 0]);
    // Serialising these enums into a Vec cannot fail (no maps, no unsized sequences).
    if let Ok(bytes) = postcard::to_extend(message, std::mem::take(out)) {
        *out = bytes;
    }
    let len = (out.len() - start - 2).min(usize::from(u16::MAX)) as u16;
    out[start..start + 2].copy_from_slice(&len.to_be_bytes());
}

/// The length announced by a 2-byte prefix, checked against `max`.
pub fn decode_len(prefix: [u8; 2], max: usize) -> Result<usize, LinkDecodeError> {
    let len = usize::from(u16::from_be_bytes(prefix));
    if len > max {
        return Err(LinkDecodeError::TooLarge { len, max });
    }
    if len == 0 {
        return Err(LinkDecodeError::Malformed);
    }
    Ok(len)
}

/// Decodes one message body (without its prefix); trailing bytes are an error.
pub fn decode<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, LinkDecodeError> {
    match postcard::take_from_bytes(body) {
        Ok((message, [])) => Ok(message),
        _ => Err(LinkDecodeError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Identity;
    use proptest::prelude::*;

    fn id(seed: u8) -> NodeId {
        Identity::from_seed([seed; 32]).node_id()
    }

    fn round_trip<T: Serialize + for<'a> Deserialize<'a> + PartialEq + std::fmt::Debug>(m: T) {
        let mut out = Vec::new();
        encode(&m, &mut out);
        let len = decode_len([out[0], out[1]], MAX_LINK_MESSAGE);
        assert_eq!(len, Ok(out.len() - 2));
        assert_eq!(decode::<T>(&out[2..]), Ok(m));
    }

    #[test]
    fn every_message_round_trips() {
        round_trip(NodeToRelay::Hello { version: 1 });
        round_trip(NodeToRelay::Dial { target: id(1) });
        round_trip(NodeToRelay::Presence { target: id(2) });
        round_trip(RelayToNode::Welcome {
            version: 1,
            node_id: id(3),
        });
        round_trip(RelayToNode::Dialed {
            session: SessionId(u64::MAX),
        });
        round_trip(RelayToNode::Incoming {
            caller: id(4),
            session: SessionId(9),
        });
        round_trip(RelayToNode::Presence {
            target: id(5),
            online: true,
        });
        round_trip(RelayToNode::Error {
            code: LinkErrorCode::Offline,
        });
    }

    #[test]
    fn trailing_bytes_weak_keys_and_oversize_are_rejected() {
        let mut out = Vec::new();
        encode(&NodeToRelay::Hello { version: 1 }, &mut out);
        out.push(0);
        assert_eq!(
            decode::<NodeToRelay>(&out[2..]),
            Err(LinkDecodeError::Malformed)
        );
        // A Dial naming the identity point (weak key).
        let mut weak = vec![1u8, 32, 1];
        weak.extend_from_slice(&[0; 31]);
        assert_eq!(
            decode::<NodeToRelay>(&weak),
            Err(LinkDecodeError::Malformed)
        );
        assert_eq!(
            decode_len([0x10, 0x00], MAX_LINK_MESSAGE),
            Err(LinkDecodeError::TooLarge {
                len: 4096,
                max: MAX_LINK_MESSAGE
            })
        );
        assert_eq!(
            decode_len([0, 0], MAX_LINK_MESSAGE),
            Err(LinkDecodeError::Malformed)
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = decode::<NodeToRelay>(&bytes);
            let _ = decode::<RelayToNode>(&bytes);
        }

        #[test]
        fn encoded_len_matches(seed in 1u8..255, session in any::<u64>()) {
            let m = RelayToNode::Incoming { caller: id(seed), session: SessionId(session) };
            let mut out = Vec::new();
            encode(&m, &mut out);
            prop_assert_eq!(usize::from(u16::from_be_bytes([out[0], out[1]])), out.len() - 2);
            prop_assert_eq!(decode::<RelayToNode>(&out[2..]), Ok(m));
        }
    }
}
