//! A node's control stream: presence, audit witness, revocation lists, rotations; and
//! enrollment with an invite (the first message of a control stream, instead of `Hello`).
//! Every request is refused once the node is no longer admitted (its link is being closed).

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use nullport_protocol::NodeId;
use nullport_protocol::relay_link::{
    LinkErrorCode, MAX_CONTROL_MESSAGE, NodeToRelay, RelayToNode, SignedRevocations,
    SignedRotation, WitnessedCheckpoint, close_code,
};

use crate::admission::{AddError, Refusal};
use crate::link::{ReadError, write_control};
use crate::push::{Push, revocation_pages, rotation_pages};
use crate::server::shared::Shared;
use crate::store::{InviteRefusal, RotationPut, StoreError};

/// Longest the relay waits for a last answer to be acknowledged before it closes a link.
pub(crate) const ANSWER_DELIVERY: Duration = Duration::from_secs(1);

/// Serves requests on the control stream until it ends.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    node_id: NodeId,
    conn: quinn::Connection,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    loop {
        let request =
            crate::link::read_message::<NodeToRelay>(&mut recv, MAX_CONTROL_MESSAGE).await;
        let request = match request {
            Ok(r) => r,
            Err(ReadError::Decode(e)) => {
                let _ = write_control(&mut send, &RelayToNode::Error { code: e.into() }).await;
                conn.close(
                    close_code::PROTOCOL_VIOLATION.into(),
                    b"malformed control message",
                );
                return;
            }
            Err(ReadError::Eof) => {
                conn.close(close_code::NORMAL.into(), b"control stream closed");
                return;
            }
            Err(ReadError::Stream(_)) => return,
        };
        // On the heap while it runs: this task lives as long as the node and mostly waits
        // above; with the answering inline, every idle node's task would be the size of the
        // largest answer's state (store writes, signatures).
        let answered = Box::pin(answer(&shared, node_id, &conn, &mut send, request)).await;
        if answered.is_break() {
            return;
        }
    }
}

/// Answers one control request; `Break` when the link is done (closed, or the control
/// stream failed).
async fn answer(
    shared: &Arc<Shared>,
    node_id: NodeId,
    conn: &quinn::Connection,
    send: &mut quinn::SendStream,
    request: NodeToRelay,
) -> ControlFlow<()> {
    let mut rotated = false;
    if let Err(refusal) = shared.admission.check(&node_id) {
        conn.close(refusal.close_code().into(), refusal.to_string().as_bytes());
        return ControlFlow::Break(());
    }
    let answers = match request {
        NodeToRelay::Presence { target } => {
            let online = target != node_id && shared.routes.contains_key(&target);
            vec![RelayToNode::Presence { target, online }]
        }
        NodeToRelay::Witness { checkpoint } => {
            vec![match witness(shared, node_id, checkpoint).await {
                Ok(cp) => RelayToNode::Witnessed {
                    checkpoint: Some(cp),
                },
                Err(code) => RelayToNode::Error { code },
            }]
        }
        NodeToRelay::WitnessQuery => vec![RelayToNode::Witnessed {
            checkpoint: shared.store.witnessed.get(&node_id).map(|c| c.clone()),
        }],
        NodeToRelay::PublishRevocations { list } => {
            vec![
                match publish_revocations(shared, node_id, list.clone()).await {
                    Ok(()) => RelayToNode::Revocations {
                        lists: vec![list],
                        more: false,
                    },
                    Err(code) => RelayToNode::Error { code },
                },
            ]
        }
        NodeToRelay::RevocationQuery => {
            let lists: Vec<SignedRevocations> = shared
                .store
                .revocations
                .iter()
                .map(|e| e.value().1.clone())
                .collect();
            revocation_pages(&lists)
        }
        NodeToRelay::PublishRotation { rotation } => {
            match publish_rotation(shared, node_id, rotation.clone()).await {
                Ok(()) => {
                    rotated = true;
                    vec![RelayToNode::Rotations {
                        rotations: vec![rotation],
                        more: false,
                    }]
                }
                Err(code) => vec![RelayToNode::Error { code }],
            }
        }
        NodeToRelay::RotationQuery => {
            let rotations: Vec<SignedRotation> = shared
                .store
                .rotations
                .iter()
                .map(|e| e.value().clone())
                .collect();
            rotation_pages(&rotations)
        }
        NodeToRelay::MapQuery => vec![RelayToNode::Map {
            map: shared.relay_map(),
        }],
        NodeToRelay::Hello { .. }
        | NodeToRelay::Join { .. }
        | NodeToRelay::Dial { .. }
        | NodeToRelay::DialWith { .. } => {
            conn.close(
                close_code::PROTOCOL_VIOLATION.into(),
                b"unexpected control message",
            );
            return ControlFlow::Break(());
        }
    };
    for answer in &answers {
        if write_control(send, answer).await.is_err() {
            return ControlFlow::Break(());
        }
    }
    if rotated {
        // This key is retired: its link ends once the node has the answer (the relay
        // waits for the acknowledgement of the finished control stream, bounded), and
        // whatever else changed in the re-read allowlist takes effect on live links too.
        let _ = send.finish();
        let _ = tokio::time::timeout(ANSWER_DELIVERY, send.stopped()).await;
        shared.enforce_admission();
        return ControlFlow::Break(());
    }
    ControlFlow::Continue(())
}

