//! [`NodeId`]: a node's long-term Ed25519 public key, and its one canonical text form.
//!
//! Text form: the prefix `np` followed by the 32 key bytes in lowercase RFC 4648 base32
//! without padding (52 characters, the last of which carries 4 zero bits), 54 characters in
//! all, e.g. `npa3...`. Parsing accepts exactly that form: uppercase, padding, a non-zero
//! trailing bit, a key that is not a canonical point encoding, or a small-order (weak) key is
//! rejected with a [`NodeIdError`] that says which.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

/// Text prefix of every NodeId.
pub const NODE_ID_PREFIX: &str = "np";
/// Length of a NodeId's text form (prefix + 52 base32 characters).
pub const NODE_ID_TEXT_LEN: usize = NODE_ID_PREFIX.len() + BASE32_LEN;
const BASE32_LEN: usize = 52; // ceil(256 / 5)
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// Why a byte string or text is not a NodeId.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeIdError {
    /// The text does not start with `np`.
    #[error("a NodeId starts with \"{NODE_ID_PREFIX}\"")]
    MissingPrefix,
    /// Wrong length (text characters or key bytes).
    #[error("a NodeId is {expected} long, got {got}")]
    WrongLength {
        /// What a NodeId's length must be.
        expected: usize,
        /// What was given.
        got: usize,
    },
    /// A character outside lowercase base32 (`a-z`, `2-7`).
    #[error("character {found:?} at position {position} is not lowercase base32 (a-z, 2-7)")]
    BadCharacter {
        /// The offending character.
        found: char,
        /// Its position in the text.
        position: usize,
    },
    /// Decodes, but is not the one canonical text for those bytes (non-zero trailing bits).
    #[error("not the canonical text form of a NodeId (trailing bits are not zero)")]
    NonCanonicalText,
    /// The 32 bytes are not a canonically encoded Ed25519 point.
    #[error("not a valid Ed25519 public key (not a canonical point encoding)")]
    InvalidPoint,
    /// A small-order point: anyone could forge signatures that verify under it.
    #[error("weak Ed25519 public key (small-order point)")]
    WeakKey,
}

/// Most NodeIds one thread remembers as validated ([`NodeId::from_bytes`]); the set starts
/// over when full.
const VALIDATED_PER_THREAD: usize = 1024;

std::thread_local! {
    /// Byte strings this thread validated as NodeIds. Validation costs two field inversions
    /// (tens of microseconds), and a node or relay decodes the same few peers' NodeIds on
    /// every dial (about 8 % of all CPU at the channels/s limit before this cache). Keyed by
    /// the exact bytes, and only successes are kept, so a cached answer is the answer
    /// validation would give.
    static VALIDATED: RefCell<HashSet<[u8; 32]>> = RefCell::new(HashSet::new());
}

/// A node's identity: its Ed25519 public key, validated (canonical, not small order).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId([u8; 32]);

