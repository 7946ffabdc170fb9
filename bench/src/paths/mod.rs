//! The paths compared: each starts its processes and hands back an [`Opener`] for new
//! streams to a bench server behind it.

pub mod nullport;
pub mod nullport_user;
pub mod over_iroh;
pub mod quinn_splice;
pub mod rathole;
pub mod ssh;
pub mod tcp;

use std::sync::Arc;

use crate::procs::Proc;
use crate::workload::Opener;

/// One running path.
pub struct Path {
    /// Short name (table column).
    pub name: &'static str,
    /// What security it gives, in a few words.
    pub security: &'static str,
    /// Opens new streams to the server.
    pub opener: Arc<dyn Opener>,
    /// The relaying process (none for direct TCP), whose CPU time is reported.
    pub relay_pid: Option<u32>,
    /// Processes to keep alive while the path is measured (killed on drop).
    pub _procs: Vec<Proc>,
    /// Anything else to keep until the path is dropped (temp dirs).
    pub _keep: Vec<Box<dyn std::any::Any + Send + Sync>>,
}

/// A TCP port on loopback that was free a moment ago (for tools that need a port number).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
