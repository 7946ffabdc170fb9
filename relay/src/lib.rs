//! nullport's rendezvous relay: QUIC admission, routing and blind splicing.
//!
//! The only listener in a nullport network. Nodes dial out to it over QUIC (TLS 1.3 with
//! RFC 7250 raw Ed25519 keys on both sides); unknown nodes are refused inside the TLS
//! handshake. An admitted node may dial another by NodeId: the relay opens a stream to the
//! target, tells it who called (and the session id to bind into the end-to-end prologue),
//! and splices bytes both ways. Those bytes are the end-to-end Noise handshake and channel:
//! the relay holds no end-to-end key and never learns the service.
#![forbid(unsafe_code)]

pub mod admission;
pub mod config;
pub mod error;
mod link;
pub mod map_file;
pub mod metrics;
pub mod nodes;
mod push;
pub mod rate;
mod server;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;

pub use admission::{Admission, Refusal};
pub use config::{RelayConfig, RelayLimits};
pub use error::{Error, StateError, StoreError};
pub use metrics::Metrics;
pub use nodes::NodeStats;
pub use server::{Relay, RelayHandle};
