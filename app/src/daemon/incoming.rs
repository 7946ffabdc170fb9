//! Serving a channel a peer opened: the access decision (one call), then the service kind
//! (tcp, exec, mcp) over the accepted channel. Every channel is registered in the table with
//! the handle that ends it, so taking access away reaches it wherever it is.

use std::sync::Arc;
use std::time::Duration;

use nullport_audit::ChannelOutcome;
use nullport_protocol::NodeId;
use tokio::io::AsyncWriteExt;
use tracing::Instrument;

use crate::config_file::{Service, ServiceSpec};
use crate::daemon::{State, unix_now};
use crate::mcp::{GrantSource, Session, UpstreamSpec, serve};
use crate::service::{Counted, connect_tcp, forward, proxy_v2_header, run_exec, spawn_exec};
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
    let (grant, registered) = match state
        .channels
        .admit(&access, peer, &name, &blob, unix_now())
    {
        Ok(admitted) => admitted,
        Err(refusal) => {
            tracing::info!("denied: {refusal}");
            if !blob.is_empty() {
                state
                    .audit
                    .token(&peer, &name, &[], false, &refusal.to_string());
            }
            state
                .audit
                .channel(&peer, &name, ChannelOutcome::Denied, &refusal.to_string());
            let _ = incoming.deny(refusal.reason()).await;
            return;
        }
    };
    if let Some(token) = &grant.token {
        state
            .audit
            .token(&peer, &name, &token.token.ids(), true, &grant.rule);
    }
    tracing::info!(rule = %grant.rule, target = %grant.service, "accepted");
    state
        .audit
        .channel(&peer, &name, ChannelOutcome::Accepted, &grant.rule);
    let alias = access.trust.alias_of(&peer).map(str::to_owned);
    let service = grant.service;
    match &service.spec {
        ServiceSpec::Tcp(addr) => {
            serve_tcp(incoming, &registered, addr, &service, alias.as_deref()).await
        }
        ServiceSpec::Exec(command) => {
            let env = service.child_env(&name, &peer.to_string(), alias.as_deref(), env_var);
            serve_exec(incoming, &registered, command, env, &name).await
        }
        ServiceSpec::Mcp(_) | ServiceSpec::McpUrl(_) => {
            serve_mcp(
                &state,
                incoming,
                &registered,
                &service,
                peer,
                &name,
                &blob,
                alias,
            )
            .await
        }
    }
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

async fn serve_tcp(
    incoming: IncomingChannel,
    registered: &crate::daemon::channels::Registered,
    addr: &str,
    service: &Service,
    alias: Option<&str>,
) {
    let peer = incoming.peer();
    let mut tcp = match connect_tcp(addr).await {
        Ok(tcp) => tcp,
        Err(e) => {
            tracing::warn!("service target {addr} unavailable: {e}");
            let _ = incoming
                .deny(nullport_protocol::DenyReason::Unavailable)
                .await;
            return;
        }
    };
    if service.proxy_protocol {
        let header = proxy_v2_header(&peer, alias);
        if let Err(e) = tcp.write_all(&header).await {
            tracing::warn!("writing the PROXY header to {addr}: {e}");
            let _ = incoming
                .deny(nullport_protocol::DenyReason::Unavailable)
                .await;
            return;
        }
    }
    let Ok(mut channel) = incoming.accept().await else {
        return;
    };
    channel.use_abort_handle(registered.abort.clone());
    let mut channel = Counted::new(channel, registered.counters.clone());
    match forward(&mut channel, &mut tcp).await {
        Ok(_) => {}
        Err(e) => tracing::info!("channel ended: {e}"),
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), channel.get_mut().shutdown()).await;
}

async fn serve_exec(
    incoming: IncomingChannel,
    registered: &crate::daemon::channels::Registered,
    command: &[String],
    env: Vec<(String, String)>,
    name: &str,
) {
    let child = match spawn_exec(command, &env) {
        Ok(child) => child,
        Err(e) => {
            tracing::warn!("cannot start {command:?}: {e}");
            let _ = incoming
                .deny(nullport_protocol::DenyReason::Unavailable)
                .await;
            return;
        }
    };
    let Ok(mut channel) = incoming.accept().await else {
        return;
    };
    channel.use_abort_handle(registered.abort.clone());
    let channel = Counted::new(channel, registered.counters.clone());
    if let Err(e) = run_exec(channel, child, name).await {
        tracing::info!("exec channel ended: {e}");
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve_mcp(
    state: &Arc<State>,
    incoming: IncomingChannel,
    registered: &crate::daemon::channels::Registered,
    service: &Service,
    peer: NodeId,
    name: &str,
    blob: &[u8],
    alias: Option<String>,
) {
    let upstream = match &service.spec {
        ServiceSpec::McpUrl(url) => match crate::mcp::http::HttpTarget::parse(url) {
            Ok(t) => UpstreamSpec::Http(t),
            Err(e) => {
                tracing::warn!("bad MCP URL {url}: {e}");
                let _ = incoming
                    .deny(nullport_protocol::DenyReason::Unavailable)
                    .await;
                return;
            }
        },
        ServiceSpec::Mcp(command) => UpstreamSpec::Stdio {
            command: command.clone(),
            env: service.child_env(name, &peer.to_string(), alias.as_deref(), env_var),
        },
        _ => return,
    };
    // Every message is decided against the access snapshot of that moment.
    let source: GrantSource = {
        let (access, name, blob) = (state.access.subscribe(), name.to_owned(), blob.to_vec());
        Arc::new(move || access.borrow().mcp_grant(&peer, &name, &blob, unix_now()))
    };
    let Ok(mut channel) = incoming.accept().await else {
        return;
    };
    channel.use_abort_handle(registered.abort.clone());
    let handshake = *channel.handshake_hash();
    let channel = Counted::new(channel, registered.counters.clone());
    let session = Session {
        caller: peer,
        service: name.to_owned(),
        handshake,
        signer: state.identity.clone(),
    };
    if let Err(e) = serve(
        channel,
        &upstream,
        source,
        session,
        state.approvals.clone(),
        state.audit.clone(),
    )
    .await
    {
        tracing::info!("mcp session ended: {e}");
    }
}
