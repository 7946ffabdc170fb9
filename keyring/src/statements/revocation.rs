//! Signed revocation lists: a signer (an admin or token issuer) names node keys and token ids
//! that must no longer be accepted. Each signer's list carries a version; a node keeps the
//! newest per signer and ignores older ones, so a relay that stores and forwards the lists
//! can neither forge one nor roll one back.

use std::collections::BTreeMap;
use std::path::Path;

use nullport_protocol::{Identity, NodeId, Signature, domain, identity::verify};
use serde::{Deserialize, Serialize};

/// Largest encoded list accepted: 512 KiB, about 15,000 revoked keys (33 bytes each) or
/// 30,000 token ids. It crosses the relay link in one control message
/// (`nullport_protocol::relay_link::MAX_CONTROL_MESSAGE`, 1 MiB).
pub const MAX_LIST_BYTES: usize = 512 * 1024;

/// The content of one signer's list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationList {
    /// Who signs it.
    pub signer: NodeId,
    /// Monotonic version (each new list from this signer must be higher).
    pub version: u64,
    /// When it was issued (Unix seconds).
    pub issued: u64,
    /// Revoked node keys.
    pub keys: Vec<NodeId>,
    /// Revoked token ids (any link of a chain).
    pub tokens: Vec<[u8; 16]>,
}

pub use nullport_protocol::relay_link::SignedRevocations;

/// Why a list is not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RevocationError {
    /// Not a list, or too large.
    #[error("malformed revocation list")]
    Malformed,
    /// The signature does not verify.
    #[error("revocation list signature invalid")]
    BadSignature,
    /// The signer is not trusted to revoke here.
    #[error("revocation list from untrusted signer {0}")]
    Untrusted(NodeId),
    /// Not newer than the list already held from that signer.
    #[error("stale revocation list (version {got}, holding {held})")]
    Stale {
        /// Version offered.
        got: u64,
        /// Version held.
        held: u64,
    },
}

impl RevocationList {
    /// An empty list of `signer`'s.
    pub fn new(signer: NodeId) -> RevocationList {
        RevocationList {
            signer,
            version: 0,
            issued: 0,
            keys: Vec::new(),
            tokens: Vec::new(),
        }
    }

    /// The list `signer` keeps of what it revoked (at `path`, JSON; none yet: empty). A list
    /// kept under a key since rotated away carries its entries over to `signer`, starting its
    /// own versions (the old key's list is still held, and followed, by nodes).
    pub fn load_own(path: &Path, signer: NodeId) -> Result<RevocationList, crate::Error> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let mut list: RevocationList =
                    serde_json::from_slice(&bytes).map_err(|e| crate::Error::Format {
                        path: path.to_owned(),
                        error: e.into(),
                    })?;
                if list.signer != signer {
                    list.signer = signer;
                    list.version = 0;
                }
                Ok(list)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RevocationList::new(signer)),
            Err(error) => Err(crate::Error::Io {
                path: path.to_owned(),
                error,
            }),
        }
    }

    /// Saves the list (atomically, 0600).
    pub fn save_own(&self, path: &Path) -> Result<(), crate::Error> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| crate::Error::Format {
            path: path.to_owned(),
            error: e.into(),
        })?;
        crate::fs::write_private(path, &bytes, true)
    }

    /// Adds a key; false if it was already on the list.
    pub fn revoke_key(&mut self, key: NodeId) -> bool {
        if self.keys.contains(&key) {
            return false;
        }
        self.keys.push(key);
        true
    }

    /// Adds a token id; false if it was already on the list.
    pub fn revoke_token(&mut self, id: [u8; 16]) -> bool {
        if self.tokens.contains(&id) {
            return false;
        }
        self.tokens.push(id);
        true
    }

    /// The next version of the list, issued at `now` (Unix seconds), signed by `signer`.
    pub fn next(&mut self, now: u64, signer: &Identity) -> SignedRevocations {
        self.version += 1;
        self.issued = now;
        self.sign(signer)
    }

    /// Signs the list.
    pub fn sign(&self, signer: &Identity) -> SignedRevocations {
        let body = postcard::to_stdvec(self).unwrap_or_default();
        let sig = Signature(signer.sign(domain::REVOCATION_V1, &body));
        SignedRevocations { body, sig }
    }
}

/// Decodes a signed list and checks the signature against the signer named inside.
pub fn verify_signed(signed: &SignedRevocations) -> Result<RevocationList, RevocationError> {
    if signed.body.len() > MAX_LIST_BYTES {
        return Err(RevocationError::Malformed);
    }
    let (list, rest): (RevocationList, &[u8]) =
        postcard::take_from_bytes(&signed.body).map_err(|_| RevocationError::Malformed)?;
    if !rest.is_empty() {
        return Err(RevocationError::Malformed);
    }
    verify(
        &list.signer,
        domain::REVOCATION_V1,
        &signed.body,
        &signed.sig.0,
    )
    .map_err(|_| RevocationError::BadSignature)?;
    Ok(list)
}

/// The lists a node holds, newest per signer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RevocationSet {
    lists: BTreeMap<String, (RevocationList, SignedRevocations)>,
}