/// The refusal a node gets when a decision needs the shared store and it cannot answer (the
/// relay logs the [`StoreError`] too): "state store unavailable", try again later.
pub(crate) const STORE_UNAVAILABLE: LinkErrorCode = LinkErrorCode::StoreUnavailable;

fn unavailable(what: &str, e: &StoreError) -> LinkErrorCode {
    tracing::warn!("{what} refused (fail closed): {e}");
    STORE_UNAVAILABLE
}

/// Checks a node's audit checkpoint signature, countersigns it and keeps it as the node's
/// latest. A checkpoint older than the one held (by any relay of a fleet sharing a store) is
/// refused, so a node (or someone holding its disk) cannot roll the witness back.
async fn witness(
    shared: &Shared,
    node: NodeId,
    mut cp: WitnessedCheckpoint,
) -> Result<WitnessedCheckpoint, LinkErrorCode> {
    use nullport_protocol::{Signature, domain};
    let head = cp.head.to_hex();
    let body = nullport_audit::checkpoint_body(cp.seq, &head);
    nullport_protocol::identity::verify(&node, domain::AUDIT_CHECKPOINT_V1, &body, &cp.node_sig.0)
        .map_err(|_| LinkErrorCode::Refused)?;
    if let Some(held) = shared.store.witnessed.get(&node)
        && held.seq > cp.seq
    {
        return Err(LinkErrorCode::Refused);
    }
    let relay_sig = shared.identity.sign(
        domain::AUDIT_WITNESS_V1,
        &nullport_audit::witness_body(&node, cp.seq, &head),
    );
    cp.relay_sig = Some(Signature(relay_sig));
    match shared.store.witness(node, cp.clone()).await {
        Ok(true) => {}
        Ok(false) => return Err(LinkErrorCode::Refused),
        Err(e) => return Err(unavailable("witnessing a checkpoint", &e)),
    }
    tracing::debug!(seq = cp.seq, "witnessed audit checkpoint");
    Ok(cp)
}

/// Takes a revocation list for distribution: signed by the node that publishes it (one list
/// per node, newest wins, so nobody can fill the relay with lists signed by throwaway keys),
/// newer than the one held, and within the configured number of signers. The relay cannot
/// forge lists and does not let them roll back. Lists signed with the relay's own key (the
/// network admin's) come only from the state directory, never over a link. With a shared
/// store, "newer" is decided there, once for the whole fleet.
async fn publish_revocations(
    shared: &Shared,
    sender: NodeId,
    list: SignedRevocations,
) -> Result<(), LinkErrorCode> {
    if !shared
        .publish_limiter
        .try_take(&sender, 1, std::time::Instant::now())
    {
        return Err(LinkErrorCode::RateLimited);
    }
    let parsed =
        nullport_keyring::revocation::verify_signed(&list).map_err(|_| LinkErrorCode::Refused)?;
    if parsed.signer != sender || shared.admin_keys().contains(&parsed.signer) {
        return Err(LinkErrorCode::Refused);
    }
    {
        let held = shared.store.revocations.get(&parsed.signer);
        let held_bytes: usize = shared
            .store
            .revocations
            .iter()
            .map(|e| e.value().1.body.len())
            .sum();
        let replaced = held.as_ref().map_or(0, |h| h.1.body.len());
        match held {
            Some(held) if held.0 >= parsed.version => return Err(LinkErrorCode::Refused),
            None if shared.store.revocations.len() >= shared.limits.max_revocation_lists => {
                return Err(LinkErrorCode::ListsFull);
            }
            _ if held_bytes - replaced + list.body.len() > shared.limits.max_revocation_bytes => {
                return Err(LinkErrorCode::ListsFull);
            }
            _ => {}
        }
    }
    match shared
        .store
        .put_list(parsed.signer, parsed.version, list.clone())
        .await
    {
        Ok(true) => {}
        Ok(false) => return Err(LinkErrorCode::Refused),
        Err(e) => return Err(unavailable("a revocation list", &e)),
    }
    let _ = shared.push.send(Push::Revocations(list));
    tracing::info!(signer = %parsed.signer, version = parsed.version, keys = parsed.keys.len(), tokens = parsed.tokens.len(), "revocation list stored");
    Ok(())
}