impl NodeId {
    /// Validates 32 bytes as a NodeId.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, NodeIdError> {
        if VALIDATED.with(|v| v.borrow().contains(bytes)) {
            return Ok(Self(*bytes));
        }
        let id = Self::validate(bytes)?;
        VALIDATED.with(|v| {
            let mut v = v.borrow_mut();
            if v.len() >= VALIDATED_PER_THREAD {
                v.clear();
            }
            v.insert(*bytes);
        });
        Ok(id)
    }

    fn validate(bytes: &[u8; 32]) -> Result<Self, NodeIdError> {
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| NodeIdError::InvalidPoint)?;
        // curve25519-dalek reduces a non-canonical y coordinate while decompressing;
        // re-encoding catches it (and a sign bit set on x = 0).
        if key.to_edwards().compress().as_bytes() != bytes {
            return Err(NodeIdError::InvalidPoint);
        }
        if key.is_weak() {
            return Err(NodeIdError::WeakKey);
        }
        Ok(Self(*bytes))
    }

    /// Validates a slice (must be exactly 32 bytes).
    pub fn from_slice(bytes: &[u8]) -> Result<Self, NodeIdError> {
        let array: &[u8; 32] = bytes.try_into().map_err(|_| NodeIdError::WrongLength {
            expected: 32,
            got: bytes.len(),
        })?;
        Self::from_bytes(array)
    }

    /// The public key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The verifying key (already validated at construction).
    pub fn verifying_key(&self) -> VerifyingKey {
        // Validated in `from_bytes`; decompression is deterministic.
        VerifyingKey::from_bytes(&self.0).unwrap_or_else(|_| unreachable!("NodeId validated"))
    }

    /// A short form for logs: the first 10 characters after the prefix.
    pub fn fmt_short(&self) -> String {
        let full = self.to_string();
        full[NODE_ID_PREFIX.len()..NODE_ID_PREFIX.len() + 10].to_owned()
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = String::with_capacity(NODE_ID_TEXT_LEN);
        text.push_str(NODE_ID_PREFIX);
        let mut acc: u16 = 0;
        let mut bits = 0u32;
        for &byte in &self.0 {
            acc = (acc << 8) | u16::from(byte);
            bits += 8;
            while bits >= 5 {
                bits -= 5;
                text.push(char::from(ALPHABET[usize::from((acc >> bits) & 31)]));
            }
        }
        if bits > 0 {
            text.push(char::from(ALPHABET[usize::from((acc << (5 - bits)) & 31)]));
        }
        f.write_str(&text)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

impl FromStr for NodeId {
    type Err = NodeIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let body = text
            .strip_prefix(NODE_ID_PREFIX)
            .ok_or(NodeIdError::MissingPrefix)?;
        if text.len() != NODE_ID_TEXT_LEN {
            return Err(NodeIdError::WrongLength {
                expected: NODE_ID_TEXT_LEN,
                got: text.len(),
            });
        }
        let mut out = [0u8; 32];
        let mut acc: u32 = 0;
        let mut bits = 0u32;
        let mut filled = 0usize;
        for (i, ch) in body.char_indices() {
            let value = match ch {
                'a'..='z' => ch as u32 - 'a' as u32,
                '2'..='7' => ch as u32 - '2' as u32 + 26,
                _ => {
                    return Err(NodeIdError::BadCharacter {
                        found: ch,
                        position: i + NODE_ID_PREFIX.len(),
                    });
                }
            };
            acc = (acc << 5) | value;
            bits += 5;
            if bits >= 8 {
                bits -= 8;
                if filled < out.len() {
                    out[filled] = (acc >> bits) as u8;
                    filled += 1;
                }
            }
            acc &= (1 << bits) - 1;
        }
        // 52 * 5 = 260 bits: exactly 4 trailing bits, which must be zero.
        if bits != 4 || acc != 0 || filled != 32 {
            return Err(NodeIdError::NonCanonicalText);
        }
        Self::from_bytes(&out)
    }
}

