//! The service kinds a node exposes, each one module behind [`Kind`]: prepared before the
//! channel is accepted (a backend that cannot be reached is a clean "unavailable" to the
//! caller, before any byte flows), then run over the accepted channel. Adding a kind is one
//! module here and one variant of [`crate::config_file::ServiceSpec`].

pub mod exec;
pub mod http_peer;
pub mod io;
pub mod mcp;
pub mod process_group;
pub mod tcp;

use std::future::Future;

use nullport_protocol::{DenyReason, NodeId};

use io::Counted;

/// Who opened the channel a service serves.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The caller, as the handshake proved it.
    pub peer: NodeId,
    /// Its alias on this node, if it has one.
    pub alias: Option<&'a str>,
    /// The service asked for.
    pub service: &'a str,
    /// The capability tokens it presented (empty: none).
    pub blob: &'a [u8],
}

/// A service kind: readies its backend for one channel.
pub trait Kind {
    /// What is ready to run over the channel.
    type Ready: Ready;

    /// Readies the backend for `caller` (connects, starts a process); a refusal is the
    /// reason the caller is denied with.
    fn prepare(
        &self,
        caller: &Caller<'_>,
    ) -> impl Future<Output = Result<Self::Ready, DenyReason>> + Send;
}

/// A backend ready for one channel.
pub trait Ready: Send {
    /// Serves the accepted channel until it ends.
    fn run(
        self,
        channel: Counted<nullport_node::Channel>,
    ) -> impl Future<Output = std::io::Result<()>> + Send;

    /// The channel could not be accepted after all (it failed, or its caller broke the
    /// protocol): ends what was prepared as failed, not as a clean end. By default, drops it.
    fn abandon(self)
    where
        Self: Sized,
    {
    }
}
