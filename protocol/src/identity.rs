//! [`Identity`]: a node's long-term Ed25519 secret key, and context-bound signatures.
//!
//! The secret never prints (`Debug` shows only the NodeId) and is wiped on drop
//! (ed25519-dalek's `ZeroizeOnDrop`). Storage at rest lives in `nullport-keyring`.

use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey};

use crate::domain::signed_message;
use crate::node_id::NodeId;

/// Why a context-bound signature does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The signature is malformed or does not verify (strictly) for this key and context.
    #[error("signature does not verify")]
    Invalid,
}

/// A node's long-term Ed25519 identity (secret key).
pub struct Identity {
    key: SigningKey,
    node_id: NodeId,
}

impl Identity {
    /// A new random identity from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, crate::Error> {
        let mut seed = zeroize::Zeroizing::new([0u8; 32]);
        getrandom::getrandom(seed.as_mut()).map_err(|_| crate::Error::Random)?;
        Ok(Self::from_seed(*seed))
    }

    /// The identity for a 32-byte Ed25519 seed (the RFC 8032 secret key).
    ///
    /// A seed whose public key is weak cannot occur: clamping makes every scalar a multiple of
    /// the cofactor times a non-zero value below the group order, so the point has full order.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let key = SigningKey::from_bytes(&seed);
        let node_id = NodeId::from_bytes(key.verifying_key().as_bytes())
            .unwrap_or_else(|e| unreachable!("clamped Ed25519 key is valid: {e}"));
        Self { key, node_id }
    }

    /// The 32-byte seed, for storing at rest. Handle with care.
    pub fn seed(&self) -> zeroize::Zeroizing<[u8; 32]> {
        zeroize::Zeroizing::new(self.key.to_bytes())
    }

    /// This identity's public NodeId.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Signs `body` under a domain-separation `context` (see [`crate::domain`]).
    pub fn sign(&self, context: &str, body: &[u8]) -> [u8; 64] {
        self.key.sign(&signed_message(context, body)).to_bytes()
    }
}

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); the 32 key bytes follow.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// DER prefix of an Ed25519 PKCS#8 v1 private key (RFC 8410); the 32 seed bytes follow.
const PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

impl Identity {
    /// The private key as PKCS#8 v1 DER, for TLS libraries (relay-link authentication).
    pub fn to_pkcs8_der(&self) -> zeroize::Zeroizing<Vec<u8>> {
        let mut der = zeroize::Zeroizing::new(Vec::with_capacity(48));
        der.extend_from_slice(&PKCS8_PREFIX);
        der.extend_from_slice(self.seed().as_ref());
        der
    }
}

impl NodeId {
    /// The public key as an Ed25519 SubjectPublicKeyInfo (the RFC 7250 raw public key).
    pub fn to_spki_der(&self) -> Vec<u8> {
        let mut der = Vec::with_capacity(44);
        der.extend_from_slice(&SPKI_PREFIX);
        der.extend_from_slice(self.as_bytes());
        der
    }

    /// Parses an Ed25519 SubjectPublicKeyInfo exactly (no other algorithm, no extra bytes)
    /// and validates the key like [`NodeId::from_bytes`].
    pub fn from_spki_der(der: &[u8]) -> Result<NodeId, crate::NodeIdError> {
        match der.strip_prefix(&SPKI_PREFIX[..]) {
            Some(key) => NodeId::from_slice(key),
            None => Err(crate::NodeIdError::WrongLength {
                expected: SPKI_PREFIX.len() + 32,
                got: der.len(),
            }),
        }
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({}, secret: ..)", self.node_id)
    }
}

/// Verifies a context-bound signature with `verify_strict` (rejects malleable and
/// small-order `R` signatures that plain `verify` accepts).
pub fn verify(
    signer: &NodeId,
    context: &str,
    body: &[u8],
    signature: &[u8; 64],
) -> Result<(), SignatureError> {
    let signature = Signature::from_bytes(signature);
    signer
        .verifying_key()
        .verify_strict(&signed_message(context, body), &signature)
        .map_err(|_| SignatureError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain;

    #[test]
    fn signature_verifies_only_in_its_context() {
        let id = Identity::from_seed([3; 32]);
        let sig = id.sign(domain::NOISE_STATIC_V1, b"body");
        assert_eq!(
            verify(&id.node_id(), domain::NOISE_STATIC_V1, b"body", &sig),
            Ok(())
        );
        for other in [
            domain::RELAY_AUTH_V1,
            domain::TOKEN_V1,
            domain::REVOCATION_V1,
            domain::AUDIT_CHECKPOINT_V1,
            domain::ROTATION_V1,
        ] {
            assert_eq!(
                verify(&id.node_id(), other, b"body", &sig),
                Err(SignatureError::Invalid)
            );
        }
        assert_eq!(
            verify(&id.node_id(), domain::NOISE_STATIC_V1, b"bodY", &sig),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn spki_round_trip_and_strictness() {
        let id = Identity::from_seed([3; 32]).node_id();
        let der = id.to_spki_der();
        assert_eq!(der.len(), 44);
        assert_eq!(NodeId::from_spki_der(&der), Ok(id));
        let mut other_alg = der.clone();
        other_alg[8] = 0x71; // Ed448's OID
        assert!(NodeId::from_spki_der(&other_alg).is_err());
        assert!(NodeId::from_spki_der(&der[..43]).is_err());
        assert!(NodeId::from_spki_der(&[der.as_slice(), &[0]].concat()).is_err());
        let pkcs8 = Identity::from_seed([3; 32]).to_pkcs8_der();
        assert_eq!(pkcs8.len(), 48);
        assert_eq!(&pkcs8[16..], &[3u8; 32]);
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let id = Identity::from_seed([9; 32]);
        let shown = format!("{id:?}");
        let seed_hex: String = id.seed().iter().map(|b| format!("{b:02x}")).collect();
        assert!(!shown.contains(&seed_hex));
        assert!(shown.contains("secret: .."));
    }
}
