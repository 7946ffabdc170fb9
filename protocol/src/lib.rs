//! nullport's wire protocol, sans-IO.
//!
//! This crate has no async runtime, no sockets and no clock: time and bytes are passed in,
//! bytes come out. It holds
//! - [`NodeId`]: a node's Ed25519 public key and its canonical text form;
//! - [`Identity`]: the secret key, and context-bound signatures ([`domain`]);
//! - the end-to-end handshake ([`handshake`]): `Noise_XX_25519_AESGCM_SHA256` bound to the
//!   identities, with an explicit accept or deny before any application byte;
//! - resumed opens ([`resume`]): one round trip between nodes that ran the full handshake
//!   minutes ago;
//! - the [`Channel`] it yields, and the length-prefixed framing ([`Deframer`]);
//! - the node <-> relay messages ([`relay_link`]) and key encodings for TLS ([`identity`]);
//! - the frames of typed RPC calls over one channel ([`rpc`]).
//!
//! `docs/protocol.md` describes every byte layout.
#![forbid(unsafe_code)]

pub mod channel;
pub mod domain;
pub mod error;
pub mod fixed_bytes;
pub mod frame;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod handshake;
pub mod hex;
pub mod identity;
pub mod limits;
pub mod node_id;
pub mod noise;
mod proofs;
pub mod reason;
pub mod relay_link;
pub mod resume;
pub mod rpc;
mod transport;
pub mod wire;

#[cfg(test)]
mod tests;

pub use channel::{Channel, Received};
pub use error::{Error, NoiseFailure};
pub use fixed_bytes::{Digest, Signature};
pub use frame::Deframer;
pub use handshake::{
    AwaitingFinish, AwaitingVerdict, DialRequest, HandshakeKeys, Initiator, Request, Responder,
    SessionId,
};
pub use identity::{Identity, SignatureError};
pub use limits::Limits;
pub use node_id::{NodeId, NodeIdError};
pub use resume::{Answered, Opening, Resumed, SessionCache};
pub use wire::{DenyReason, ServiceName};
