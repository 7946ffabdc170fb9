//! Messages between a node and the relay (the relay link), and their codec.
//!
//! Every message is `len (u32, big endian) || postcard(message)`, with `len` at most the
//! bound of the stream it travels on: [`MAX_LINK_MESSAGE`] on dial and incoming streams,
//! [`MAX_CONTROL_MESSAGE`] on the control stream and on streams the relay opens to push
//! revocation lists and rotations. A sender never clamps a length: [`encode`] refuses a
//! message over the bound with [`LinkEncodeError::TooLarge`]. The relay link runs over QUIC
//! streams:
//! - the **control stream** (opened by the node right after the QUIC handshake):
//!   `NodeToRelay::Hello` → `RelayToNode::Welcome`, then presence queries;
//! - a **dial stream** (opened by the caller): `NodeToRelay::Dial` (or `DialWith`, whose
//!   caller-chosen session lets the handshake's first message follow without waiting) →
//!   `RelayToNode::Dialed` or `RelayToNode::Error`, then the relay splices raw bytes (the
//!   end-to-end handshake and channel) to
//! - an **incoming stream** (opened by the relay to the target): `RelayToNode::Incoming`,
//!   then the same raw bytes.
//!
//! A dial names only the target NodeId; the service travels inside the end-to-end handshake.

use serde::{Deserialize, Serialize};

use crate::fixed_bytes::{Digest, Signature};
use crate::handshake::SessionId;
use crate::node_id::NodeId;

/// Version of the relay-link protocol (2: 4-byte length prefixes, paged revocation lists).
pub const LINK_VERSION: u16 = 2;
/// TLS ALPN protocol id of the relay link; it names the version, so a node and a relay that
/// speak different versions fail in the TLS handshake with "no application protocol".
pub const ALPN: &[u8] = b"nullport/2";
/// Bound on one message on a dial or incoming stream (dials, their answers).
pub const MAX_LINK_MESSAGE: usize = 1024;
/// Bound on one control-stream message: a revocation list of the largest size
/// (`nullport_keyring::revocation::MAX_LIST_BYTES`, 512 KiB) with room to spare.
pub const MAX_CONTROL_MESSAGE: usize = 1 << 20;
/// The length prefix of every relay-link message.
pub const LENGTH_PREFIX: usize = 4;

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
    /// The node's key was revoked by the network admin (the relay's key): refused for good.
    pub const KEY_REVOKED: u32 = 8;
    /// The node's key was rotated away (a newer key replaced it): refused for good.
    pub const KEY_RETIRED: u32 = 9;
}

/// The reset code of a dial stream that a callee refuses before the handshake's first byte
/// because it has as many handshakes in progress as it allows (from that caller, over that
/// relay link, or in all). The relay passes a stream's reset code on to the other side of
/// its splice, so the caller can say "busy" instead of "stream reset".
pub const STREAM_BUSY: u32 = 1;

/// The QUIC transport error code of a TLS `access_denied` alert (0x100 + alert 49): what a
/// node sees when the relay refuses its key inside the TLS handshake.
pub const TLS_ACCESS_DENIED: u64 = 0x100 + 49;

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
    /// The key is revoked (refused for good).
    #[error("key revoked")]
    KeyRevoked,
    /// The key was rotated away (refused for good).
    #[error("key retired by a rotation")]
    KeyRetired,
    /// This key already has a rotation on record (the first one wins).
    #[error("this key was already rotated")]
    AlreadyRotated,
    /// The relay holds as many revocation lists as it is configured to.
    #[error("the relay holds its maximum number of revocation lists")]
    ListsFull,
    /// A decision that needs the fleet's shared state (an enrollment, an invite use, a newer
    /// list or rotation) cannot be made now: the relay's state store has no quorum. Refused,
    /// never granted; try again later.
    #[error("state store unavailable: the relay cannot decide this now; try again later")]
    StoreUnavailable,
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
    /// Control stream: the newest relay map you hold (fleets; a lone relay has none).
    MapQuery,
    /// First message on a dial stream, as [`NodeToRelay::Dial`] but with the session id
    /// chosen by the caller (random), so that the caller's first end-to-end handshake
    /// message follows at once on the same stream instead of waiting for `Dialed` (which
    /// echoes `session`). The relay splices those bytes after `Incoming`.
    DialWith {
        /// The NodeId to reach.
        target: NodeId,
        /// The session id both ends bind into the end-to-end prologue.
        session: SessionId,
    },
}

