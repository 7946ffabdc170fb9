//! A fleet node's relay map on disk (`relay-map.json` in its home): the newest map the node
//! took, kept so that a restart starts from it (the relays it lists, and no older map
//! accepted) instead of from the bootstrap relay alone. Same file format as the relay's
//! `--map` file (`nullport_relay::map_file`); the node verifies it under its pinned admin key
//! on start, so a map signed by anyone else is not used.

use std::path::Path;
use std::sync::Arc;

use nullport_protocol::relay_link::SignedRelayMap;
use nullport_relay::map_file::{self, VerifiedMap};

use super::State;

/// The map kept in `path`, if there is a valid one (a missing file is normal; a bad one is
/// logged and ignored: the node then starts from its bootstrap relay).
pub(crate) fn load(path: &Path) -> Option<SignedRelayMap> {
    if !path.exists() {
        return None;
    }
    match map_file::load(path) {
        Ok(verified) => Some(verified.signed),
        Err(e) => {
            tracing::warn!("{e}; starting from the bootstrap relay");
            None
        }
    }
}

/// Writes each newer map the node takes to the home, until the daemon stops.
pub(crate) async fn keep(state: Arc<State>) {
    let mut maps = state.node.watch_relay_map();
    while maps.changed().await.is_ok() {
        if maps.borrow_and_update().is_none() {
            continue;
        }
        // As the node verified it under the pinned admin key when it took it.
        let Some((map, signed)) = state.node.relay_map_in_force() else {
            continue;
        };
        let version = map.version;
        let path = state.home.relay_map();
        let verified = VerifiedMap { map, signed };
        let written = tokio::task::spawn_blocking(move || map_file::save(&path, &verified)).await;
        match written {
            Ok(Ok(())) => tracing::info!(version, "relay map kept in the home"),
            Ok(Err(e)) => tracing::warn!("relay map not kept: {e}"),
            Err(e) => tracing::warn!("relay map not kept: {e}"),
        }
    }
}
