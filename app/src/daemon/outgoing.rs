//! Outgoing channels opened for local users (`pipe`, `attach`, `connect --listen`): the
//! dial with its checks and audit, the words a person reads when it fails, and the control
//! socket's answer lines.

use std::sync::Arc;

use nullport_node::{Error, FirstBytes};
use tokio::io::AsyncWriteExt;

use crate::control::ControlResponse;
use crate::daemon::State;
use crate::services::io::Counted;

/// An outgoing channel opened for a local user, registered for `status`.
pub(crate) struct OutChannel {
    /// The channel, counting its bytes for `status`.
    pub(crate) channel: Counted<nullport_node::Channel>,
    /// The callee.
    pub(crate) target: nullport_protocol::NodeId,
    /// The channel's handshake hash (for MCP sessions).
    pub(crate) handshake: [u8; 32],
    /// Its entry in the channel list (removed when dropped).
    pub(crate) registered: crate::daemon::channels::Registered,
}

/// Opens a channel to `peer`/`service` for a local user (`pipe`, `attach`): the token is
/// checked, the peer resolved, the dial audited; an error is what the user should read.
/// `first` goes out behind the handshake ([`nullport_node::Node::dial_sending`]).
pub(crate) async fn open_channel(
    state: &Arc<State>,
    (peer, service): (&str, &str),
    token: Option<String>,
    first: FirstBytes<'_>,
) -> Result<OutChannel, String> {
    let blob = match token
        .as_deref()
        .map(nullport_keyring::token::Token::from_text)
    {
        None => Vec::new(),
        Some(Ok(t)) => t.to_bytes(),
        Some(Err(e)) => return Err(format!("bad token: {e}")),
    };
    let target = state
        .files
        .read()
        .map_err(|_| "trust store unavailable".to_owned())
        .and_then(|f| f.trust.resolve(peer).map_err(|e| e.to_string()))?;
    // A key revoked here is not dialed: it may be a stolen one, proving itself as the peer.
    if let Some(signer) = state.access().key_revoked_everywhere(&target) {
        return Err(format!(
            "{peer} is revoked here (by {signer}): this node does not dial a revoked key; see `nullport revocations show`"
        ));
    }
    // The link is down and the node knows why: say so now instead of waiting out the dial.
    let link = state.node.state();
    if matches!(
        link,
        nullport_node::LinkState::Refused { .. }
            | nullport_node::LinkState::Connecting {
                last_error: Some(_),
                ..
            }
    ) {
        return Err(format!(
            "cannot reach {peer}: the relay link is down ({link}); see `nullport status`"
        ));
    }
    let dialed = state.node.dial_sending(target, service, blob, first).await;
    state.audit.dial(&target, service, dialed.is_ok());
    let mut channel = dialed.map_err(|e| explain(&e, peer, service, &state.node.node_id()))?;
    let registered = state.channels.register_out(target, service);
    // The first bytes went out with the handshake, before the counting wrapper existed.
    registered.counters.bytes_out.fetch_add(
        channel.byte_counts().1,
        std::sync::atomic::Ordering::Relaxed,
    );
    channel.use_abort_handle(registered.abort.clone());
    let handshake = *channel.handshake_hash();
    Ok(OutChannel {
        channel: Counted::new(channel, registered.counters.clone()),
        target,
        handshake,
        registered,
    })
}

pub(crate) async fn respond(
    stream: &mut (impl tokio::io::AsyncWrite + Unpin),
    response: &ControlResponse,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(response).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line).await
}

/// Turns a dial error into what a person should read.
pub fn explain(e: &Error, peer: &str, service: &str, me: &nullport_protocol::NodeId) -> String {
    use nullport_protocol::DenyReason;
    match e {
        Error::Denied {
            reason: DenyReason::UnknownService,
            ..
        } => format!("{peer} does not expose a service named {service:?}"),
        Error::Denied {
            reason: DenyReason::NotAllowed,
            ..
        } => {
            format!(
                "{peer} refused {service:?}: not allowed (its operator can run `nullport allow {me} {service}`)"
            )
        }
        Error::Denied {
            reason: DenyReason::BadToken,
            ..
        } => format!(
            "{peer} refused the capability token for {service:?} (expired, not yours, not trusted, or wider than its issuer may grant)"
        ),
        Error::Denied {
            reason: DenyReason::Revoked,
            ..
        } => format!("{peer} refused {service:?}: your key or your token is revoked there"),
        Error::Denied {
            reason: DenyReason::Expired,
            ..
        } => format!("{peer} refused {service:?}: the capability token expired"),
        Error::Denied {
            reason: DenyReason::RateLimited,
            ..
        } => format!(
            "{peer} refused {service:?}: you have as many channels open there as it allows (or it is full)"
        ),
        Error::Denied {
            reason: DenyReason::Unavailable,
            ..
        } => {
            format!("{peer} accepted you for {service:?}, but the service behind it is unavailable")
        }
        Error::PeerOffline(_) => format!("{peer} is offline (not connected to the relay)"),
        Error::PeerBusy(_) => format!(
            "{peer} is busy: too many channels are being opened there right now; try again shortly"
        ),
        Error::RelayUnreachable(_) | Error::RelayRefused(_) | Error::RelayLinkLost(_) => {
            format!("cannot reach {peer}: the relay link is down ({e}); see `nullport status`")
        }
        other => other.to_string(),
    }
}