/// Takes a key rotation published by the old key itself. Revocation and retirement win: the
/// sender must be admitted now, the first rotation of a key is the only one (a thief holding
/// an old key cannot redirect it later), and the new key must not be revoked or retired. In
/// allowlist mode the new key is admitted (labelled as a rotation); the old one is retired
/// for good in every mode.
async fn publish_rotation(
    shared: &Arc<Shared>,
    sender: NodeId,
    rotation: SignedRotation,
) -> Result<(), LinkErrorCode> {
    let r =
        nullport_keyring::rotation::verify_signed(&rotation).map_err(|_| LinkErrorCode::Refused)?;
    if r.old != sender {
        return Err(LinkErrorCode::Refused);
    }
    shared
        .admission
        .check(&sender)
        .map_err(Refusal::link_code)?;
    match shared.admission.check(&r.new) {
        Err(Refusal::Revoked) => return Err(LinkErrorCode::KeyRevoked),
        Err(Refusal::Retired) => return Err(LinkErrorCode::KeyRetired),
        _ => {}
    }
    let label = format!("rotated from {}", r.old);
    match shared
        .store
        .put_rotation(r.old, r.new, rotation.clone(), &label)
        .await
    {
        Ok(RotationPut::Stored) => {}
        Ok(RotationPut::Same) => return Ok(()),
        Ok(RotationPut::Taken) => return Err(LinkErrorCode::AlreadyRotated),
        Err(e) => return Err(unavailable("a rotation", &e)),
    }
    let admission = shared.admission.clone();
    let member = shared.store.is_shared();
    let (old, new) = (r.old, r.new);
    let changed = tokio::task::spawn_blocking(move || {
        let added = if admission.is_open() {
            Ok(())
        } else if member {
            admission.add_member(new).map_err(AddError::Barred)
        } else {
            admission.add(new, &label)
        };
        if added.is_ok() {
            admission.retire(&old, &new);
        }
        added
    })
    .await;
    match changed {
        Ok(Ok(())) => {}
        Ok(Err(AddError::Barred(refusal))) => {
            shared.store.forget_rotation(&r.old);
            return Err(refusal.link_code());
        }
        other => {
            tracing::error!("rotation {old} -> {new} not recorded: {other:?}");
            shared.store.forget_rotation(&r.old);
            return Err(LinkErrorCode::Refused);
        }
    }
    shared.store.touch(crate::store::Part::Rotations);
    let _ = shared.push.send(Push::Rotation(rotation));
    tracing::info!(%old, %new, "key rotation stored; the old key is retired");
    Ok(())
}

/// Enrolls `node` with an invite signed by the network admin (this relay's key, or the admin
/// key of its relay map): valid, unexpired, with a use left (counted and persisted atomically,
/// so two nodes racing for a one-time invite cannot both win, through this relay or, with a
/// shared store, through any relay of the fleet), and the node's key not barred.
pub(crate) async fn enroll(
    shared: &Arc<Shared>,
    node: NodeId,
    invite: &[u8],
) -> Result<(), LinkErrorCode> {
    use nullport_keyring::invite::{Invite, InviteError};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut verified = Err(InviteError::Invalid);
    for admin in shared.admin_keys() {
        verified = Invite::verify(invite, &admin, now);
        if !matches!(verified, Err(InviteError::Invalid)) {
            break;
        }
    }
    let invite = verified.map_err(|e| match e {
        InviteError::Expired => LinkErrorCode::InviteExpired,
        _ => LinkErrorCode::InviteInvalid,
    })?;
    match shared.admission.check(&node) {
        Ok(()) | Err(Refusal::NotListed) => {}
        Err(barred) => return Err(barred.link_code()),
    }
    let label = format!("enrolled with invite {}", invite.id_hex());
    shared
        .store
        .use_invite(invite.id, invite.uses, node, &label)
        .await
        .map_err(|e| match e {
            InviteRefusal::Used => LinkErrorCode::InviteUsed,
            InviteRefusal::NotRecorded => LinkErrorCode::Refused,
            InviteRefusal::Unavailable => STORE_UNAVAILABLE,
        })?;
    let admission = shared.admission.clone();
    let added = if shared.store.is_shared() {
        // A member of the shared store (recorded with the use): admitted here from now on,
        // and at every other relay as soon as its follower sees it.
        Ok(admission.add_member(node).map_err(AddError::Barred))
    } else {
        tokio::task::spawn_blocking(move || admission.add(node, &label)).await
    };
    match added {
        Ok(Ok(())) => {}
        Ok(Err(AddError::Barred(refusal))) => return Err(refusal.link_code()),
        other => {
            tracing::error!("enrolling {node}: {other:?}");
            return Err(LinkErrorCode::Refused);
        }
    }
    // The allowlist was re-read with the new entry: other edits take effect now too.
    shared.enforce_admission();
    tracing::info!(peer = %node, invite = %invite.id_hex(), "enrolled with an invite");
    Ok(())
}
