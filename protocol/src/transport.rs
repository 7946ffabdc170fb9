//! [`Transport`]: the two cipher states of an established channel, one per direction.
//!
//! A full handshake and a resumed open with a fresh DH hand over snow's transport state. A
//! keyed resumed open ([`crate::resume`]) derives its two keys outside Noise (snow cannot
//! build a transport from keys), so [`KeyedTransport`] implements the same Noise cipher
//! state over them: `AESGCM` with the nonce `0^32 || n` (big-endian), empty associated
//! data, and `REKEY(k) = ENCRYPT(k, 2^64 - 1, "", 0^32)[..32]`, checked byte for byte against
//! snow in the tests. Either form seals and opens the same frames; [`crate::Channel`] does
//! not know which it holds.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use zeroize::Zeroize;

use crate::error::Error;
use crate::limits::TAG_LEN;

/// The ciphers of one channel.
pub(crate) enum Transport {
    /// From a Noise handshake.
    Noise(snow::TransportState),
    /// From keys a keyed resumed open derived.
    Keyed(Box<KeyedTransport>),
}

impl Transport {
    /// Encrypts `payload` as the next outgoing message into `out` (at least
    /// `payload.len() + TAG_LEN` bytes); returns the bytes written.
    pub(crate) fn write_message(&mut self, payload: &[u8], out: &mut [u8]) -> Result<usize, Error> {
        match self {
            Self::Noise(t) => t.write_message(payload, out).map_err(Error::from),
            Self::Keyed(k) => k.send.encrypt(payload, out),
        }
    }

    /// Decrypts the next incoming message into `out` (at least `message.len()` bytes);
    /// returns the plaintext length.
    pub(crate) fn read_message(&mut self, message: &[u8], out: &mut [u8]) -> Result<usize, Error> {
        match self {
            Self::Noise(t) => t.read_message(message, out).map_err(Error::from),
            Self::Keyed(k) => k.recv.decrypt(message, out),
        }
    }

    /// Replaces the outgoing key with `REKEY(k)`.
    pub(crate) fn rekey_outgoing(&mut self) -> Result<(), Error> {
        match self {
            Self::Noise(t) => {
                t.rekey_outgoing();
                Ok(())
            }
            Self::Keyed(k) => k.send.rekey(),
        }
    }

    /// Replaces the incoming key with `REKEY(k)`.
    pub(crate) fn rekey_incoming(&mut self) -> Result<(), Error> {
        match self {
            Self::Noise(t) => {
                t.rekey_incoming();
                Ok(())
            }
            Self::Keyed(k) => k.recv.rekey(),
        }
    }
}

/// Noise cipher states over two keys derived outside Noise.
pub(crate) struct KeyedTransport {
    send: CipherState,
    recv: CipherState,
}

impl KeyedTransport {
    /// Ciphers that send under `send` and receive under `recv`. The caller wipes its copies.
    pub(crate) fn new(send: &[u8; 32], recv: &[u8; 32]) -> Result<Self, Error> {
        Ok(Self {
            send: CipherState::new(send)?,
            recv: CipherState::new(recv)?,
        })
    }
}

/// One direction's key and nonce counter.
pub(crate) struct CipherState {
    key: LessSafeKey,
    n: u64,
}

impl CipherState {
    /// A cipher state at nonce 0.
    pub(crate) fn new(key: &[u8; 32]) -> Result<Self, Error> {
        let key = UnboundKey::new(&AES_256_GCM, key).map_err(|_| Error::Authentication)?;
        Ok(Self {
            key: LessSafeKey::new(key),
            n: 0,
        })
    }

    fn nonce(n: u64) -> Nonce {
        let mut bytes = [0u8; 12];
        bytes[4..].copy_from_slice(&n.to_be_bytes());
        Nonce::assume_unique_for_key(bytes)
    }

    /// `ENCRYPT(k, n++, "", payload)` into `out`; returns `payload.len() + TAG_LEN`.
    pub(crate) fn encrypt(&mut self, payload: &[u8], out: &mut [u8]) -> Result<usize, Error> {
        // 2^64 - 1 is reserved for rekeying (the channel stops far earlier).
        if self.n == u64::MAX {
            return Err(Error::NonceExhausted);
        }
        let len = payload.len();
        let Some(out) = out.get_mut(..len + TAG_LEN) else {
            return Err(Error::TooLarge {
                what: "sealed message for the output buffer",
                len: len + TAG_LEN,
                max: out.len(),
            });
        };
        let (body, tag_out) = out.split_at_mut(len);
        body.copy_from_slice(payload);
        let tag = self
            .key
            .seal_in_place_separate_tag(Self::nonce(self.n), Aad::empty(), body)
            .map_err(|_| Error::TooLarge {
                what: "sealed message",
                len,
                max: crate::limits::MAX_NOISE_MESSAGE,
            })?;
        tag_out.copy_from_slice(tag.as_ref());
        self.n += 1;
        Ok(len + TAG_LEN)
    }

