//! How a resumed open's R1 and its answer are sealed, for either kind of open.

use crate::error::Error;
use crate::frame::write_prefixed;
use crate::handshake::handshake_hash;
use crate::limits::TAG_LEN;
use crate::noise;
use crate::transport::Transport;

use super::keyed::{self, K2_LEN};
use super::{KIND_KEYED, R2_LEN};

/// How R1 and its answer are sealed: a Noise `NNpsk0` handshake (fresh DH) or keys derived
/// from the secret ([`keyed`]).
pub(super) enum Sealer {
    Dh(Box<snow::HandshakeState>),
    Keyed {
        keys: keyed::Keys,
        initiator: bool,
        /// SHA-256 of R1 (header and sealed part), for the channel hash.
        r1: [u8; 32],
    },
}

impl Sealer {
    pub(super) fn new(
        kind: u8,
        secret: &[u8; 32],
        prologue: &[u8],
        initiator: bool,
    ) -> Result<Self, Error> {
        if kind == KIND_KEYED {
            return Ok(Self::Keyed {
                keys: keyed::Keys::derive(secret, prologue)?,
                initiator,
                r1: [0; 32],
            });
        }
        let builder = noise::resume_builder().prologue(prologue)?.psk(0, secret)?;
        let hs = if initiator {
            builder.build_initiator()?
        } else {
            builder.build_responder()?
        };
        Ok(Self::Dh(Box::new(hs)))
    }

    /// What sealing adds to R1's payload: the ephemeral key (with a DH) and the tag.
    pub(super) fn overhead(&self) -> usize {
        match self {
            Self::Dh(_) => 32 + TAG_LEN,
            Self::Keyed { .. } => TAG_LEN,
        }
    }

    /// Takes note of R1 as sent or received (header and sealed part, no length prefix): a
    /// keyed channel's hash commits to it, as Noise's handshake hash does.
    pub(super) fn note_r1(&mut self, r1_message: &[u8]) {
        if let Self::Keyed { r1, .. } = self {
            r1.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, r1_message).as_ref());
        }
    }

    pub(super) fn seal_open(&mut self, payload: &[u8], out: &mut [u8]) -> Result<usize, Error> {
        match self {
            Self::Dh(hs) => hs.write_message(payload, out).map_err(Error::from),
            Self::Keyed { keys, .. } => keys.seal_open(payload, out),
        }
    }

    pub(super) fn open_open(&mut self, sealed: &[u8], out: &mut [u8]) -> Result<usize, Error> {
        match self {
            Self::Dh(hs) => hs.read_message(sealed, out).map_err(Error::from),
            Self::Keyed { keys, .. } => keys.open_open(sealed, out),
        }
    }

    /// The callee's answer (R2 or K2), appended to `out` with its length prefix; the
    /// channel's ciphers and hash.
    pub(super) fn write_answer(self, out: &mut Vec<u8>) -> Result<(Transport, [u8; 32]), Error> {
        match self {
            Self::Dh(mut hs) => {
                write_prefixed(out, R2_LEN, |buf| {
                    hs.write_message(&[], buf).map_err(Error::from)
                })?;
                noise_channel(*hs)
            }
            Self::Keyed {
                keys,
                initiator,
                r1,
            } => {
                let at = out.len() + crate::limits::LENGTH_PREFIX;
                write_prefixed(out, K2_LEN, |buf| keys.seal_answer(buf))?;
                let hash = keys.channel_hash(&r1, &out[at..]);
                Ok((keys.transport(initiator)?, hash))
            }
        }
    }

    /// Checks the callee's answer (R2 or K2): the channel's ciphers and hash.
    pub(super) fn read_answer(self, message: &[u8]) -> Result<(Transport, [u8; 32]), Error> {
        match self {
            Self::Dh(mut hs) => {
                if message.len() != R2_LEN {
                    return Err(Error::Malformed {
                        what: "resumed open answer (wrong length)",
                    });
                }
                let mut payload = [0u8; R2_LEN];
                let n = hs.read_message(message, &mut payload)?;
                if n != 0 {
                    return Err(Error::Malformed {
                        what: "resumed open answer payload",
                    });
                }
                noise_channel(*hs)
            }
            Self::Keyed {
                keys,
                initiator,
                r1,
            } => {
                keys.check_answer(message)?;
                Ok((keys.transport(initiator)?, keys.channel_hash(&r1, message)))
            }
        }
    }
}

/// A finished `NNpsk0`'s ciphers and hash.
fn noise_channel(hs: snow::HandshakeState) -> Result<(Transport, [u8; 32]), Error> {
    let hash = handshake_hash(&hs);
    Ok((Transport::Noise(hs.into_transport_mode()?), hash))
}
