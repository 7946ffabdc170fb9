//! Revocation lists and key rotations, as they arrive from the relay (at each connect, every
//! list and rotation it holds; then each new one), and this node's own list, applied at once.
//!
//! Revocation wins over everything: a list is kept when its signer applies to something here
//! (this node itself, a node-wide revocation signer, an issuer trusted for a service's
//! tokens); a rotation is followed only once per old key (the first one seen), never from or
//! to a revoked or retired key, so a revoked key cannot come back under a new one. Retired
//! keys are kept for good (`rotations.json` in the home).

use std::collections::BTreeMap;
use std::sync::Arc;

use nullport_keyring::revocation::{RevocationError, RevocationList, SignedRevocations};
use nullport_keyring::rotation::{Rotation, SignedRotation};
use nullport_protocol::NodeId;

use crate::daemon::State;
use crate::home::Home;

/// The rotations this node followed (the first per old key).
pub(crate) fn read_rotations(home: &Home) -> Vec<SignedRotation> {
    std::fs::read(home.rotations())
        .ok()
        .and_then(|b| serde_json::from_slice::<Vec<SignedRotation>>(&b).ok())
        .unwrap_or_default()
}

/// The rotations this node followed, old key -> new key (the first per old key).
pub(crate) fn load_rotations(home: &Home) -> BTreeMap<NodeId, NodeId> {
    let mut map = BTreeMap::new();
    for r in read_rotations(home)
        .iter()
        .filter_map(|r| nullport_keyring::rotation::verify_signed(r).ok())
    {
        map.entry(r.old).or_insert(r.new);
    }
    map
}

/// Takes `signed` if it verifies, is newer than the list held from its signer, and the
/// signer applies to something here (this node's own list always does). Saves the set,
/// audits the list with what it applies to, and publishes a new snapshot, which ends the
/// live channels it revokes.
pub(crate) fn apply_list(
    state: &State,
    signed: &SignedRevocations,
) -> Result<RevocationList, RevocationError> {
    let access = state.access();
    let list = {
        let mut set = state
            .revocations
            .lock()
            .map_err(|_| RevocationError::Malformed)?;
        let list = set.apply(signed, |s| access.keeps_lists_of(s))?;
        if let Err(e) = set.save(&state.home.revocations()) {
            tracing::error!("saving revocations: {e}");
        }
        list
    };
    state.rebuild_access();
    for key in &list.keys {
        state.node.forget_sessions(key);
    }
    let scope = state
        .access()
        .scope_of(&list.signer)
        .unwrap_or_else(|| "nothing".into());
    tracing::warn!(signer = %list.signer, version = list.version, keys = list.keys.len(), tokens = list.tokens.len(), applies = %scope, "revocation list applied");
    state.audit.revocation(&list, &scope);
    Ok(list)
}

/// Applies revocation lists from the relay.
pub(crate) async fn revocation_loop(state: Arc<State>) {
    let mut updates = state.node.revocation_updates();
    loop {
        let lists = match updates.recv().await {
            Ok(lists) => lists,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(
                    "{n} revocation updates missed; asking the relay again at the next connect"
                );
                continue;
            }
            Err(_) => return,
        };
        for signed in lists {
            match apply_list(&state, &signed) {
                Ok(_) => {}
                Err(RevocationError::Stale { .. }) => {}
                Err(e @ RevocationError::Untrusted(_)) => {
                    tracing::info!(
                        "revocation list not applied here: {e} (no revocation-signer setting or token trust names it)"
                    );
                }
                Err(e) => tracing::warn!("revocation list refused: {e}"),
            }
        }
    }
}

/// Why a rotation is not followed, by the access snapshot in force.
pub(crate) fn refuse_rotation(access: &crate::access::Access, r: &Rotation) -> Option<String> {
    if let Some(signer) = access.key_revoked_everywhere(&r.old) {
        return Some(format!("the old key is revoked (list of {signer})"));
    }
    if let Some(signer) = access.key_revoked_everywhere(&r.new) {
        return Some(format!("the new key is revoked (list of {signer})"));
    }
    if access.rotations.contains_key(&r.new) {
        return Some("the new key was itself rotated away".into());
    }
    None
}

