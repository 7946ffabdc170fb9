//! nullport's node library: the embeddable [`Node`]. The `nullport` daemon and CLI are the
//! `nullport` crate, built on this one.
//!
//! A node dials *out* to one relay over QUIC, pinning the relay's key, and never listens on
//! a network port. [`Node::dial`] opens an end-to-end authenticated, encrypted [`Channel`] to
//! another node's service; [`Node::accept`] yields authenticated callers to accept or deny.
//!
//! ```no_run
//! # async fn example(identity: std::sync::Arc<nullport_protocol::Identity>, peer: nullport_protocol::NodeId) -> Result<(), Box<dyn std::error::Error>> {
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! let relay = "np...@relay.example.net:7443".parse()?;
//! let node = nullport_node::Node::start(nullport_node::NodeConfig::new(identity, relay)).await?;
//! node.wait_online(std::time::Duration::from_secs(5)).await?;
//! let mut channel = node.dial(peer, "echo").await?;
//! channel.write_all(b"hello").await?;
//! channel.shutdown().await?;
//! let mut reply = Vec::new();
//! channel.read_to_end(&mut reply).await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod backoff;
pub mod channel;
mod drain;
pub mod error;
pub mod handshake;
mod held;
#[cfg(feature = "http")]
pub mod http;
mod link;
pub mod node;
pub mod relay_addr;
pub mod rpc;
pub mod tls;

pub use channel::{AbortHandle, Channel};
pub use error::{AddressProblem, Error, LinkLost, Refusal, SetupError, Unreachable};
pub use handshake::{FirstBytes, IncomingChannel, ReadReady};
pub use node::{Handlers, LinkState, Node, NodeConfig, NodeLimits};
pub use relay_addr::{RelayAddr, RelaySpec};
