//! `mcp`: each channel is an MCP session (a stdio server process, or a local Streamable HTTP
//! endpoint) behind the JSON-RPC firewall, every message decided against the access snapshot
//! of that moment.

use std::io;
use std::sync::Arc;

use nullport_protocol::{DenyReason, Identity, NodeId};
use tokio::sync::watch;

use super::io::Counted;
use super::{Caller, Kind, Ready};
use crate::access::Access;
use crate::audit::Audit;
use crate::mcp::approvals::Approvals;
use crate::mcp::{GrantSource, Session, UpstreamSpec, serve};

/// An `mcp` service.
pub struct Mcp {
    /// The upstream server.
    pub upstream: UpstreamSpec,
    /// The access snapshots (each message's grant is read from the current one).
    pub access: watch::Receiver<Arc<Access>>,
    /// This node's identity (it signs receipts).
    pub identity: Arc<Identity>,
    /// Tool calls waiting for a human.
    pub approvals: Arc<Approvals>,
    /// The audit log.
    pub audit: Audit,
    /// The pinned tool manifests.
    pub pins: Arc<crate::mcp::pins::Pins>,
}

/// An MCP session about to start.
pub struct McpSession {
    kind: Mcp,
    peer: NodeId,
    service: String,
    blob: Vec<u8>,
}

impl Kind for Mcp {
    type Ready = McpSession;

    async fn prepare(&self, caller: &Caller<'_>) -> Result<McpSession, DenyReason> {
        Ok(McpSession {
            kind: Mcp {
                upstream: self.upstream.clone(),
                access: self.access.clone(),
                identity: self.identity.clone(),
                approvals: self.approvals.clone(),
                audit: self.audit.clone(),
                pins: self.pins.clone(),
            },
            peer: caller.peer,
            service: caller.service.to_owned(),
            blob: caller.blob.to_vec(),
        })
    }
}

impl Ready for McpSession {
    async fn run(self, channel: Counted<nullport_node::Channel>) -> io::Result<()> {
        let McpSession {
            kind,
            peer,
            service,
            blob,
        } = self;
        let source: GrantSource = {
            let (access, service) = (kind.access.clone(), service.clone());
            Arc::new(move || {
                access
                    .borrow()
                    .mcp_grant(&peer, &service, &blob, crate::tokens::unix_now())
            })
        };
        let caller_alias = kind
            .access
            .borrow()
            .trust
            .alias_of(&peer)
            .map(str::to_owned);
        let session = Session {
            caller: peer,
            service,
            handshake: *channel.get_ref().handshake_hash(),
            signer: kind.identity.clone(),
            caller_alias,
        };
        serve(
            channel,
            &kind.upstream,
            source,
            session,
            kind.approvals,
            kind.audit,
            kind.pins,
        )
        .await
    }
}
