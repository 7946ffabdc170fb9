//! [`RelayHandle`]: what an operator (or the binary's reload loop) does to a running relay:
//! reload the allowlist and the admin's list, take a newer relay map, announce a drain.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use nullport_protocol::NodeId;
use nullport_protocol::relay_link::SignedRelayMap;
use tokio::time::Instant;

use super::shared::Shared;
use super::store_sync;
use crate::error::Error;

/// A handle to a running relay for its operator: reload the allowlist and the network
/// admin's revocation list while it runs.
#[derive(Debug, Clone)]
pub struct RelayHandle {
    pub(super) shared: Arc<Shared>,
}

impl RelayHandle {
    /// Re-reads the allowlist file (only if its modification time changed, unless `forced`)
    /// and closes the links of nodes it no longer admits. Returns the entries now in force
    /// (None: not re-read).
    pub fn reload_allowlist(&self, forced: bool) -> Result<Option<usize>, Error> {
        let reloaded = self.shared.admission.reload(!forced)?;
        if reloaded.is_some() {
            self.shared.enforce_admission();
        }
        Ok(reloaded)
    }

    /// Re-reads the network admin's revocation list from the state directory and, if it is
    /// newer than the one in force, refuses its keys and closes their links. Returns the
    /// version now in force.
    pub async fn reload_admin_list(&self) -> Result<u64, Error> {
        store_sync::reload_admin_list(&self.shared).await
    }

    /// Closes the link of every node the admission decision no longer admits (after the
    /// allowlist of an embedded relay was changed with [`crate::Admission::set_fixed`]).
    pub fn enforce_admission(&self) -> usize {
        self.shared.enforce_admission()
    }

    /// Makes `signed` the relay map this relay hands out (to `MapQuery` and, pushed, to every
    /// node online), if it is a valid map signed by the admin key it names, lists this relay,
    /// and is newer than the one held. Returns whether it replaced the one held (the same map
    /// again: `false`).
    pub fn set_relay_map(&self, signed: SignedRelayMap) -> Result<bool, Error> {
        use nullport_keyring::relay_map::RelayMap;
        let refused = |e: &dyn std::fmt::Display| Error::RelayMap(e.to_string());
        let map = RelayMap::verify_self_signed(&signed).map_err(|e| refused(&e))?;
        let me = self.shared.identity.node_id();
        if map.relay(&me).is_none() {
            return Err(Error::RelayMap(format!(
                "version {} does not list this relay ({me})",
                map.version
            )));
        }
        let mut held = self
            .shared
            .map
            .lock()
            .map_err(|_| Error::RelayMap("map lock poisoned".into()))?;
        if let Some((current, _)) = held.as_ref() {
            if current.admin != map.admin {
                return Err(Error::RelayMap(format!(
                    "signed by {}, the map held by {}",
                    map.admin, current.admin
                )));
            }
            if !current.accepts(&map).map_err(|e| refused(&e))? {
                return Ok(false);
            }
        }
        let (version, relays) = (map.version, map.relays.len());
        *held = Some((map, signed.clone()));
        drop(held);
        self.shared
            .metrics
            .map_version
            .store(version, Ordering::Relaxed);
        // The map names the network admin: the admin's lists the store holds are in force now.
        self.shared.enforce_admin_lists();
        tracing::info!(version, relays, "relay map in force");
        let _ = self.shared.push.send(crate::push::Push::Map(signed));
        Ok(true)
    }

    /// Tells every node online that this relay stops within `within`: nodes that can go
    /// elsewhere (fleet members) move now; channels already open keep running until the
    /// relay really stops, and new dials are answered "not here" (callers try the target's
    /// next relay).
    pub fn announce_drain(&self, within: std::time::Duration) {
        if let Ok(mut until) = self.shared.draining_until.lock() {
            *until = Some(Instant::now() + within);
        }
        let secs = u32::try_from(within.as_secs()).unwrap_or(u32::MAX);
        tracing::info!(within_secs = secs, "announcing drain to every node");
        self.shared
            .metrics
            .drains_announced
            .fetch_add(1, Ordering::Relaxed);
        let _ = self.shared.push.send(crate::push::Push::Draining(secs));
    }

    /// How the state store has answered so far (operations, failures, latency).
    pub fn store_stats(&self) -> crate::store::StoreStats {
        self.shared.store.stats()
    }

    /// The NodeIds online now.
    pub fn online(&self) -> Vec<NodeId> {
        self.shared.routes.iter().map(|r| *r.key()).collect()
    }
}