impl RevocationSet {
    /// Takes a list if it verifies, its signer is trusted, and it is newer than the one held.
    /// Returns the list taken.
    pub fn apply(
        &mut self,
        signed: &SignedRevocations,
        trusted: impl Fn(&NodeId) -> bool,
    ) -> Result<RevocationList, RevocationError> {
        // The signer is the first field: refuse an untrusted signer's list before decoding
        // the rest or checking its signature (anyone may publish lists; only some matter).
        if signed.body.len() <= MAX_LIST_BYTES
            && let Ok((signer, _)) = postcard::take_from_bytes::<NodeId>(&signed.body)
            && !trusted(&signer)
        {
            return Err(RevocationError::Untrusted(signer));
        }
        let list = verify_signed(signed)?;
        if !trusted(&list.signer) {
            return Err(RevocationError::Untrusted(list.signer));
        }
        let key = list.signer.to_string();
        if let Some((held, _)) = self.lists.get(&key)
            && held.version >= list.version
        {
            return Err(RevocationError::Stale {
                got: list.version,
                held: held.version,
            });
        }
        self.lists.insert(key, (list.clone(), signed.clone()));
        Ok(list)
    }

    /// Whether a node key is revoked by any list held.
    pub fn is_key_revoked(&self, key: &NodeId) -> bool {
        self.lists.values().any(|(l, _)| l.keys.contains(key))
    }

    /// Whether a token id is revoked by any list held.
    pub fn is_token_revoked(&self, id: &[u8; 16]) -> bool {
        self.lists.values().any(|(l, _)| l.tokens.contains(id))
    }

    /// The version held from `signer` (0: none).
    pub fn version_of(&self, signer: &NodeId) -> u64 {
        self.lists
            .get(&signer.to_string())
            .map(|(l, _)| l.version)
            .unwrap_or(0)
    }

    /// The list held from `signer`.
    pub fn list_of(&self, signer: &NodeId) -> Option<&RevocationList> {
        self.lists.get(&signer.to_string()).map(|(l, _)| l)
    }

    /// Every list held.
    pub fn lists(&self) -> impl Iterator<Item = &RevocationList> {
        self.lists.values().map(|(l, _)| l)
    }

    /// The signers of the held lists that revoke `key`.
    pub fn key_revoked_by(&self, key: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        self.lists()
            .filter(move |l| l.keys.contains(&key))
            .map(|l| l.signer)
    }

    /// The signers of the held lists that revoke token id `id`.
    pub fn token_revoked_by(&self, id: [u8; 16]) -> impl Iterator<Item = NodeId> + '_ {
        self.lists()
            .filter(move |l| l.tokens.contains(&id))
            .map(|l| l.signer)
    }

    /// Loads a saved set (missing file: empty).
    pub fn load(path: &Path) -> Result<RevocationSet, crate::Error> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| crate::Error::Format {
                path: path.to_owned(),
                error: e.into(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RevocationSet::default()),
            Err(error) => Err(crate::Error::Io {
                path: path.to_owned(),
                error,
            }),
        }
    }

    /// Saves the set atomically.
    pub fn save(&self, path: &Path) -> Result<(), crate::Error> {
        let bytes = serde_json::to_vec(self).map_err(|e| crate::Error::Format {
            path: path.to_owned(),
            error: e.into(),
        })?;
        crate::fs::write_private(path, &bytes, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(signer: &Identity, version: u64, keys: Vec<NodeId>) -> SignedRevocations {
        RevocationList {
            signer: signer.node_id(),
            version,
            issued: 0,
            keys,
            tokens: vec![[7; 16]],
        }
        .sign(signer)
    }

    #[test]
    fn newest_list_per_trusted_signer_wins_and_rollback_is_ignored() {
        let admin = Identity::from_seed([1; 32]);
        let victim = Identity::from_seed([2; 32]).node_id();
        let mut set = RevocationSet::default();
        let trusted = |id: &NodeId| *id == admin.node_id();
        assert!(set.apply(&list(&admin, 2, vec![victim]), trusted).is_ok());
        assert!(set.is_key_revoked(&victim));
        assert!(set.is_token_revoked(&[7; 16]));
        // A relay replaying an older (or the same) list: ignored, the newer one stays.
        assert_eq!(
            set.apply(&list(&admin, 1, vec![]), trusted).err(),
            Some(RevocationError::Stale { got: 1, held: 2 })
        );
        assert!(set.is_key_revoked(&victim));
        // Untrusted signer and forged lists.
        let other = Identity::from_seed([3; 32]);
        assert_eq!(
            set.apply(&list(&other, 9, vec![]), trusted).err(),
            Some(RevocationError::Untrusted(other.node_id()))
        );
        let mut forged = list(&admin, 3, vec![]);
        forged.sig.0[0] ^= 1;
        assert_eq!(
            set.apply(&forged, trusted).err(),
            Some(RevocationError::BadSignature)
        );
        let mut edited = list(&admin, 3, vec![]);
        edited.body[1] ^= 1;
        assert!(set.apply(&edited, trusted).is_err());
        assert!(set.is_key_revoked(&victim));
        // A newer list from the admin can also un-revoke.
        assert!(set.apply(&list(&admin, 3, vec![]), trusted).is_ok());
        assert!(!set.is_key_revoked(&victim));
    }
}
