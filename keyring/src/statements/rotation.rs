//! Key rotation: a statement that moves a node from an old identity key to a new one, signed
//! by both. Whoever trusted the old key may follow it to the new one; the old key is retired
//! (refused from then on).

use nullport_protocol::{Identity, NodeId, Signature, domain, identity::verify};
use serde::{Deserialize, Serialize};

pub use nullport_protocol::relay_link::SignedRotation;

/// What a rotation says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotation {
    /// The retired key.
    pub old: NodeId,
    /// The key that replaces it.
    pub new: NodeId,
    /// When (Unix seconds).
    pub issued: u64,
}

/// Why a rotation statement is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RotationError {
    /// Not a statement.
    #[error("malformed rotation statement")]
    Malformed,
    /// One of the two signatures does not verify.
    #[error("rotation statement not signed by both keys")]
    BadSignature,
}

/// Signs a rotation from `old` to `new` (both keys sign).
pub fn sign(old: &Identity, new: &Identity, issued: u64) -> SignedRotation {
    let body = postcard::to_stdvec(&Rotation {
        old: old.node_id(),
        new: new.node_id(),
        issued,
    })
    .unwrap_or_default();
    SignedRotation {
        old_sig: Signature(old.sign(domain::ROTATION_V1, &body)),
        new_sig: Signature(new.sign(domain::ROTATION_V1, &body)),
        body,
    }
}

/// Checks a statement: both signatures over the exact body.
pub fn verify_signed(signed: &SignedRotation) -> Result<Rotation, RotationError> {
    if signed.body.len() > 256 {
        return Err(RotationError::Malformed);
    }
    let (r, rest): (Rotation, &[u8]) =
        postcard::take_from_bytes(&signed.body).map_err(|_| RotationError::Malformed)?;
    if !rest.is_empty() || r.old == r.new {
        return Err(RotationError::Malformed);
    }
    verify(&r.old, domain::ROTATION_V1, &signed.body, &signed.old_sig.0)
        .map_err(|_| RotationError::BadSignature)?;
    verify(&r.new, domain::ROTATION_V1, &signed.body, &signed.new_sig.0)
        .map_err(|_| RotationError::BadSignature)?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_keys_must_sign() {
        let (old, new) = (Identity::from_seed([1; 32]), Identity::from_seed([2; 32]));
        let s = sign(&old, &new, 5);
        assert_eq!(
            verify_signed(&s).map(|r| (r.old, r.new)).ok(),
            Some((old.node_id(), new.node_id()))
        );
        let mallory = Identity::from_seed([3; 32]);
        // Mallory claims to be old's successor: she cannot sign as old.
        let mut forged = sign(&mallory, &mallory_new(), 5);
        forged.body = postcard::to_stdvec(&Rotation {
            old: old.node_id(),
            new: mallory.node_id(),
            issued: 5,
        })
        .unwrap_or_default();
        assert_eq!(verify_signed(&forged), Err(RotationError::BadSignature));
        let mut tampered = s.clone();
        tampered.new_sig.0[3] ^= 1;
        assert_eq!(verify_signed(&tampered), Err(RotationError::BadSignature));
    }

    fn mallory_new() -> Identity {
        Identity::from_seed([4; 32])
    }
}
