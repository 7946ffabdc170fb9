//! Byte layouts of what travels inside the encrypted handshake and channel.
//! `docs/protocol.md` describes the same layouts for implementers.

use std::fmt;

use crate::error::Error;
use crate::limits::{
    IDENTITY_PROOF_LEN, MAX_HELLO_BLOB, MAX_REPLACED, MAX_SERVICE_NAME, TICKET_ID_LEN,
};
use crate::node_id::NodeId;
pub use crate::reason::DenyReason;

/// A service name: 1 to 64 bytes of `[A-Za-z0-9._-]`. Travels only inside message 3.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceName(String);

impl ServiceName {
    /// Validates a service name.
    pub fn new(name: &str) -> Result<Self, Error> {
        let ok = !name.is_empty()
            && name.len() <= MAX_SERVICE_NAME
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(Error::InvalidServiceName)
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServiceName({:?})", self.0)
    }
}

/// Proof that an Ed25519 identity owns a Noise X25519 static key: `key || signature`, the
/// signature over [`crate::domain::NOISE_STATIC_V1`] and the X25519 public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdentityProof {
    pub(crate) node_id: NodeId,
    pub(crate) signature: [u8; 64],
}

impl IdentityProof {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.node_id.as_bytes());
        out.extend_from_slice(&self.signature);
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() != IDENTITY_PROOF_LEN {
            return Err(Error::BadIdentityProof);
        }
        let (key, sig) = bytes.split_at(32);
        let node_id = NodeId::from_slice(key).map_err(|_| Error::BadIdentityProof)?;
        let signature: [u8; 64] = sig.try_into().map_err(|_| Error::BadIdentityProof)?;
        Ok(Self { node_id, signature })
    }
}

/// Payload of handshake message 3: `proof(96) || len(1) || service || len(2, BE) || blob`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Msg3Payload {
    pub(crate) proof: IdentityProof,
    pub(crate) service: ServiceName,
    pub(crate) blob: Vec<u8>,
    /// Resumed opens of the same dial that a relay said failed (none: nothing follows the
    /// blob).
    pub(crate) replaces: Vec<Replaced>,
}

impl Msg3Payload {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        self.proof.encode(out);
        encode_service_blob(&self.service, &self.blob, out);
        if !self.replaces.is_empty() {
            out.push(self.replaces.len() as u8); // <= MAX_REPLACED, checked by the initiator
            for r in &self.replaces {
                out.extend_from_slice(&r.id);
                out.extend_from_slice(&r.counter.to_be_bytes());
            }
        }
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, Error> {
        const WHAT: &str = "handshake message 3 payload";
        let proof_bytes = bytes
            .get(..IDENTITY_PROOF_LEN)
            .ok_or(Error::BadIdentityProof)?;
        let proof = IdentityProof::decode(proof_bytes)?;
        let (service, blob, rest) = decode_service_blob_prefix(&bytes[IDENTITY_PROOF_LEN..], WHAT)?;
        let replaces = match rest.split_first() {
            None => Vec::new(),
            Some((&n, list)) => {
                let n = usize::from(n);
                if n == 0 || n > MAX_REPLACED || list.len() != n * REPLACED_LEN {
                    return Err(Error::Malformed { what: WHAT });
                }
                list.chunks_exact(REPLACED_LEN)
                    .map(Replaced::decode)
                    .collect()
            }
        };
        Ok(Self {
            proof,
            service,
            blob,
            replaces,
        })
    }
}

/// Bytes of one [`Replaced`] on the wire: ticket id, counter (u64 BE).
pub(crate) const REPLACED_LEN: usize = TICKET_ID_LEN + 8;

/// A resumed open (R1) that its caller gave up because a relay said it failed (no such
/// ticket, the target is not here, a reset, no answer), named in the dial's next open so the
/// callee burns its counter: if a relay withheld it and delivers it later, it is refused as
/// a replay, and if it did reach the callee, the later open is refused as a duplicate. Each
/// dial's request then takes effect at most once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replaced {
    /// The ticket the given-up open used.
    pub id: [u8; TICKET_ID_LEN],
    /// Its counter.
    pub counter: u64,
}

impl Replaced {
    /// Reads one from exactly [`REPLACED_LEN`] bytes.
    pub(crate) fn decode(bytes: &[u8]) -> Self {
        let mut id = [0u8; TICKET_ID_LEN];
        id.copy_from_slice(&bytes[..TICKET_ID_LEN]);
        let mut counter = [0u8; 8];
        counter.copy_from_slice(&bytes[TICKET_ID_LEN..REPLACED_LEN]);
        Self {
            id,
            counter: u64::from_be_bytes(counter),
        }
    }
}

/// Appends `name_len u8 || name || blob_len u16 BE || blob` (the caller's request in
/// handshake message 3 after the proof, and in a resumed open).
pub(crate) fn encode_service_blob(service: &ServiceName, blob: &[u8], out: &mut Vec<u8>) {
    out.push(service.0.len() as u8); // <= 64, checked by ServiceName
    out.extend_from_slice(service.0.as_bytes());
    out.extend_from_slice(&(blob.len() as u16).to_be_bytes()); // <= 16 KiB, checked by callers
    out.extend_from_slice(blob);
}

