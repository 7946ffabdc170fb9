//! Dialing: asking a relay for a stream to the target, then the end-to-end handshake over it.
//!
//! A lone-relay node dials through its one link. A fleet node walks the target's rendezvous
//! order over the relay map (the same order the target used to choose its home): it opens a
//! link to each relay as needed (authenticated exactly like its home link), skips relays it
//! cannot reach or that announced a planned stop, and moves on when a relay answers "not
//! here" (`Offline`), so finding the target needs no shared presence state between relays.

use std::sync::Arc;

use std::time::Instant;

use nullport_protocol::relay_link::{
    self, LinkErrorCode, MAX_LINK_MESSAGE, NodeToRelay, RelayToNode,
};
use nullport_protocol::resume::{Early, Opening};
use nullport_protocol::{DialRequest, NodeId, ServiceName, SessionId};
use tokio::time::timeout;

use super::Inner;
use super::conn::{describe, wait_connection};
use super::slot::Slot;
use crate::channel::Channel;
use crate::drain::Drain;
use crate::error::{Error, LinkLost};
use crate::handshake::{First, initiate, refused_busy, stream_reset};
use crate::link::read_message;

/// Dials `target` through the relay link `conn`; `Ok(None)` when the relay answers that the
/// target is not connected there.
///
/// The dial names a session id this node chose, so the first handshake message (message 1,
/// or R1 of a resumed open) goes out in the same write as the dial instead of one relay
/// round trip later. A relay that does not know `DialWith` (older than this node) answers
/// `Malformed`; then the dial runs again the old way (`Dial`, wait for `Dialed`).
async fn dial_via(
    inner: &Inner,
    conn: &quinn::Connection,
    drain: Drain,
    target: NodeId,
    ask: &Ask<'_>,
) -> Result<Option<Channel>, Error> {
    let result = match dial_once(inner, conn, drain.clone(), target, ask, true).await {
        Err(Error::Link(LinkErrorCode::Malformed)) => {
            tracing::debug!("relay does not take DialWith; dialing without pipelining");
            dial_once(inner, conn, drain, target, ask, false).await
        }
        other => other,
    };
    // A reset of the dial stream is the callee's (or the relay's) doing, not a lost link.
    result.map_err(|e| match stream_reset(&e) {
        Some(_) if refused_busy(&e) => Error::PeerBusy(target),
        Some(code) => Error::DialReset { peer: target, code },
        None => e,
    })
}

async fn dial_once(
    inner: &Inner,
    conn: &quinn::Connection,
    drain: Drain,
    target: NodeId,
    ask: &Ask<'_>,
    pipelined: bool,
) -> Result<Option<Channel>, Error> {
    let limits = &inner.config.limits;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| describe(&e))?;
    let request = |session| DialRequest {
        expected: target,
        session,
        service: ask.service.clone(),
        blob: ask.blob.clone(),
    };
    let mut out = Vec::with_capacity(256);
    let mut opening = None;
    let chosen = if pipelined {
        let session = random_session()?;
        relay_link::encode(
            &NodeToRelay::DialWith { target, session },
            MAX_LINK_MESSAGE,
            &mut out,
        )
        .map_err(Error::Encode)?;
        opening = Some(start(inner, request(session), ask, &mut out)?);
        Some(session)
    } else {
        relay_link::encode(&NodeToRelay::Dial { target }, MAX_LINK_MESSAGE, &mut out)
            .map_err(Error::Encode)?;
        None
    };
    let answer = timeout(limits.relay_answer_timeout, async {
        send.write_all(&out)
            .await
            .map_err(|e| Error::RelayLinkLost(LinkLost::Write(e)))?;
        read_message::<RelayToNode>(&mut recv, MAX_LINK_MESSAGE).await
    })
    .await
    .map_err(|_| Error::Timeout {
        what: "relay answer to a dial",
    })??;
    let session = match answer {
        RelayToNode::Dialed { session } if chosen.is_none_or(|c| c == session) => session,
        // A relay that answers another session than the one asked for is broken or lying.
        RelayToNode::Dialed { .. } => return Err(Error::Link(LinkErrorCode::Malformed)),
        RelayToNode::Error {
            code: LinkErrorCode::Offline,
        } => return Ok(None),
        RelayToNode::Error { code } => return Err(Error::Link(code)),
        _ => return Err(Error::Link(LinkErrorCode::Malformed)),
    };
    let opening = match opening {
        Some(opening) => opening,
        None => {
            out.clear();
            let opening = start(inner, request(session), ask, &mut out)?;
            send.write_all(&out)
                .await
                .map_err(|e| Error::RelayLinkLost(LinkLost::Write(e)))?;
            opening
        }
    };
    let resumed = opening.is_resumed();
    let result = initiate(
        &inner.keys,
        opening,
        (target, ask.service.to_string()),
        &ask.first,
        send,
        recv,
        drain,
    )
    .await;
    tracing::debug!(resumed, ok = result.is_ok(), "open");
    result.map(Some)
}

