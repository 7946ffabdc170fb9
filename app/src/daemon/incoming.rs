//! Serving a channel a peer opened: the access decision (one call), then the service kind
//! (tcp, exec, mcp) over the accepted channel. Every channel is registered in the table with
//! the handle that ends it, so taking access away reaches it wherever it is.

use std::sync::Arc;

use nullport_audit::ChannelOutcome;
use nullport_protocol::DenyReason;
use tracing::Instrument;

use crate::access::{Access, Grant};
use crate::audit::Audit;
use crate::config_file::ServiceSpec;
use crate::daemon::State;
use crate::daemon::channels::{Registered, Table};
use crate::mcp::UpstreamSpec;
use crate::services::exec::Exec;
use crate::services::io::Counted;
use crate::services::mcp::Mcp;
use crate::services::tcp::Tcp;
use crate::services::{Caller, Kind, Ready};
use crate::tokens::unix_now;
use nullport_node::IncomingChannel;

pub(crate) async fn accept_loop(state: Arc<State>) {
    let mut running = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            incoming = state.node.accept() => {
                let Some(incoming) = incoming else { break };
                let span = tracing::info_span!("channel", peer = %incoming.peer().fmt_short(), service = incoming.service());
                running.spawn(serve_incoming(state.clone(), incoming).instrument(span));
            }
            Some(_) = running.join_next(), if !running.is_empty() => {}
        }
    }
    // The channels end with the daemon (their tasks are aborted with this set).
}

async fn serve_incoming(state: Arc<State>, incoming: IncomingChannel) {
    let peer = incoming.peer();
    let name = incoming.service().to_owned();
    let blob = incoming.blob().to_vec();
    let access = state.access();
    let Some((incoming, grant, registered)) =
        admit(&state.channels, &state.audit, &access, incoming).await
    else {
        return;
    };
    let alias = access.trust.alias_of(&peer).map(str::to_owned);
    let caller = Caller {
        peer,
        alias: alias.as_deref(),
        service: &name,
        blob: &blob,
    };
    let service = grant.service;
    let env = || service.child_env(&name, &peer.to_string(), alias.as_deref(), env_var);
    match &service.spec {
        ServiceSpec::Tcp(addr) => {
            let kind = Tcp {
                addr,
                proxy_protocol: service.proxy_protocol,
                http_peer_header: service.http_peer_header,
            };
            serve(&kind, incoming, &registered, &caller).await;
        }
        ServiceSpec::Exec(command) => {
            let kind = Exec {
                command,
                env: env(),
                sandbox: service.sandbox.as_ref(),
            };
            serve(&kind, incoming, &registered, &caller).await;
        }
        ServiceSpec::Mcp(command) => {
            let upstream = UpstreamSpec::Stdio {
                command: command.clone(),
                env: env(),
                sandbox: service.sandbox.clone(),
            };
            serve(&mcp_kind(&state, upstream), incoming, &registered, &caller).await;
        }
        ServiceSpec::McpUrl(url) => match crate::mcp::http::HttpTarget::parse(url) {
            Ok(target) => {
                let kind = mcp_kind(&state, UpstreamSpec::Http(target));
                serve(&kind, incoming, &registered, &caller).await;
            }
            Err(e) => {
                tracing::warn!("bad MCP URL {url}: {e}");
                let _ = incoming.deny(DenyReason::Unavailable).await;
            }
        },
    }
}

/// The access decision for a channel a peer opened, and the slot it takes in `channels`, in
/// one step; audited either way. A refused channel is denied here, with the refusal's reason
/// (None then).
pub(crate) async fn admit(
    channels: &Table,
    audit: &Audit,
    access: &Access,
    incoming: IncomingChannel,
) -> Option<(IncomingChannel, Grant, Registered)> {
    let peer = incoming.peer();
    let name = incoming.service().to_owned();
    let blob = incoming.blob();
    let (grant, registered) = match channels.admit(access, peer, &name, blob, unix_now()) {
        Ok(admitted) => admitted,
        Err(refusal) => {
            tracing::info!("denied: {refusal}");
            if !blob.is_empty() {
                audit.token(&peer, &name, &[], false, &refusal.to_string());
            }
            audit.channel(&peer, &name, ChannelOutcome::Denied, &refusal.to_string());
            let _ = incoming.deny(refusal.reason()).await;
            return None;
        }
    };
    if let Some(token) = &grant.token {
        audit.token(&peer, &name, &token.token.ids(), true, &grant.rule);
    }
    tracing::info!(rule = %grant.rule, target = %grant.service, "accepted");
    audit.channel(&peer, &name, ChannelOutcome::Accepted, &grant.rule);
    Some((incoming, grant, registered))
}

fn mcp_kind(state: &State, upstream: UpstreamSpec) -> Mcp {
    Mcp {
        upstream,
        access: state.access.subscribe(),
        identity: state.identity.clone(),
        approvals: state.approvals.clone(),
        audit: state.audit.clone(),
        pins: state.pins.clone(),
    }
}

/// Prepares `kind` for the caller (denying the channel if it cannot be), accepts the channel,
/// gives it the handle that ends it, and runs the service over it.
pub(crate) async fn serve<K: Kind>(
    kind: &K,
    incoming: IncomingChannel,
    registered: &Registered,
    caller: &Caller<'_>,
) {
    let ready = match kind.prepare(caller).await {
        Ok(ready) => ready,
        Err(reason) => {
            let _ = incoming.deny(reason).await;
            return;
        }
    };
    let mut channel = match incoming.accept().await {
        Ok(channel) => channel,
        Err(e) => {
            tracing::info!("channel failed before it was accepted: {e}");
            ready.abandon();
            return;
        }
    };
    channel.use_abort_handle(registered.abort.clone());
    let channel = Counted::new(channel, registered.counters.clone());
    if let Err(e) = ready.run(channel).await {
        tracing::info!("channel ended: {e}");
    }
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}
