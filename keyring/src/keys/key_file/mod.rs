//! Identity key files: encrypted at rest by default.
//!
//! Layout (all integers big-endian):
//! ```text
//! plaintext:  "NPKEY" | version=1 | kind=0 | seed(32) | node_id(32)
//! encrypted:  "NPKEY" | version=1 | kind=1 | node_id(32) | m_cost_kib(u32) | t_cost(u32)
//!             | p_cost(u32) | salt(16) | nonce(24) | XChaCha20-Poly1305(seed(32)) + tag(16)
//! ```
//! The NodeId is stored in clear (it is public) so `nullport id` needs no passphrase; it is
//! authenticated with everything else and checked against the decrypted key.
//! The key is argon2id(passphrase, salt, params). Everything before the ciphertext is the
//! AEAD's associated data, so the parameters are authenticated; they are also checked against
//! a floor and a ceiling *before* the KDF runs. A wrong passphrase and any altered byte under
//! the AEAD give the same [`Error::DecryptFailed`].

use std::path::Path;

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use nullport_protocol::Identity;
use zeroize::Zeroizing;

use crate::error::{Error, KdfProblem};
use crate::fs::{read_private, write_private};

const MAGIC: &[u8; 5] = b"NPKEY";
const VERSION: u8 = 1;
const KIND_PLAINTEXT: u8 = 0;
const KIND_ENCRYPTED: u8 = 1;
const HEADER: usize = MAGIC.len() + 2;
const PLAINTEXT_LEN: usize = HEADER + 32 + 32;
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 24;
const PARAMS_LEN: usize = 12;
const ENCRYPTED_ID_LEN: usize = 32;
const PARAMS_AT: usize = HEADER + ENCRYPTED_ID_LEN;
const ENCRYPTED_AAD_LEN: usize = PARAMS_AT + PARAMS_LEN + SALT_LEN + NONCE_LEN;
const ENCRYPTED_LEN: usize = ENCRYPTED_AAD_LEN + 32 + 16;

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl KdfParams {
    /// The floor (OWASP's argon2id minimum: 19 MiB, 2 passes, 1 lane).
    pub const FLOOR: KdfParams = KdfParams {
        m_cost_kib: 19 * 1024,
        t_cost: 2,
        p_cost: 1,
    };
    /// The ceiling: a file asking for more is refused before any work.
    pub const CEILING: KdfParams = KdfParams {
        m_cost_kib: 1024 * 1024,
        t_cost: 16,
        p_cost: 8,
    };

    fn check(&self) -> Result<(), KdfProblem> {
        let (lo, hi) = (Self::FLOOR, Self::CEILING);
        for (name, v, min, max) in [
            ("memory KiB", self.m_cost_kib, lo.m_cost_kib, hi.m_cost_kib),
            ("passes", self.t_cost, lo.t_cost, hi.t_cost),
            ("lanes", self.p_cost, lo.p_cost, hi.p_cost),
        ] {
            if v < min || v > max {
                return Err(KdfProblem::OutOfBounds {
                    name,
                    value: v,
                    min,
                    max,
                });
            }
        }
        Ok(())
    }
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes, 1 lane: about a quarter of a second on a laptop core.
    fn default() -> Self {
        KdfParams {
            m_cost_kib: 64 * 1024,
            t_cost: 3,
            p_cost: 1,
        }
    }
}

/// How to protect a new key file.
#[derive(Clone)]
pub enum Protection {
    /// Encrypt with a key derived from this passphrase.
    Passphrase(Zeroizing<String>, KdfParams),
    /// Store the seed in clear (0600 only): for unattended servers that accept the risk.
    InsecurePlaintext,
}

impl std::fmt::Debug for Protection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Protection::Passphrase(_, p) => write!(f, "Passphrase(.., {p:?})"),
            Protection::InsecurePlaintext => f.write_str("InsecurePlaintext"),
        }
    }
}