/// Starts the dial's next open: resumed when a ticket allows (with the first bytes, if
/// known, in R1), naming the resumed opens this dial gave up before. A resumed open counts
/// as given up from here on: if it becomes a channel the dial ends, and if it does not
/// (whatever the relay or the callee answers, or nothing), the dial's next open names it.
fn start(
    inner: &Inner,
    request: DialRequest,
    ask: &Ask<'_>,
    out: &mut Vec<u8>,
) -> Result<Opening, Error> {
    // A source that is read as the client writes goes into a keyed R1 only: in an R1 with
    // a DH it would travel without the DH's protection, which is what that kind is for.
    let now = Instant::now();
    let with_dh = inner.config.limits.handshake.resume_dh
        || inner.keys.sessions().wants_dh_for(&request.expected, now);
    let first = ask.first.for_r1(!with_dh);
    let replaces = ask.first.given_up();
    let early = Early {
        first: &first,
        replaces: &replaces,
    };
    let opening = Opening::start(
        &inner.keys,
        request,
        early,
        inner.config.limits.handshake,
        now,
        out,
    )?;
    if let Some(open) = opening.given_up() {
        ask.first.give_up(open);
    }
    Ok(opening)
}

/// What one dial asks of the callee, and the bytes it sends before the verdict.
pub(super) struct Ask<'a> {
    pub(super) service: ServiceName,
    /// Capability tokens, sent encrypted in the handshake.
    pub(super) blob: Vec<u8>,
    pub(super) first: First<'a>,
}

/// A random session id (the relay binds nothing to it; both ends bind it into the prologue).
fn random_session() -> Result<SessionId, Error> {
    let mut bytes = [0u8; 8];
    getrandom::getrandom(&mut bytes)
        .map_err(|_| Error::Protocol(nullport_protocol::Error::Random))?;
    Ok(SessionId(u64::from_be_bytes(bytes)))
}

/// Dials through the node's one relay link (a lone relay, or a fleet node before it has
/// its map): waits for the link, as dials always have.
pub(super) async fn dial_home(
    inner: &Inner,
    target: NodeId,
    ask: &Ask<'_>,
) -> Result<Channel, Error> {
    let conn = wait_connection(inner, inner.config.limits.dial_timeout).await?;
    let drain = match inner.home_slot() {
        Some(slot) => {
            slot.touch();
            inner.drain.leased(&slot.uses)
        }
        None => inner.drain.clone(),
    };
    dial_via(inner, &conn, drain, target, ask)
        .await?
        .ok_or(Error::PeerOffline(target))
}

/// Dials through the relays of the fleet in `target`'s rendezvous order.
pub(super) async fn dial_fleet(
    inner: &Arc<Inner>,
    target: NodeId,
    ask: &Ask<'_>,
) -> Result<Channel, Error> {
    // A target found nowhere while one of its relays announced a stop is most likely moving
    // to its next relay right now (tens of milliseconds): look again for a short while
    // instead of reporting it offline.
    let until = tokio::time::Instant::now() + MOVING;
    loop {
        match walk(inner, target, ask).await {
            Err(Error::PeerOffline(_))
                if tokio::time::Instant::now() < until
                    && inner.order_draining(&target)
                    && !ask.first.were_sent() =>
            {
                tokio::time::sleep(POLL * 10).await;
            }
            other => return other,
        }
    }
}

/// How long a dial looks again for a target whose relay is draining.
const MOVING: std::time::Duration = std::time::Duration::from_secs(2);

/// One walk over `target`'s relays.
async fn walk(inner: &Arc<Inner>, target: NodeId, ask: &Ask<'_>) -> Result<Channel, Error> {
    let order = inner.relay_order(&target);
    let mut walk = Walk::default();
    // A few relays at a time, in order: a target is almost always at one of its first
    // relays, and a node does not open links to the whole fleet for one dial.
    for group in order.chunks(DIAL_SPREAD) {
        if let Some(result) = walk_group(inner, group, &mut walk, target, ask).await {
            return result;
        }
    }
    // What went wrong, most telling first: a relay that misbehaved, then "offline" (some
    // relay answered, none holds the target), then why no relay could be asked.
    match (walk.misbehaved, walk.last_error) {
        (Some(e), _) => Err(e),
        (None, Some(e)) if walk.not_here == 0 => Err(e),
        _ => Err(Error::PeerOffline(target)),
    }
}

/// Relays whose links a dial starts at once.
const DIAL_SPREAD: usize = 3;