/// Follows key rotations: the first statement signed by both keys for an old key moves every
/// alias that named it to the new one (so policy written with aliases keeps working) and
/// retires it (refused from then on, its live channels ended by the new snapshot).
pub(crate) async fn rotation_loop(state: Arc<State>) {
    let mut updates = state.node.rotation_updates();
    loop {
        let rotations = match updates.recv().await {
            Ok(r) => r,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(_) => return,
        };
        for signed in rotations {
            let Ok(r) = nullport_keyring::rotation::verify_signed(&signed) else {
                tracing::warn!("ignoring a key rotation that is not signed by both keys");
                continue;
            };
            follow(&state, r, signed);
        }
    }
}

fn follow(state: &State, r: Rotation, signed: SignedRotation) {
    let already = state
        .rotations
        .lock()
        .map(|map| map.contains_key(&r.old))
        .unwrap_or(true);
    if already {
        let held = read_rotations(&state.home);
        if !held.contains(&signed) {
            tracing::warn!(old = %r.old, new = %r.new, "ignoring a second rotation of a key (the first one stands)");
            state.audit.node(
                nullport_audit::NodeEvent::RotationRefused,
                format!("{} -> {}: the key was already rotated", r.old, r.new),
            );
        }
        return;
    }
    if let Some(why) = refuse_rotation(&state.access(), &r) {
        rotation_refused(&state.audit, &r, &why);
        return;
    }
    if let Ok(mut map) = state.rotations.lock() {
        map.insert(r.old, r.new);
    }
    state.node.forget_sessions(&r.old);
    record_rotation(&state.home, signed);
    let mut moved = Vec::new();
    if let Ok(mut files) = state.files.write() {
        moved = move_aliases(&mut files.trust, &r);
    }
    state.rebuild_access();
    rotation_applied(&state.audit, &r, &moved);
}

/// Adds `signed` to the rotations kept in `home` (`rotations.json`).
pub(crate) fn record_rotation(home: &Home, signed: SignedRotation) {
    let mut all = read_rotations(home);
    all.push(signed);
    if let Ok(bytes) = serde_json::to_vec(&all)
        && let Err(e) = nullport_keyring::fs::write_private(&home.rotations(), &bytes, true)
    {
        tracing::error!("saving rotations: {e}");
    }
}

/// Moves every alias of `trust` that named the rotation's old key to its new key, saves the
/// store if any moved, and returns the aliases moved.
pub(crate) fn move_aliases(trust: &mut nullport_keyring::TrustStore, r: &Rotation) -> Vec<String> {
    let aliases: Vec<String> = trust
        .entries()
        .filter(|(_, id)| **id == r.old)
        .map(|(a, _)| a.to_owned())
        .collect();
    let mut moved = Vec::new();
    for alias in aliases {
        if trust.add(&alias, r.new, true).is_ok() {
            moved.push(alias);
        }
    }
    if !moved.is_empty()
        && let Err(e) = trust.save()
    {
        tracing::error!("saving the trust store: {e}");
    }
    moved
}

/// Logs and audits a rotation followed, with the aliases it moved.
pub(crate) fn rotation_applied(audit: &crate::audit::Audit, r: &Rotation, moved: &[String]) {
    tracing::warn!(old = %r.old, new = %r.new, aliases = ?moved, "key rotation applied");
    audit.node(
        nullport_audit::NodeEvent::Rotation,
        format!(
            "{} -> {} (aliases moved: {})",
            r.old,
            r.new,
            moved.join(", ")
        ),
    );
}

/// Logs and audits a rotation not followed, and why.
pub(crate) fn rotation_refused(audit: &crate::audit::Audit, r: &Rotation, why: &str) {
    tracing::warn!(old = %r.old, new = %r.new, "rotation refused: {why}");
    audit.node(
        nullport_audit::NodeEvent::RotationRefused,
        format!("{} -> {}: {why}", r.old, r.new),
    );
}