/// Reads what [`encode_service_blob`] wrote at the start of `bytes`; returns the rest.
pub(crate) fn decode_service_blob_prefix<'a>(
    bytes: &'a [u8],
    what: &'static str,
) -> Result<(ServiceName, Vec<u8>, &'a [u8]), Error> {
    let malformed = || Error::Malformed { what };
    let (&name_len, rest) = bytes.split_first().ok_or_else(malformed)?;
    let name = rest.get(..usize::from(name_len)).ok_or_else(malformed)?;
    let name = std::str::from_utf8(name).map_err(|_| Error::InvalidServiceName)?;
    let service = ServiceName::new(name)?;
    let rest = &rest[usize::from(name_len)..];
    let len_bytes: [u8; 2] = rest
        .get(..2)
        .ok_or_else(malformed)?
        .try_into()
        .map_err(|_| malformed())?;
    let blob_len = usize::from(u16::from_be_bytes(len_bytes));
    if blob_len > MAX_HELLO_BLOB {
        return Err(Error::TooLarge {
            what: "handshake blob",
            len: blob_len,
            max: MAX_HELLO_BLOB,
        });
    }
    let rest = &rest[2..];
    let blob = rest.get(..blob_len).ok_or_else(malformed)?; // truncated
    Ok((service, blob.to_vec(), &rest[blob_len..]))
}

/// The type byte that starts every decrypted transport frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameType {
    /// Application bytes.
    Data = 1,
    /// Orderly end of this direction; anything after it is an error.
    Close = 2,
    /// The sender switched to the next key for its direction after this frame.
    Rekey = 3,
    /// First frame from the responder: the channel is accepted; application bytes may flow.
    Accept = 4,
    /// First frame from the responder: the channel is refused; one reason byte follows.
    Deny = 5,
    /// The sender ends the channel, both directions, for the reason in the one byte that
    /// follows (a [`DenyReason`] code); nothing follows it.
    Abort = 6,
}

impl FrameType {
    pub(crate) fn from_byte(byte: u8) -> Result<Self, Error> {
        Ok(match byte {
            1 => FrameType::Data,
            2 => FrameType::Close,
            3 => FrameType::Rekey,
            4 => FrameType::Accept,
            5 => FrameType::Deny,
            6 => FrameType::Abort,
            _ => return Err(Error::Malformed { what: "frame type" }),
        })
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            FrameType::Data => "data",
            FrameType::Close => "close",
            FrameType::Rekey => "rekey",
            FrameType::Accept => "accept",
            FrameType::Deny => "deny",
            FrameType::Abort => "abort",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use proptest::prelude::*;

    fn payload(blob: Vec<u8>) -> Msg3Payload {
        Msg3Payload {
            proof: IdentityProof {
                node_id: Identity::from_seed([1; 32]).node_id(),
                signature: [5; 64],
            },
            service: ServiceName::new("files").unwrap(),
            blob,
            replaces: Vec::new(),
        }
    }

    #[test]
    fn service_names() {
        assert!(ServiceName::new("mcp-files.v2_x").is_ok());
        for bad in ["", "a b", "ü", "x/y", &"a".repeat(65)] {
            assert_eq!(
                ServiceName::new(bad),
                Err(Error::InvalidServiceName),
                "{bad:?}"
            );
        }
        assert!(ServiceName::new(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn msg3_rejects_trailing_and_truncated() {
        let mut bytes = Vec::new();
        payload(vec![1, 2, 3]).encode(&mut bytes);
        assert!(Msg3Payload::decode(&bytes).is_ok());
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(
            Msg3Payload::decode(&trailing),
            Err(Error::Malformed { .. })
        ));
        assert!(matches!(
            Msg3Payload::decode(&bytes[..bytes.len() - 1]),
            Err(Error::Malformed { .. })
        ));
        assert_eq!(
            Msg3Payload::decode(&bytes[..50]),
            Err(Error::BadIdentityProof)
        );
    }

    #[test]
    fn msg3_names_the_resumed_opens_it_replaces_exactly() {
        let mut p = payload(vec![9; 4]);
        p.replaces = (1..=MAX_REPLACED as u64)
            .map(|counter| Replaced {
                id: [counter as u8; TICKET_ID_LEN],
                counter,
            })
            .collect();
        let mut bytes = Vec::new();
        p.encode(&mut bytes);
        assert_eq!(Msg3Payload::decode(&bytes), Ok(p.clone()));
        let list = IDENTITY_PROOF_LEN + 1 + 5 + 2 + 4;
        // A count that does not match the list, zero, or more than allowed: malformed.
        for (count, len) in [(3u8, bytes.len()), (0, list + 1), (9, bytes.len())] {
            let mut bad = bytes[..len].to_vec();
            bad[list] = count;
            assert!(
                matches!(Msg3Payload::decode(&bad), Err(Error::Malformed { .. })),
                "count {count}"
            );
        }
        assert!(matches!(
            Msg3Payload::decode(&bytes[..bytes.len() - 1]),
            Err(Error::Malformed { .. })
        ));
    }

    proptest! {
        #[test]
        fn msg3_round_trip(blob in proptest::collection::vec(any::<u8>(), 0..MAX_HELLO_BLOB)) {
            let p = payload(blob);
            let mut bytes = Vec::new();
            p.encode(&mut bytes);
            prop_assert_eq!(bytes.len(), IDENTITY_PROOF_LEN + 1 + 5 + 2 + p.blob.len());
            prop_assert!(Msg3Payload::decode(&bytes) == Ok(p));
        }

        #[test]
        fn msg3_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Msg3Payload::decode(&bytes);
        }
    }
}