/// Is the key file at `path` encrypted? (Reads only the header.)
pub fn is_encrypted(path: &Path) -> Result<bool, Error> {
    let bytes = read_private(path)?;
    parse_header(path, &bytes).map(|kind| kind == KIND_ENCRYPTED)
}

/// Writes `identity` to `path` (mode 0600, atomically). Refuses to replace an existing file
/// unless `overwrite`.
pub fn store(
    path: &Path,
    identity: &Identity,
    protection: &Protection,
    overwrite: bool,
) -> Result<(), Error> {
    let seed = identity.seed();
    let mut bytes = Zeroizing::new(Vec::with_capacity(ENCRYPTED_LEN));
    bytes.extend_from_slice(MAGIC);
    bytes.push(VERSION);
    match protection {
        Protection::InsecurePlaintext => {
            bytes.push(KIND_PLAINTEXT);
            bytes.extend_from_slice(seed.as_ref());
            bytes.extend_from_slice(identity.node_id().as_bytes());
        }
        Protection::Passphrase(pass, params) => {
            if pass.is_empty() {
                return Err(Error::EmptyPassphrase);
            }
            params.check().map_err(|problem| Error::KdfParams {
                path: path.to_owned(),
                problem,
            })?;
            let mut salt = [0u8; SALT_LEN];
            let mut nonce = [0u8; NONCE_LEN];
            getrandom::getrandom(&mut salt).map_err(|_| Error::Random)?;
            getrandom::getrandom(&mut nonce).map_err(|_| Error::Random)?;
            bytes.push(KIND_ENCRYPTED);
            bytes.extend_from_slice(identity.node_id().as_bytes());
            for v in [params.m_cost_kib, params.t_cost, params.p_cost] {
                bytes.extend_from_slice(&v.to_be_bytes());
            }
            bytes.extend_from_slice(&salt);
            bytes.extend_from_slice(&nonce);
            let key = derive(path, pass.as_bytes(), &salt, params)?;
            let cipher = XChaCha20Poly1305::new(key.as_ref().into());
            let sealed = cipher
                .encrypt(
                    &nonce.into(),
                    Payload {
                        msg: seed.as_ref(),
                        aad: &bytes,
                    },
                )
                .map_err(|_| Error::Random)?;
            bytes.extend_from_slice(&sealed);
        }
    }
    write_private(path, &bytes, overwrite)
}