/// A key rotation statement as it travels: `postcard({old, new, issued})` signed by both
/// keys (context `nullport-rotation-v1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRotation {
    /// The exact bytes signed.
    pub body: Vec<u8>,
    /// The old key's signature.
    pub old_sig: Signature,
    /// The new key's signature.
    pub new_sig: Signature,
}

/// A fleet's relay map as it travels: `postcard(RelayMap)` signed by the network admin key
/// (context `nullport-relay-map-v1`; decoded and checked by `nullport-keyring`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRelayMap {
    /// The exact bytes signed.
    pub body: Vec<u8>,
    /// The admin key's signature.
    pub sig: Signature,
}

/// A signed revocation list as it travels (decoded and checked by `nullport-keyring`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRevocations {
    /// `postcard(RevocationList)`: the exact bytes signed.
    pub body: Vec<u8>,
    /// Ed25519 over `"nullport-revocation-v1" 0x00 body`.
    pub sig: Signature,
}

/// An audit checkpoint as a witness holds it: the node's signed head, and (once witnessed)
/// the relay's countersignature in the [`crate::domain::AUDIT_WITNESS_V1`] context (over the
/// body `nullport_audit::witness_body` builds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WitnessedCheckpoint {
    /// Checkpoint sequence number.
    pub seq: u64,
    /// Chain head the checkpoint signs.
    pub head: Digest,
    /// The node's checkpoint signature.
    pub node_sig: Signature,
    /// The relay's countersignature (none when sent by the node).
    pub relay_sig: Option<Signature>,
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
    /// Revocation lists: the answer to `RevocationQuery` and `PublishRevocations` (in pages:
    /// `more` says another `Revocations` message follows), and the first message of a stream
    /// the relay opens to push new lists.
    Revocations {
        /// The newest list of each signer (one page).
        lists: Vec<SignedRevocations>,
        /// Another page follows on the same stream.
        more: bool,
    },
    /// Key rotations: the answer to `RotationQuery` and `PublishRotation` (paged like
    /// `Revocations`), and pushed like revocation lists.
    Rotations {
        /// The statements (one page).
        rotations: Vec<SignedRotation>,
        /// Another page follows on the same stream.
        more: bool,
    },
    /// The relay map: the answer to `MapQuery` (`None`: this relay is not in a fleet), and
    /// the first message of a stream the relay opens to push a newer map.
    Map {
        /// The newest map the relay holds.
        map: Option<SignedRelayMap>,
    },
    /// Pushed on a stream the relay opens: it stops within `within_secs` (a planned restart
    /// or a drain). Nodes homed here move to their next relay now; channels already open
    /// keep running until then.
    Draining {
        /// Seconds until the relay closes its links.
        within_secs: u32,
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

/// Why a relay-link message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkEncodeError {
    /// The message is larger than the stream it is meant for allows.
    #[error("relay-link message of {len} bytes exceeds {max}")]
    TooLarge {
        /// Encoded length.
        len: usize,
        /// Bound.
        max: usize,
    },
    /// The message could not be serialised.
    #[error("relay-link message could not be encoded")]
    Serialize,
}

/// Appends `len || postcard(message)` to `out` and returns the body length; a body over
/// `max` is [`LinkEncodeError::TooLarge`] and leaves `out` as it was.
pub fn encode<T: Serialize>(
    message: &T,
    max: usize,
    out: &mut Vec<u8>,
) -> Result<usize, LinkEncodeError> {
    let start = out.len();
    out.extend_from_slice(&[0; LENGTH_PREFIX]);
    match postcard::to_extend(message, std::mem::take(out)) {
        Ok(bytes) => *out = bytes,
        Err(_) => {
            out.truncate(start);
            return Err(LinkEncodeError::Serialize);
        }
    }
    let len = out.len() - start - LENGTH_PREFIX;
    let prefix = u32::try_from(len).ok().filter(|_| len <= max);
    let Some(prefix) = prefix else {
        out.truncate(start);
        return Err(LinkEncodeError::TooLarge { len, max });
    };
    out[start..start + LENGTH_PREFIX].copy_from_slice(&prefix.to_be_bytes());
    Ok(len)
}

