//! Control requests to the relay: one at a time on the control stream, each answered by
//! one message or by pages, bounded in time.

use nullport_protocol::relay_link::{
    LinkErrorCode, MAX_CONTROL_MESSAGE, NodeToRelay, RelayToNode, SignedRevocations,
    SignedRotation, close_code,
};
use tokio::time::timeout;

use super::Inner;
use super::conn::wait_connection;
use super::slot::Slot;
use crate::error::{Error, LinkLost};
use crate::link::{read_message, write_message};

pub(super) async fn control_request(
    inner: &Inner,
    request: NodeToRelay,
) -> Result<RelayToNode, Error> {
    let mut answers = control_exchange(inner, request).await?;
    answers.pop().ok_or(Error::Link(LinkErrorCode::Malformed))
}

/// Sends one control request and reads its answer: one message, or every page of a paged
/// answer (`Revocations`/`Rotations` with `more`). Bounded in time: a relay that does not
/// answer within the deadline loses the control stream (the link is closed and reconnects,
/// since a half-read answer would leave the stream out of step).
pub(super) async fn control_exchange(
    inner: &Inner,
    request: NodeToRelay,
) -> Result<Vec<RelayToNode>, Error> {
    wait_connection(inner, inner.config.limits.connect_timeout).await?;
    let slot = inner
        .home_slot()
        .ok_or(Error::RelayLinkLost(LinkLost::NoControlStream))?;
    slot_exchange(inner, &slot, request).await
}

/// [`control_exchange`] on one relay link (the home link, or an extra link of a fleet node).
pub(super) async fn slot_exchange(
    inner: &Inner,
    slot: &Slot,
    request: NodeToRelay,
) -> Result<Vec<RelayToNode>, Error> {
    let limit = inner.config.limits.control_timeout;
    let mut control = slot.control.lock().await;
    let exchanged = timeout(limit, async {
        let (send, recv) = control
            .as_mut()
            .ok_or(Error::RelayLinkLost(LinkLost::NoControlStream))?;
        write_message(send, &request, MAX_CONTROL_MESSAGE).await?;
        read_pages(recv).await
    })
    .await;
    match exchanged {
        Ok(answers) => answers,
        Err(_) => {
            *control = None;
            if let Some(conn) = slot.connection() {
                conn.close(close_code::NORMAL.into(), b"control request timed out");
            }
            Err(Error::Timeout {
                what: "relay control request",
            })
        }
    }
}

/// Reads one message from `recv`, and the pages that follow it when it says `more`.
pub(super) async fn read_pages(recv: &mut quinn::RecvStream) -> Result<Vec<RelayToNode>, Error> {
    let mut pages = Vec::new();
    let mut bytes = 0usize;
    loop {
        let message = read_message::<RelayToNode>(recv, MAX_CONTROL_MESSAGE).await?;
        bytes = bytes.saturating_add(super::push::size(&message));
        if bytes > super::push::MAX_PUSH_BYTES {
            return Err(Error::Link(LinkErrorCode::TooLarge));
        }
        let more = matches!(
            message,
            RelayToNode::Revocations { more: true, .. } | RelayToNode::Rotations { more: true, .. }
        );
        pages.push(message);
        if !more {
            return Ok(pages);
        }
        if pages.len() > MAX_PAGES {
            return Err(Error::Link(LinkErrorCode::TooLarge));
        }
    }
}

/// Pages of one paged answer a node reads at most (and at most `push::MAX_PUSH_BYTES` of
/// lists and rotations in all).
pub(super) const MAX_PAGES: usize = 1024;

/// Splits paged answers into the revocation lists and the rotations they carry.
pub(super) fn collect_pages(
    pages: Vec<RelayToNode>,
) -> (Vec<SignedRevocations>, Vec<SignedRotation>) {
    let (mut lists, mut rotations) = (Vec::new(), Vec::new());
    for page in pages {
        match page {
            RelayToNode::Revocations { lists: l, .. } => lists.extend(l),
            RelayToNode::Rotations { rotations: r, .. } => rotations.extend(r),
            _ => {}
        }
    }
    (lists, rotations)
}