/// Loads the identity at `path`. `passphrase` is needed only for an encrypted file.
pub fn load(path: &Path, passphrase: Option<&str>) -> Result<Identity, Error> {
    let bytes = Zeroizing::new(read_private(path)?);
    let kind = parse_header(path, &bytes)?;
    let expected_len = if kind == KIND_PLAINTEXT {
        PLAINTEXT_LEN
    } else {
        ENCRYPTED_LEN
    };
    if bytes.len() < expected_len {
        return Err(Error::Truncated {
            path: path.to_owned(),
            len: bytes.len(),
        });
    }
    if bytes.len() > expected_len {
        return Err(Error::Corrupt {
            path: path.to_owned(),
            reason: "trailing bytes",
        });
    }
    if kind == KIND_PLAINTEXT {
        let seed: [u8; 32] = bytes[HEADER..HEADER + 32]
            .try_into()
            .map_err(|_| corrupt(path))?;
        let identity = Identity::from_seed(seed);
        if identity.node_id().as_bytes()[..] != bytes[HEADER + 32..] {
            return Err(Error::Corrupt {
                path: path.to_owned(),
                reason: "stored NodeId does not match the key",
            });
        }
        return Ok(identity);
    }
    let pass = passphrase.ok_or_else(|| Error::PassphraseRequired {
        path: path.to_owned(),
    })?;
    let word = |i: usize| {
        let at = PARAMS_AT + 4 * i;
        u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
    };
    let params = KdfParams {
        m_cost_kib: word(0),
        t_cost: word(1),
        p_cost: word(2),
    };
    params.check().map_err(|problem| Error::KdfParams {
        path: path.to_owned(),
        problem,
    })?;
    let salt = &bytes[PARAMS_AT + PARAMS_LEN..PARAMS_AT + PARAMS_LEN + SALT_LEN];
    let nonce: [u8; NONCE_LEN] = bytes[PARAMS_AT + PARAMS_LEN + SALT_LEN..ENCRYPTED_AAD_LEN]
        .try_into()
        .map_err(|_| corrupt(path))?;
    let key = derive(path, pass.as_bytes(), salt, &params)?;
    let cipher = XChaCha20Poly1305::new(key.as_ref().into());
    let seed = cipher
        .decrypt(
            &nonce.into(),
            Payload {
                msg: &bytes[ENCRYPTED_AAD_LEN..],
                aad: &bytes[..ENCRYPTED_AAD_LEN],
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| Error::DecryptFailed {
            path: path.to_owned(),
        })?;
    let seed: [u8; 32] = seed.as_slice().try_into().map_err(|_| corrupt(path))?;
    let identity = Identity::from_seed(seed);
    if identity.node_id().as_bytes()[..] != bytes[HEADER..PARAMS_AT] {
        return Err(Error::Corrupt {
            path: path.to_owned(),
            reason: "stored NodeId does not match the key",
        });
    }
    Ok(identity)
}

/// The NodeId stored in a key file, without decrypting it (no passphrase needed).
pub fn read_node_id(path: &Path) -> Result<nullport_protocol::NodeId, Error> {
    let bytes = read_private(path)?;
    let kind = parse_header(path, &bytes)?;
    let at = if kind == KIND_PLAINTEXT {
        HEADER + 32
    } else {
        HEADER
    };
    let id = bytes.get(at..at + 32).ok_or(Error::Truncated {
        path: path.to_owned(),
        len: bytes.len(),
    })?;
    nullport_protocol::NodeId::from_slice(id).map_err(|_| Error::Corrupt {
        path: path.to_owned(),
        reason: "stored NodeId is not a valid key",
    })
}

fn corrupt(path: &Path) -> Error {
    Error::Corrupt {
        path: path.to_owned(),
        reason: "inconsistent layout",
    }
}

fn parse_header(path: &Path, bytes: &[u8]) -> Result<u8, Error> {
    if bytes.len() < HEADER {
        if MAGIC.starts_with(bytes) {
            return Err(Error::Truncated {
                path: path.to_owned(),
                len: bytes.len(),
            });
        }
        return Err(Error::NotAKeyFile {
            path: path.to_owned(),
        });
    }
    if &bytes[..MAGIC.len()] != MAGIC {
        return Err(Error::NotAKeyFile {
            path: path.to_owned(),
        });
    }
    if bytes[MAGIC.len()] != VERSION {
        return Err(Error::UnsupportedVersion {
            path: path.to_owned(),
            version: bytes[MAGIC.len()],
        });
    }
    match bytes[MAGIC.len() + 1] {
        k @ (KIND_PLAINTEXT | KIND_ENCRYPTED) => Ok(k),
        _ => Err(Error::Corrupt {
            path: path.to_owned(),
            reason: "unknown key kind",
        }),
    }
}

fn derive(
    path: &Path,
    pass: &[u8],
    salt: &[u8],
    params: &KdfParams,
) -> Result<Zeroizing<[u8; 32]>, Error> {
    let kdf_err = |e: argon2::Error| Error::KdfParams {
        path: path.to_owned(),
        problem: KdfProblem::Argon2(e),
    };
    let p =
        Params::new(params.m_cost_kib, params.t_cost, params.p_cost, Some(32)).map_err(kdf_err)?;
    let mut key = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, p)
        .hash_password_into(pass, salt, key.as_mut())
        .map_err(kdf_err)?;
    Ok(key)
}

#[cfg(test)]
mod tests;