/// The number of bytes `message` takes on the link, prefix included.
pub fn encoded_len<T: Serialize>(message: &T) -> Result<usize, LinkEncodeError> {
    postcard::experimental::serialized_size(message)
        .map(|n| n + LENGTH_PREFIX)
        .map_err(|_| LinkEncodeError::Serialize)
}

/// The length announced by a 4-byte prefix, checked against `max`.
pub fn decode_len(prefix: [u8; LENGTH_PREFIX], max: usize) -> Result<usize, LinkDecodeError> {
    let len = usize::try_from(u32::from_be_bytes(prefix)).unwrap_or(usize::MAX);
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

    fn prefix(out: &[u8]) -> [u8; LENGTH_PREFIX] {
        [out[0], out[1], out[2], out[3]]
    }

    fn round_trip<T: Serialize + for<'a> Deserialize<'a> + PartialEq + std::fmt::Debug>(m: T) {
        let mut out = Vec::new();
        let n = encode(&m, MAX_LINK_MESSAGE, &mut out);
        assert_eq!(n, Ok(out.len() - LENGTH_PREFIX));
        assert_eq!(encoded_len(&m), Ok(out.len()));
        let len = decode_len(prefix(&out), MAX_LINK_MESSAGE);
        assert_eq!(len, Ok(out.len() - LENGTH_PREFIX));
        assert_eq!(decode::<T>(&out[LENGTH_PREFIX..]), Ok(m));
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
        let _ = encode(
            &NodeToRelay::Hello { version: 1 },
            MAX_LINK_MESSAGE,
            &mut out,
        );
        out.push(0);
        assert_eq!(
            decode::<NodeToRelay>(&out[LENGTH_PREFIX..]),
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
            decode_len([0, 0, 0x10, 0x00], MAX_LINK_MESSAGE),
            Err(LinkDecodeError::TooLarge {
                len: 4096,
                max: MAX_LINK_MESSAGE
            })
        );
        assert_eq!(
            decode_len([0xff; 4], MAX_CONTROL_MESSAGE),
            Err(LinkDecodeError::TooLarge {
                len: u32::MAX as usize,
                max: MAX_CONTROL_MESSAGE
            })
        );
        assert_eq!(
            decode_len([0; 4], MAX_LINK_MESSAGE),
            Err(LinkDecodeError::Malformed)
        );
    }

    /// The 64 KiB clamp of version 1: a message larger than 65,535 bytes must either cross
    /// intact (its length written exactly) or be refused before anything is written.
    #[test]
    fn large_messages_are_never_clamped() {
        let list = SignedRevocations {
            body: vec![7; 200_000],
            sig: Signature([1; 64]),
        };
        let m = RelayToNode::Revocations {
            lists: vec![list.clone(), list],
            more: false,
        };
        let mut out = vec![9];
        let n = encode(&m, MAX_CONTROL_MESSAGE, &mut out).unwrap();
        assert!(n > 400_000);
        assert_eq!(decode_len(prefix(&out[1..]), MAX_CONTROL_MESSAGE), Ok(n));
        assert_eq!(
            decode::<RelayToNode>(&out[1 + LENGTH_PREFIX..]),
            Ok(m.clone())
        );
        // Over the bound: a typed error, and nothing appended.
        let mut small = vec![9];
        assert_eq!(
            encode(&m, 65_535, &mut small),
            Err(LinkEncodeError::TooLarge {
                len: n,
                max: 65_535
            })
        );
        assert_eq!(small, vec![9]);
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
            prop_assert_eq!(encode(&m, MAX_LINK_MESSAGE, &mut out), Ok(out.len() - LENGTH_PREFIX));
            prop_assert_eq!(u32::from_be_bytes(prefix(&out)) as usize, out.len() - LENGTH_PREFIX);
            prop_assert_eq!(encoded_len(&m), Ok(out.len()));
            prop_assert_eq!(decode::<RelayToNode>(&out[LENGTH_PREFIX..]), Ok(m));
        }
    }
}
