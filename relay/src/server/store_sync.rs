//! Acting on what the other relays of a fleet put in the shared store (`--store etcd://`):
//! members they enrolled are admitted here, keys they retired are retired here, revocation
//! lists they accepted are pushed to this relay's nodes (and the network admin's enforced),
//! all from the cache, in the order the store's follower reports them.
//!
//! Who the network admin is (this relay's own key, and the admin key of the relay map it
//! holds) is `Shared::admin_keys`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc::UnboundedReceiver;

use crate::error::{Error, StateError};
use crate::push::Push;
use crate::server::shared::Shared;
use crate::store::Change;

/// Re-reads the network admin's list from the state directory: in force here first (a
/// revocation only ever refuses more), then shared with the fleet (a store that cannot take it
/// now is asked again at the next reload). Returns the version in force.
pub(crate) async fn reload_admin_list(shared: &Shared) -> Result<u64, Error> {
    if let Some(dir) = shared.store.dir().map(|d| d.to_owned()) {
        let admins = shared.admin_keys();
        let read =
            tokio::task::spawn_blocking(move || crate::store::read_admin_list_of(&dir, &admins))
                .await
                .map_err(StateError::from)??;
        if let Some((list, signed)) = read {
            shared.apply_admin_list(&list, signed.clone());
            // In force here already; shared with the fleet at the next reload if the store
            // cannot take it now (counted in the store metrics, not logged twice a second).
            if let Err(e) = shared
                .store
                .publish_admin_list(list.signer, list.version, &signed)
                .await
            {
                tracing::debug!("admin list not shared with the fleet yet: {e}");
            }
        }
    }
    Ok(shared.admin_version.load(Ordering::Acquire))
}

/// Applies the store's changes until the follower stops.
pub(crate) async fn run(shared: Arc<Shared>, mut changes: UnboundedReceiver<Change>) {
    while let Some(change) = changes.recv().await {
        match change {
            Change::List {
                signer,
                version,
                list,
            } => {
                if shared.admin_keys().contains(&signer) {
                    let closed = shared.enforce_admin_lists();
                    tracing::info!(%signer, version, closed, "network admin's list from the fleet in force");
                } else {
                    // Pushed whether or not the signer is admitted here: another relay of the
                    // fleet took it from an admitted node.
                    tracing::info!(%signer, version, "revocation list from the fleet");
                }
                let _ = shared.push.send(Push::Revocations(list));
            }
            Change::Rotation { old, new, rotation } => {
                let admission = shared.admission.clone();
                let retired = tokio::task::spawn_blocking(move || {
                    let _ = admission.add_member(new);
                    admission.retire(&old, &new);
                })
                .await;
                if retired.is_err() {
                    tracing::error!(%old, %new, "rotation from the fleet not applied");
                    continue;
                }
                let closed = shared.enforce_admission();
                tracing::info!(%old, %new, closed, "key rotation from the fleet; the old key is retired");
                let _ = shared.push.send(Push::Rotation(rotation));
            }
            Change::Member { id, admitted } => {
                if admitted {
                    if let Err(barred) = shared.admission.add_member(id) {
                        tracing::info!(peer = %id, "member from the fleet not admitted: {barred}");
                    }
                } else {
                    shared.admission.remove_member(&id);
                    let closed = shared.enforce_admission();
                    tracing::info!(peer = %id, closed, "member removed from the fleet's store");
                }
            }
        }
    }
}
