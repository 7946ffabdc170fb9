//! Dial streams: a node asks to be connected to another by NodeId; the relay opens a stream
//! to the target, tells each side the session id (its own, or the one the caller chose) and
//! the target who called, and splices.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use nullport_protocol::relay_link::{LinkErrorCode, NodeToRelay, RelayToNode};
use nullport_protocol::{NodeId, SessionId};
use tokio::time::timeout;

use crate::link::{ReadError, read_message, write_message};
use crate::server::shared::{Shared, Side};
use crate::server::splice::{Counted, pump};

/// Serves one dial stream of `caller`.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    caller: NodeId,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let refuse = |code: LinkErrorCode| RelayToNode::Error { code };
    let request = timeout(
        shared.limits.request_deadline,
        read_message::<NodeToRelay>(&mut recv, shared.limits.max_link_message),
    )
    .await;
    // `DialWith`: the caller chose the session (its handshake's first message is already
    // on the stream behind the request; it is spliced like everything after `Dialed`).
    let (target, chosen) = match request {
        Ok(Ok(NodeToRelay::Dial { target })) => (target, None),
        Ok(Ok(NodeToRelay::DialWith { target, session })) if !shared.legacy_dial() => {
            (target, Some(session))
        }
        Ok(Err(ReadError::Decode(e))) => {
            shared
                .metrics
                .dials_bad_request
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(%caller, result = "bad_request", "dial");
            let _ = write_message(&mut send, &refuse(e.into())).await;
            let _ = send.finish();
            return;
        }
        Ok(Ok(_)) => {
            shared
                .metrics
                .dials_bad_request
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(%caller, result = "bad_request", "dial");
            let _ = write_message(&mut send, &refuse(LinkErrorCode::Malformed)).await;
            let _ = send.finish();
            return;
        }
        _ => {
            shared
                .metrics
                .dials_bad_request
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(%caller, result = "bad_request", "dial");
            let _ = send.reset(0u32.into());
            return;
        }
    };
    // A caller whose key is no longer admitted is being disconnected: it dials no more.
    if let Err(refusal) = shared.admission.check(&caller) {
        tracing::info!(%caller, %target, result = "not_admitted", "dial");
        let _ = write_message(&mut send, &refuse(refusal.link_code())).await;
        let _ = send.finish();
        return;
    }
    if !shared
        .dial_limiter
        .try_take(&caller, 1, std::time::Instant::now())
    {
        shared
            .metrics
            .dials_rate_limited
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(%caller, %target, result = "rate_limited", "dial");
        let _ = write_message(&mut send, &refuse(LinkErrorCode::RateLimited)).await;
        let _ = send.finish();
        return;
    }
    let target = shared.route_target(target);
    if target == caller {
        shared
            .metrics
            .dials_bad_request
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(%caller, result = "refused_self", "dial");
        let _ = write_message(&mut send, &refuse(LinkErrorCode::Refused)).await;
        let _ = send.finish();
        return;
    }
    // A relay that announced a planned stop takes no new channels: callers go to the
    // target's next relay ("not here"), so no channel opened now is cut when it stops.
    let target_conn = if shared.is_draining() {
        None
    } else {
        shared.routes.get(&target).map(|r| r.conn.clone())
    };
    let opened = match target_conn {
        Some(conn) => timeout(shared.limits.request_deadline, conn.open_bi())
            .await
            .ok()
            .and_then(Result::ok),
        None => None,
    };
    let Some((mut t_send, t_recv)) = opened else {
        shared.metrics.dials_offline.fetch_add(1, Ordering::Relaxed);
        tracing::info!(%caller, %target, result = "offline", "dial");
        let _ = write_message(&mut send, &refuse(LinkErrorCode::Offline)).await;
        let _ = send.finish();
        return;
    };
    let session =
        chosen.unwrap_or_else(|| SessionId(shared.next_session.fetch_add(1, Ordering::Relaxed)));
    let incoming = RelayToNode::Incoming {
        caller: shared.caller_label(caller),
        session,
    };
    if write_message(&mut t_send, &incoming).await.is_err()
        || write_message(&mut send, &RelayToNode::Dialed { session })
            .await
            .is_err()
    {
        let _ = t_send.reset(0u32.into());
        let _ = send.reset(0u32.into());
        return;
    }
    shared.metrics.dials_ok.fetch_add(1, Ordering::Relaxed);
    shared.metrics.splices_open.fetch_add(1, Ordering::Relaxed);
    tracing::info!(%caller, %target, %session, result = "ok", "dial");
    let (caller_counters, target_counters) = (shared.counters(&caller), shared.counters(&target));
    if let Some(c) = &caller_counters {
        c.dials.fetch_add(1, Ordering::Relaxed);
    }
    let forward = pump(
        shared.clone(),
        session,
        Side::Caller,
        caller,
        Counted {
            sender: caller_counters.clone(),
            receiver: target_counters.clone(),
        },
        recv,
        t_send,
    );
    let backward = pump(
        shared.clone(),
        session,
        Side::Target,
        target,
        Counted {
            sender: target_counters,
            receiver: caller_counters,
        },
        t_recv,
        send,
    );
    tokio::join!(forward, backward);
    shared.metrics.splices_open.fetch_sub(1, Ordering::Relaxed);
}