/// Dials through the relays of `group`; `Some` ends the walk.
async fn walk_group(
    inner: &Arc<Inner>,
    group: &[crate::relay_addr::RelayAddr],
    walk: &mut Walk,
    target: NodeId,
    ask: &Ask<'_>,
) -> Option<Result<Channel, Error>> {
    // Every link of the group is started at once and held (a lease) for the whole dial, so
    // none is closed as idle while the dial waits on another.
    let slots: Vec<(Arc<Slot>, Arc<()>)> = group
        .iter()
        .filter_map(|relay| inner.slot_for(relay).ok())
        .map(|slot| {
            slot.touch();
            let lease = slot.uses.clone();
            (slot, lease)
        })
        .collect();
    // First pass: links already up, in order (relays that announced a stop last, since a
    // channel opened there would end with them); links still connecting are tried after,
    // so a relay that is down in front of the order costs nothing when the target is found
    // behind it.
    let (live, draining): (Vec<&Arc<Slot>>, Vec<&Arc<Slot>>) =
        slots.iter().map(|(s, _)| s).partition(|s| !s.is_draining());
    let mut deferred = Vec::new();
    for slot in live.into_iter().chain(draining) {
        match slot.connection() {
            // A relay found down moments ago is not waited for again (its new link is
            // still trying): the caller learns "offline" now, not after a connect timeout.
            None if inner.recently_down(&slot.relay_id()) => {
                walk.last_error = Some(slot_error(slot));
            }
            Some(conn) => {
                if let Some(result) = walk.try_relay(inner, slot, &conn, target, ask).await {
                    return Some(result);
                }
            }
            None if slot.is_down() => walk.last_error = Some(slot_error(slot)),
            None => deferred.push(slot),
        }
    }
    // Then the links still connecting, whichever comes up first (a relay that is down does
    // not hold up one that is up), until each is up or has failed, within the connect time.
    let deadline = tokio::time::Instant::now() + inner.config.limits.connect_timeout;
    while !deferred.is_empty() {
        if let Some(i) = deferred.iter().position(|s| s.connection().is_some()) {
            let slot = deferred.remove(i);
            if let Some(conn) = slot.connection()
                && let Some(result) = walk.try_relay(inner, slot, &conn, target, ask).await
            {
                return Some(result);
            }
            continue;
        }
        deferred.retain(|s| {
            let down = s.is_down() || s.is_retired();
            if down {
                inner.note_down(&s.relay_id());
                walk.last_error = Some(slot_error(s));
            }
            !down
        });
        if tokio::time::Instant::now() >= deadline {
            walk.last_error = Some(Error::RelayUnreachable(crate::error::Unreachable::NotYet));
            break;
        }
        // Woken by the first link still connecting (the one earliest in the order), and
        // every POLL for the others.
        if let Some(first) = deferred.first() {
            let mut conn = first.conn.subscribe();
            let mut tried = first.tried.subscribe();
            if first.connection().is_none() && !first.is_down() {
                tokio::select! {
                    _ = conn.changed() => {}
                    _ = tried.changed() => {}
                    () = tokio::time::sleep(POLL) => {}
                }
            }
        }
    }
    drop(slots);
    None
}

/// How often a dial looks again at links still connecting.
const POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// What a dial through the fleet learned so far.
#[derive(Default)]
struct Walk {
    last_error: Option<Error>,
    not_here: usize,
    /// The last error a relay caused (refusal, bad answer, failed handshake).
    misbehaved: Option<Error>,
}

impl Walk {
    /// Dials through one relay: `Some` ends the walk (a channel, or an error no other relay
    /// would change), `None` goes on to the next relay.
    async fn try_relay(
        &mut self,
        inner: &Inner,
        slot: &Slot,
        conn: &quinn::Connection,
        target: NodeId,
        ask: &Ask<'_>,
    ) -> Option<Result<Channel, Error>> {
        slot.touch();
        let drain = inner.drain.leased(&slot.uses);
        match dial_via(inner, conn, drain, target, ask).await {
            Ok(Some(channel)) => Some(Ok(channel)),
            // The callee may have accepted and read the first bytes: trying another relay
            // could deliver them twice, so the walk ends with this error.
            Err(e) if ask.first.were_sent() => Some(Err(e)),
            Ok(None) => {
                tracing::debug!(relay = %slot.relay, "not here");
                self.not_here += 1;
                None
            }
            // The callee's own answer (after the handshake proved it) ends the walk, and so
            // does this node shutting down.
            Err(e @ (Error::Denied { .. } | Error::Shutdown)) => Some(Err(e)),
            Err(
                e
                @ (Error::RelayLinkLost(_) | Error::RelayUnreachable(_) | Error::DialReset { .. }),
            ) => {
                self.last_error = Some(e);
                None
            }
            Err(e) => {
                // Anything else is this relay's doing (no answer in time, a refusal, a
                // malformed answer, a splice to someone who is not the target): the next
                // relay of the order may hold the target, so the walk goes on; the link
                // stays (a slow relay's live channels are not cut for it).
                tracing::warn!(relay = %slot.relay, "relay misbehaved or failed a dial: {e}; trying the next relay");
                self.misbehaved = Some(e);
                None
            }
        }
    }
}

/// Why a link is not usable, from its state.
fn slot_error(slot: &Slot) -> Error {
    use super::config::LinkState;
    match &*slot.state.borrow() {
        LinkState::Connecting {
            last_error: Some(e),
            ..
        } => e.clone(),
        LinkState::Refused { refusal, .. } => Error::RelayRefused(refusal.clone()),
        _ => Error::RelayUnreachable(crate::error::Unreachable::NotYet),
    }
}
