//! Revocation lists and key rotations for an [`EmbeddedMcp`] service, as the daemon takes
//! them (app/src/daemon/lists.rs): every list and rotation the relay holds when the service
//! starts, then each new one it pushes. A list is kept when its signer applies here, saved to
//! the home and put in force at once (the live sessions it revokes end); a rotation is
//! followed once per old key, never from or to a revoked key, retires the old key and moves
//! its aliases. There is no daemon beside an embedded node to do this for it.

use std::sync::Arc;

use nullport_keyring::revocation::{RevocationError, RevocationSet, SignedRevocations};
use nullport_keyring::rotation::SignedRotation;
use nullport_protocol::NodeId;
use tokio::sync::broadcast;

use super::embed::EmbeddedMcp;
use crate::access::Access;
use crate::daemon::lists::{
    move_aliases, record_rotation, refuse_rotation, rotation_applied, rotation_refused,
};

impl EmbeddedMcp {
    /// Fetches every list and rotation `node`'s relay holds now and applies them.
    /// `forget(key)` drops the resumption secrets held for a revoked or retired key
    /// (`Node::forget_sessions`).
    pub async fn catch_up(&self, node: &nullport_node::Node, forget: &impl Fn(&NodeId)) {
        match node.revocation_lists().await {
            Ok(all) => self.apply_lists(all, forget),
            Err(e) => tracing::info!("revocation lists not fetched: {e}"),
        }
        match node.rotations().await {
            Ok(all) => self.follow_rotations(all, forget),
            Err(e) => tracing::info!("rotations not fetched: {e}"),
        }
    }

    /// Applies each update from `lists` and `rotations` (a node's `revocation_updates()` and
    /// `rotation_updates()`, subscribed to before [`EmbeddedMcp::catch_up`] so nothing
    /// published meanwhile is missed) until they close.
    pub async fn follow_lists(
        &self,
        mut lists: broadcast::Receiver<Vec<SignedRevocations>>,
        mut rotations: broadcast::Receiver<Vec<SignedRotation>>,
        forget: impl Fn(&NodeId),
    ) {
        loop {
            tokio::select! {
                got = lists.recv() => match got {
                    Ok(all) => self.apply_lists(all, &forget),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!("{n} revocation updates missed; the relay sends them again at the next connect");
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                got = rotations.recv() => match got {
                    Ok(all) => self.follow_rotations(all, &forget),
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }

    /// Applies revocation lists (see the module).
    pub fn apply_lists(&self, lists: Vec<SignedRevocations>, forget: &impl Fn(&NodeId)) {
        for signed in lists {
            let path = self.home().revocations();
            let mut set = match RevocationSet::load(&path) {
                Ok(set) => set,
                Err(e) => {
                    tracing::error!("revocation lists in the home unreadable: {e}");
                    RevocationSet::default()
                }
            };
            let access = self.access();
            let list = match set.apply(&signed, |s| access.keeps_lists_of(s)) {
                Ok(list) => list,
                Err(RevocationError::Stale { .. }) => continue,
                Err(e @ RevocationError::Untrusted(_)) => {
                    tracing::info!("revocation list not applied here: {e}");
                    continue;
                }
                Err(e) => {
                    tracing::warn!("revocation list refused: {e}");
                    continue;
                }
            };
            if let Err(e) = set.save(&path) {
                tracing::error!("saving revocations: {e}");
            }
            // In force from memory even if the home could not be written.
            self.update_access(|a| a.revocations = set);
            for key in &list.keys {
                forget(key);
            }
            let scope = self
                .access()
                .scope_of(&list.signer)
                .unwrap_or_else(|| "nothing".into());
            tracing::warn!(signer = %list.signer, version = list.version, "revocation list applied");
            self.audit().revocation(&list, &scope);
        }
    }

    /// Follows key rotations (see the module).
    pub fn follow_rotations(&self, rotations: Vec<SignedRotation>, forget: &impl Fn(&NodeId)) {
        for signed in rotations {
            let Ok(r) = nullport_keyring::rotation::verify_signed(&signed) else {
                tracing::warn!("ignoring a key rotation that is not signed by both keys");
                continue;
            };
            let access: Arc<Access> = self.access();
            if access.rotations.contains_key(&r.old) {
                continue;
            }
            if let Some(why) = refuse_rotation(&access, &r) {
                rotation_refused(self.audit(), &r, &why);
                continue;
            }
            forget(&r.old);
            record_rotation(self.home(), signed);
            let mut trust = access.trust.clone();
            let moved = move_aliases(&mut trust, &r);
            self.update_access(|a| {
                a.rotations.insert(r.old, r.new);
                a.trust = trust;
            });
            rotation_applied(self.audit(), &r, &moved);
        }
    }
}