impl Serialize for NodeId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            serializer.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        if deserializer.is_human_readable() {
            let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
            text.parse().map_err(D::Error::custom)
        } else {
            struct BytesVisitor;
            impl serde::de::Visitor<'_> for BytesVisitor {
                type Value = NodeId;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("32 bytes of an Ed25519 public key")
                }
                fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<NodeId, E> {
                    NodeId::from_slice(v).map_err(E::custom)
                }
            }
            deserializer.deserialize_bytes(BytesVisitor)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use proptest::prelude::*;

    fn sample() -> NodeId {
        Identity::from_seed([7; 32]).node_id()
    }

    #[test]
    fn text_round_trip_is_canonical() {
        let id = sample();
        let text = id.to_string();
        assert_eq!(text.len(), NODE_ID_TEXT_LEN);
        assert!(text.starts_with("np"));
        assert_eq!(text.parse::<NodeId>(), Ok(id));
    }

    #[test]
    fn rejects_each_malformation_with_its_own_error() {
        let text = sample().to_string();
        assert_eq!(text[2..].parse::<NodeId>(), Err(NodeIdError::MissingPrefix));
        assert!(matches!(
            text[..text.len() - 1].parse::<NodeId>(),
            Err(NodeIdError::WrongLength { .. })
        ));
        assert!(matches!(
            text.to_uppercase()
                .replacen("NP", "np", 1)
                .parse::<NodeId>(),
            Err(NodeIdError::BadCharacter { .. })
        ));
        assert!(matches!(
            format!("{}=", &text[..text.len() - 1]).parse::<NodeId>(),
            Err(NodeIdError::BadCharacter { found: '=', .. })
        ));
        // Flip a trailing (padding) bit of the last character: same bytes, other text.
        let last = text.as_bytes()[text.len() - 1];
        let idx = ALPHABET.iter().position(|&c| c == last).unwrap_or(0);
        let other = char::from(ALPHABET[idx ^ 1]);
        let non_canonical = format!("{}{}", &text[..text.len() - 1], other);
        assert_eq!(
            non_canonical.parse::<NodeId>(),
            Err(NodeIdError::NonCanonicalText)
        );
    }

    #[test]
    fn rejects_identity_point_as_weak() {
        let mut identity = [0u8; 32];
        identity[0] = 1; // y = 1: the neutral element
        assert_eq!(NodeId::from_bytes(&identity), Err(NodeIdError::WeakKey));
    }

    #[test]
    fn rejects_non_canonical_point_encoding() {
        // y = p + 1 (non-canonical encoding of y = 1).
        let mut bytes = [0xffu8; 32];
        bytes[0] = 0xee;
        bytes[31] = 0x7f;
        assert_eq!(NodeId::from_bytes(&bytes), Err(NodeIdError::InvalidPoint));
    }

    #[test]
    fn the_validation_cache_answers_as_validation_does_and_stays_bounded() {
        let mut y_one = [0u8; 32];
        y_one[0] = 1;
        let mut y_p_plus_one = [0xffu8; 32];
        y_p_plus_one[0] = 0xee;
        y_p_plus_one[31] = 0x7f;
        // More valid ids than one thread keeps, the same ones twice, and the invalid
        // encodings between them: every answer is validation's.
        let ids: Vec<[u8; 32]> = (0..VALIDATED_PER_THREAD + 8)
            .map(|i| {
                *Identity::from_seed(
                    [(i % 251) as u8, (i / 251) as u8, 1, 2]
                        .repeat(8)
                        .try_into()
                        .unwrap(),
                )
                .node_id()
                .as_bytes()
            })
            .collect();
        for _ in 0..2 {
            for bytes in &ids {
                assert_eq!(NodeId::from_bytes(bytes), NodeId::validate(bytes));
                assert_eq!(
                    NodeId::from_bytes(bytes).map(|id| *id.as_bytes()),
                    Ok(*bytes)
                );
                assert_eq!(NodeId::from_bytes(&y_one), Err(NodeIdError::WeakKey));
                assert_eq!(
                    NodeId::from_bytes(&y_p_plus_one),
                    Err(NodeIdError::InvalidPoint)
                );
            }
        }
        assert!(VALIDATED.with(|v| v.borrow().len()) <= VALIDATED_PER_THREAD);
        assert!(!VALIDATED.with(|v| v.borrow().contains(&y_one)));
    }

    #[test]
    fn rejects_wrong_slice_length() {
        assert_eq!(
            NodeId::from_slice(&[1; 31]),
            Err(NodeIdError::WrongLength {
                expected: 32,
                got: 31
            })
        );
    }

    #[test]
    fn serde_text_and_binary_round_trip() {
        let id = sample();
        let json = serde_json::to_string(&id).unwrap_or_default();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<NodeId>(&json).ok(), Some(id));
        let bin = postcard::to_stdvec(&id).unwrap_or_default();
        assert_eq!(bin.len(), 33);
        assert_eq!(postcard::from_bytes::<NodeId>(&bin).ok(), Some(id));
    }

    proptest! {
        #[test]
        fn any_seed_round_trips(seed in any::<[u8; 32]>()) {
            let id = Identity::from_seed(seed).node_id();
            prop_assert_eq!(id.to_string().parse::<NodeId>(), Ok(id));
        }

        #[test]
        fn arbitrary_text_never_panics(text in "np[a-z2-7=A-Z]{0,60}") {
            let _ = text.parse::<NodeId>();
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in any::<[u8; 32]>()) {
            if let Ok(id) = NodeId::from_bytes(&bytes) {
                prop_assert_eq!(id.as_bytes(), &bytes);
            }
        }
    }
}