    /// `DECRYPT(k, n++, "", message)` into `out`; returns the plaintext length. A forged or
    /// misplaced message is [`Error::Authentication`] and leaves the nonce where it was.
    pub(crate) fn decrypt(&mut self, message: &[u8], out: &mut [u8]) -> Result<usize, Error> {
        if self.n == u64::MAX {
            return Err(Error::NonceExhausted);
        }
        if message.len() < TAG_LEN {
            return Err(Error::Malformed {
                what: "sealed message (shorter than its tag)",
            });
        }
        let Some(buf) = out.get_mut(..message.len()) else {
            return Err(Error::TooLarge {
                what: "message for the output buffer",
                len: message.len(),
                max: out.len(),
            });
        };
        buf.copy_from_slice(message);
        let plain = self
            .key
            .open_in_place(Self::nonce(self.n), Aad::empty(), buf)
            .map_err(|_| Error::Authentication)?
            .len();
        self.n += 1;
        Ok(plain)
    }

    /// `k = REKEY(k)`; the nonce counter is unchanged, as in Noise.
    pub(crate) fn rekey(&mut self) -> Result<(), Error> {
        let mut next = [0u8; 32];
        let sealed =
            self.key
                .seal_in_place_separate_tag(Self::nonce(u64::MAX), Aad::empty(), &mut next);
        let result = match sealed {
            Ok(_) => UnboundKey::new(&AES_256_GCM, &next)
                .map(|k| self.key = LessSafeKey::new(k))
                .map_err(|_| Error::Authentication),
            Err(_) => Err(Error::Authentication),
        };
        next.zeroize();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A finished `NN` handshake's two snow transports and the raw split keys behind them.
    fn snow_pair() -> (
        snow::TransportState,
        snow::TransportState,
        [u8; 32],
        [u8; 32],
    ) {
        let params: snow::params::NoiseParams = "Noise_NN_25519_AESGCM_SHA256".parse().unwrap();
        let mut i = snow::Builder::new(params.clone())
            .build_initiator()
            .unwrap();
        let mut r = snow::Builder::new(params).build_responder().unwrap();
        let (mut m, mut p) = (vec![0u8; 256], vec![0u8; 256]);
        let n = i.write_message(&[], &mut m).unwrap();
        r.read_message(&m[..n], &mut p).unwrap();
        let n = r.write_message(&[], &mut m).unwrap();
        i.read_message(&m[..n], &mut p).unwrap();
        let (k1, k2) = i.dangerously_get_raw_split();
        (
            i.into_transport_mode().unwrap(),
            r.into_transport_mode().unwrap(),
            k1,
            k2,
        )
    }

    #[test]
    fn keyed_ciphers_match_snows_byte_for_byte_across_rekeys() {
        let (mut snow_i, mut snow_r, k1, k2) = snow_pair();
        let mut ours_i = Transport::Keyed(Box::new(KeyedTransport::new(&k1, &k2).unwrap()));
        let mut ours_r = Transport::Keyed(Box::new(KeyedTransport::new(&k2, &k1).unwrap()));
        for round in 0..6u8 {
            let payload: Vec<u8> = (0..(round as usize * 37))
                .map(|x| x as u8 ^ round)
                .collect();
            let (mut a, mut b) = (vec![0u8; 512], vec![0u8; 512]);
            let na = snow_i.write_message(&payload, &mut a).unwrap();
            let nb = ours_i.write_message(&payload, &mut b).unwrap();
            assert_eq!(a[..na], b[..nb], "initiator's message {round}");
            let mut plain = vec![0u8; 512];
            let n = ours_r.read_message(&b[..nb], &mut plain).unwrap();
            assert_eq!(plain[..n], payload[..]);
            // And the other direction: snow's responder to our initiator.
            let nr = snow_r.write_message(&payload, &mut a).unwrap();
            let ns = ours_r.write_message(&payload, &mut b).unwrap();
            assert_eq!(a[..nr], b[..ns], "responder's message {round}");
            let n = ours_i.read_message(&a[..nr], &mut plain).unwrap();
            assert_eq!(plain[..n], payload[..]);
            if round % 2 == 1 {
                snow_i.rekey_outgoing();
                snow_r.rekey_outgoing();
                ours_i.rekey_outgoing().unwrap();
                ours_i.rekey_incoming().unwrap();
                ours_r.rekey_outgoing().unwrap();
                ours_r.rekey_incoming().unwrap();
            }
        }
    }

    #[test]
    fn a_flipped_bit_a_replay_and_a_short_message_are_refused() {
        let key = [7u8; 32];
        let mut send = CipherState::new(&key).unwrap();
        let mut recv = CipherState::new(&key).unwrap();
        let mut wire = vec![0u8; 64];
        let n = send.encrypt(b"hello", &mut wire).unwrap();
        let mut out = vec![0u8; 64];
        let mut flipped = wire[..n].to_vec();
        flipped[2] ^= 1;
        assert_eq!(recv.decrypt(&flipped, &mut out), Err(Error::Authentication));
        assert_eq!(recv.decrypt(&wire[..n], &mut out), Ok(5));
        assert_eq!(&out[..5], b"hello");
        // The same message again is under the next nonce: refused.
        assert_eq!(
            recv.decrypt(&wire[..n], &mut out),
            Err(Error::Authentication)
        );
        assert!(matches!(
            recv.decrypt(&[0u8; TAG_LEN - 1], &mut out),
            Err(Error::Malformed { .. })
        ));
        let mut small = [0u8; 4];
        assert!(matches!(
            send.encrypt(b"hello", &mut small),
            Err(Error::TooLarge { .. })
        ));
    }
}
