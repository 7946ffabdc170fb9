//! Fixed-size byte values that travel on the relay link and sit in state files: an Ed25519
//! [`Signature`] and a SHA-256 [`Digest`]. Their length is part of their type, so a
//! truncated or padded value is a decoding error, not a check someone has to remember.
//!
//! Encoded as raw bytes in binary formats (postcard: a length then the bytes; any other
//! length is refused) and as lowercase hex in human-readable ones (JSON state files).

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// An Ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; 64]);

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

macro_rules! fixed_bytes {
    ($name:ident, $len:expr, $what:expr) => {
        impl $name {
            /// The length in bytes.
            pub const LEN: usize = $len;

            /// Parses lowercase or uppercase hex of exactly the right length.
            pub fn from_hex(text: &str) -> Option<Self> {
                crate::hex::decode_array::<$len>(text).map($name)
            }

            /// Lowercase hex.
            pub fn to_hex(&self) -> String {
                crate::hex::encode(&self.0)
            }

            /// The bytes.
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }
        }

        impl From<[u8; $len]> for $name {
            fn from(bytes: [u8; $len]) -> Self {
                $name(bytes)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.to_hex())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.serialize_str(&self.to_hex())
                } else {
                    s.serialize_bytes(&self.0)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let visitor = FixedVisitor::<$len>($what);
                let bytes = if d.is_human_readable() {
                    d.deserialize_any(visitor)?
                } else {
                    d.deserialize_bytes(visitor)?
                };
                Ok($name(bytes))
            }
        }
    };
}

fixed_bytes!(Signature, 64, "a 64-byte Ed25519 signature");
fixed_bytes!(Digest, 32, "a 32-byte SHA-256 digest");

/// Reads exactly `N` bytes: raw bytes, hex text, or (as older JSON files hold them) a
/// sequence of numbers.
struct FixedVisitor<const N: usize>(&'static str);

impl<'de, const N: usize> Visitor<'de> for FixedVisitor<N> {
    type Value = [u8; N];

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<[u8; N], E> {
        v.try_into().map_err(|_| E::invalid_length(v.len(), &self))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<[u8; N], E> {
        crate::hex::decode_array::<N>(v)
            .ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<[u8; N], A::Error> {
        let mut out = [0u8; N];
        for (i, b) in out.iter_mut().enumerate() {
            *b = seq
                .next_element()?
                .ok_or_else(|| de::Error::invalid_length(i, &self))?;
        }
        if seq.next_element::<u8>()?.is_some() {
            return Err(de::Error::invalid_length(N + 1, &self));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postcard_round_trip_and_wrong_lengths_refused() {
        let sig = Signature([7; 64]);
        let bytes = postcard::to_stdvec(&sig).unwrap();
        assert_eq!(bytes.len(), 1 + 64, "a length byte, then the bytes");
        assert_eq!(postcard::from_bytes::<Signature>(&bytes).unwrap(), sig);
        // 63 and 65 bytes: refused.
        let mut short = vec![63u8];
        short.extend_from_slice(&[7; 63]);
        assert!(postcard::from_bytes::<Signature>(&short).is_err());
        let mut long = vec![65u8];
        long.extend_from_slice(&[7; 65]);
        assert!(postcard::from_bytes::<Signature>(&long).is_err());
    }

    #[test]
    fn json_is_hex_and_older_number_arrays_still_read() {
        let d = Digest([0xab; 32]);
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{}\"", "ab".repeat(32)));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        let numbers = serde_json::to_string(&[0xabu8; 32]).unwrap();
        assert_eq!(serde_json::from_str::<Digest>(&numbers).unwrap(), d);
        assert!(serde_json::from_str::<Digest>(&format!("\"{}\"", "ab".repeat(31))).is_err());
        assert!(serde_json::from_str::<Digest>("[1,2,3]").is_err());
        assert!(
            serde_json::from_str::<Digest>(&serde_json::to_string(&vec![1u8; 33]).unwrap())
                .is_err()
        );
    }
}
