//! Checking a peer's identity proof against the static key Noise authenticated, and the
//! cache of proofs this process has already verified.

use crate::domain;
use crate::error::Error;
use crate::identity::verify;
use crate::node_id::NodeId;
use crate::wire::IdentityProof;

/// Identity proofs this process has already verified, so that repeated channels between the
/// same two processes skip the Ed25519 verification (about 50 us each way). An entry is the
/// exact bytes checked (NodeId, the Noise-authenticated static key, the signature: 128
/// bytes); only proofs that verified are stored, so a hit means the very same check already
/// succeeded. Bounded (128 KiB); the oldest entry is dropped first.
#[derive(Debug, Default)]
pub(crate) struct ProofCache {
    entries: std::sync::Mutex<std::collections::VecDeque<ProofKey>>,
}

type ProofKey = [u8; 128];

/// Entries a [`ProofCache`] holds.
const PROOF_CACHE_ENTRIES: usize = 1024;

impl ProofCache {
    /// None when the static key is not 32 bytes (then nothing is cached).
    fn key(proof: &IdentityProof, remote_static: &[u8]) -> Option<ProofKey> {
        let remote_static: &[u8; 32] = remote_static.try_into().ok()?;
        let mut key = [0u8; 128];
        key[..32].copy_from_slice(proof.node_id.as_bytes());
        key[32..64].copy_from_slice(remote_static);
        key[64..].copy_from_slice(&proof.signature);
        Some(key)
    }

    fn contains(&self, key: &ProofKey) -> bool {
        self.entries
            .lock()
            .map(|e| e.iter().any(|k| k == key))
            .unwrap_or(false)
    }

    fn insert(&self, key: ProofKey) {
        if let Ok(mut e) = self.entries.lock() {
            if e.len() >= PROOF_CACHE_ENTRIES {
                e.pop_front();
            }
            e.push_back(key);
        }
    }
}

#[cfg(test)]
impl ProofCache {
    /// How many verified proofs are held.
    pub(crate) fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }
}

/// Checks a peer's identity proof against the static key Noise authenticated.
pub(crate) fn check_proof(
    proof: &IdentityProof,
    hs: &snow::HandshakeState,
    verified: &ProofCache,
) -> Result<NodeId, Error> {
    let remote_static = hs.get_remote_static().ok_or(Error::BadIdentityProof)?;
    let key = ProofCache::key(proof, remote_static);
    if key.as_ref().is_some_and(|k| verified.contains(k)) {
        return Ok(proof.node_id);
    }
    verify(
        &proof.node_id,
        domain::NOISE_STATIC_V1,
        remote_static,
        &proof.signature,
    )
    .map_err(|_| Error::BadIdentityProof)?;
    if let Some(key) = key {
        verified.insert(key);
    }
    Ok(proof.node_id)
}
