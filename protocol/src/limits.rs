//! Named bounds of the end-to-end protocol. Every one is enforced before allocating.

use std::time::Duration;

/// Protocol version carried in the prologue. A different version never completes a handshake.
pub const PROTOCOL_VERSION: u8 = 1;

/// Largest Noise message (handshake or transport), fixed by the Noise specification.
pub const MAX_NOISE_MESSAGE: usize = 65_535;
/// AEAD tag length of every encrypted Noise payload.
pub const TAG_LEN: usize = 16;
/// Bytes a frame header takes in front of each Noise message on the wire (big-endian u16).
pub const LENGTH_PREFIX: usize = 2;

/// Longest service name, in bytes.
pub const MAX_SERVICE_NAME: usize = 64;
/// Largest opaque blob (capability tokens) carried in handshake message 3.
pub const MAX_HELLO_BLOB: usize = 16 * 1024;

/// Size of handshake message 1: the initiator's ephemeral key, and nothing else.
pub const HANDSHAKE_MSG1_LEN: usize = 32;
/// Size of an identity proof: Ed25519 public key + signature.
pub const IDENTITY_PROOF_LEN: usize = 32 + 64;
/// Size of handshake message 2: e, encrypted s, encrypted identity proof.
pub const HANDSHAKE_MSG2_LEN: usize = 32 + (32 + TAG_LEN) + (IDENTITY_PROOF_LEN + TAG_LEN);
/// Largest message 2 accepted: room for a malformed (overlong) proof to be reported as such.
pub const MAX_HANDSHAKE_MSG2_LEN: usize = HANDSHAKE_MSG2_LEN + 256;
/// Length of a ticket id, the public name both sides give one resumption secret.
pub const TICKET_ID_LEN: usize = 16;
/// Most given-up resumed opens one open names ([`crate::wire::Replaced`]).
pub const MAX_REPLACED: usize = 8;
/// Largest list of given-up resumed opens in message 3: count, then ticket id and counter
/// of each.
pub const MAX_REPLACED_LIST: usize = 1 + MAX_REPLACED * (TICKET_ID_LEN + 8);
/// Largest payload of handshake message 3: proof, service name, blob (with their lengths),
/// and the given-up resumed opens it replaces.
pub const MAX_MSG3_PAYLOAD: usize =
    IDENTITY_PROOF_LEN + 1 + MAX_SERVICE_NAME + 2 + MAX_HELLO_BLOB + MAX_REPLACED_LIST;
/// Largest handshake message 3.
pub const MAX_HANDSHAKE_MSG3_LEN: usize = (32 + TAG_LEN) + MAX_MSG3_PAYLOAD + TAG_LEN;

/// Largest plaintext a single transport frame carries (type byte excluded).
pub const MAX_FRAME_DATA: usize = MAX_NOISE_MESSAGE - TAG_LEN - 1;

/// The most first bytes a dial sends behind its last handshake message, before the verdict
/// ([`crate::AwaitingVerdict::seal_first`]): one data frame.
pub const MAX_FIRST_BYTES: usize = MAX_FRAME_DATA;

/// Lifetime of a resumption secret by default ([`crate::resume`]): channels opened later
/// than this after the full handshake run a full handshake again (and make a new secret).
pub const DEFAULT_RESUME_LIFETIME: Duration = Duration::from_secs(600);

/// Tunable limits of a handshake and a channel. `Default` gives safe values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A handshake that has not completed this long after it started fails with `Timeout`.
    pub handshake_timeout: Duration,
    /// The sender rekeys its direction after this many messages under one key.
    pub rekey_after: u64,
    /// A channel closes with `NonceExhausted` before sending or receiving more messages
    /// than this in one direction (well below the 2^64 - 1 Noise nonce limit).
    pub max_messages: u64,
    /// How long after a full handshake the two nodes may open channels by resumption (one
    /// round trip, no identity proofs; see [`crate::resume`]); never extended by a resumed
    /// open. Zero turns resumption off: every channel runs the full handshake.
    pub resume_lifetime: Duration,
    /// Whether a resumed open mixes a fresh X25519 exchange into its channel's keys (`ee`,
    /// forward secrecy per channel). Off (the default), a resumed channel's keys are derived
    /// from the resumption secret alone, without public-key operations: forward secrecy is
    /// then bounded by the secret's lifetime ([`Limits::resume_lifetime`]). On, this side
    /// opens with the DH and, as callee, refuses keyed opens (the caller then runs the full
    /// handshake, and opens to this side with a DH from then on).
    pub resume_dh: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            rekey_after: 1 << 20,
            max_messages: u64::MAX - 1024,
            resume_lifetime: DEFAULT_RESUME_LIFETIME,
            resume_dh: false,
        }
    }
}
