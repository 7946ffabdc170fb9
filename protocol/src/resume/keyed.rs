//! Keyed resumed opens: every key of the open and of its channel derived from the
//! resumption secret and the open's prologue, with no public-key operation.
//!
//! `HKDF-SHA256(salt = LABEL, ikm = secret, info = prologue)` gives five 32-byte values: the
//! key that seals R1's payload, the key of the callee's answer (K2, an empty AEAD message:
//! "I hold the secret and acted on this open"), the caller-to-callee and callee-to-caller
//! transport keys, and the key of the channel's hash (for receipts, as a handshake hash; it
//! also covers R1 and K2 as sent). The prologue
//! names the version, the kind of open, both NodeIds, the relay session, the ticket id and the
//! counter, so no two opens share a key (the replay window makes each counter usable once)
//! and none can be moved to another session, pair or counter. Each key seals one message at
//! nonce 0 (R1, K2) or starts a Noise cipher state ([`crate::transport`]).

use ring::hkdf;
use zeroize::Zeroizing;

use crate::error::Error;
use crate::limits::TAG_LEN;
use crate::transport::{CipherState, KeyedTransport, Transport};

/// HKDF salt of a keyed open's keys.
const LABEL: &[u8] = b"nullport/e2e-keyed/v1";
/// Label in front of a keyed channel's hash.
const HASH_LABEL: &[u8] = b"nullport/e2e-keyed-hash/v1";
/// Size of the callee's answer to a keyed R1: an empty AEAD message.
pub const K2_LEN: usize = TAG_LEN;

/// The keys of one keyed open, wiped when dropped.
pub(crate) struct Keys {
    okm: Zeroizing<[u8; 5 * 32]>,
}

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

impl Keys {
    /// Derives the keys of the open that `prologue` names under `secret`.
    pub(crate) fn derive(secret: &[u8; 32], prologue: &[u8]) -> Result<Self, Error> {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, LABEL).extract(secret);
        let mut okm = Zeroizing::new([0u8; 5 * 32]);
        prk.expand(&[prologue], Len(okm.len()))
            .and_then(|m| m.fill(&mut okm[..]))
            .map_err(|_| Error::Malformed {
                what: "keyed open prologue",
            })?;
        Ok(Self { okm })
    }

    fn key(&self, index: usize) -> &[u8; 32] {
        let start = index * 32;
        self.okm[start..start + 32]
            .try_into()
            .unwrap_or_else(|_| unreachable!("five keys of 32 bytes"))
    }

    /// Seals R1's payload into `out`; returns the bytes written.
    pub(crate) fn seal_open(&self, payload: &[u8], out: &mut [u8]) -> Result<usize, Error> {
        CipherState::new(self.key(0))?.encrypt(payload, out)
    }

    /// Opens R1's sealed payload into `out`; returns the plaintext length.
    pub(crate) fn open_open(&self, sealed: &[u8], out: &mut [u8]) -> Result<usize, Error> {
        CipherState::new(self.key(0))?.decrypt(sealed, out)
    }

    /// The callee's answer, K2, into `out` ([`K2_LEN`] bytes).
    pub(crate) fn seal_answer(&self, out: &mut [u8]) -> Result<usize, Error> {
        CipherState::new(self.key(1))?.encrypt(&[], out)
    }

    /// Checks the callee's answer: exactly [`K2_LEN`] bytes, sealed under this open's key.
    pub(crate) fn check_answer(&self, message: &[u8]) -> Result<(), Error> {
        if message.len() != K2_LEN {
            return Err(Error::Malformed {
                what: "resumed open answer (wrong length)",
            });
        }
        let mut buf = [0u8; K2_LEN];
        CipherState::new(self.key(1))?.decrypt(message, &mut buf)?;
        Ok(())
    }

    /// The channel's ciphers, for the caller (`initiator`) or the callee.
    pub(crate) fn transport(&self, initiator: bool) -> Result<Transport, Error> {
        let (c2s, s2c) = (self.key(2), self.key(3));
        let keyed = if initiator {
            KeyedTransport::new(c2s, s2c)?
        } else {
            KeyedTransport::new(s2c, c2s)?
        };
        Ok(Transport::Keyed(Box::new(keyed)))
    }

    /// The channel's hash, the same on both sides and different for every open:
    /// `SHA-256(HASH_LABEL || key 4 || SHA-256(R1) || K2)`, so that, like Noise's handshake
    /// hash, it commits to the open's whole transcript (the request and first bytes too).
    pub(crate) fn channel_hash(&self, r1_digest: &[u8; 32], k2: &[u8]) -> [u8; 32] {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(HASH_LABEL);
        ctx.update(self.key(4));
        ctx.update(r1_digest);
        ctx.update(k2);
        let mut hash = [0u8; 32];
        hash.copy_from_slice(ctx.finish().as_ref());
        hash
    }
}
