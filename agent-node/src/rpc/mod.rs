//! Typed RPC between nodes: named methods with serde request and response types (postcard on
//! the wire), unary calls and the three kinds of streams, deadlines and cancellation that
//! reach the callee, typed errors, and a per-method policy at the callee.
//!
//! All calls between one caller and one callee service share one end-to-end channel (one
//! handshake, then a frame per message; see [`nullport_protocol::rpc`] for the layout), with
//! per-call flow control so a large or unread stream cannot stall the others.
//!
//! ```no_run
//! # async fn example(node: nullport_node::Node, worker: nullport_protocol::NodeId) -> Result<(), nullport_node::rpc::RpcError> {
//! use nullport_node::rpc::{CallOptions, RpcClient};
//! let client = RpcClient::connect(&node, worker, "workers").await?;
//! let sum: u64 = client.unary("math.add", &(2u64, 3u64), CallOptions::default()).await?;
//! assert_eq!(sum, 5);
//! # Ok(()) }
//! ```
//!
//! The callee side: an [`RpcService`] of methods, served by an [`RpcServer`] that checks
//! every call against an [`Access`] (the policy file's `[rpc.NAME]` rules through
//! [`PolicyAccess`]: the same call gate, quotas and approvals as the MCP firewall).

mod access;
mod client;
mod context;
mod decide;
mod error;
mod server;
mod service;
mod state;
mod wire;

pub use access::{Access, Admission, ApprovalRequest, Approver, PolicyAccess, Refused};
pub use client::{Call, CallOptions, RpcClient};
pub use context::{CallContext, Requests, Responses};
pub use error::RpcError;
pub use nullport_protocol::rpc::{Code, Shape};
pub use server::RpcServer;
pub use service::RpcService;
pub use state::RpcLimits;

/// Encodes a value as it travels (postcard).
fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, RpcError> {
    postcard::to_allocvec(value)
        .map_err(|e| RpcError::new(Code::InvalidArgument, format!("value does not encode: {e}")))
}

/// Decodes a whole value (trailing bytes are an error).
fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, RpcError> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((value, [])) => Ok(value),
        Ok(_) => Err(RpcError::new(
            Code::InvalidArgument,
            format!("{what} has trailing bytes"),
        )),
        Err(e) => Err(RpcError::new(
            Code::InvalidArgument,
            format!("{what} does not decode: {e}"),
        )),
    }
}
