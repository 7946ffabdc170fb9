//! MCP over nullport: a stdio MCP server exposed per caller session, behind the JSON-RPC
//! firewall that enforces the callee's per-caller policy. In rooms: [`session`] (what both
//! sides share), the callee side ([`serve`]), the caller side ([`caller_pipe`]),
//! [`firewall`], [`approvals`], [`receipt`], [`http`] (Streamable HTTP upstreams), and
//! [`embed`] (an MCP server living in an embedding program, served like `expose mcp`).

pub mod approvals;
mod callee;
mod caller;
pub mod embed;
mod embed_lists;
pub mod firewall;
pub mod http;
pub mod pins;
pub mod probe;
pub mod receipt;
pub mod session;

pub use callee::serve;
pub use caller::{CHANNEL_ENDED, CheckedReceipt, ReceiptSink, caller_pipe, caller_pipe_with};
pub use session::{Embedded, EmbeddedFactory, EmbeddedIo, GrantSource, Session, UpstreamSpec};
