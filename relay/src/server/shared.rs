//! The state every connection task shares: routes to online nodes, limits, rate limiters,
//! the admission decision, the persistent store, and the queue of pushes to nodes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use dashmap::DashMap;
use nullport_keyring::relay_map::RelayMap;
use nullport_protocol::relay_link::SignedRelayMap;
use nullport_protocol::{Identity, NodeId, SessionId};
use tokio::sync::mpsc;

use crate::admission::Admission;
use crate::config::RelayLimits;
use crate::metrics::Metrics;
use crate::push::Push;
use crate::rate::RateLimiter;
use crate::store::Store;

/// Which end of the splice a pump reads from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Side {
    /// The dialing node.
    Caller,
    /// The dialed node.
    Target,
}

/// An admitted node's connection.
pub(crate) struct Route {
    pub(crate) conn: quinn::Connection,
    pub(crate) generation: u64,
    pub(crate) counters: Arc<crate::nodes::NodeCounters>,
}

/// State shared by every connection task.
pub(crate) struct Shared {
    pub(crate) limits: RelayLimits,
    pub(crate) admission: Arc<Admission>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) routes: DashMap<NodeId, Route>,
    pub(crate) dial_limiter: RateLimiter,
    pub(crate) publish_limiter: RateLimiter,
    pub(crate) byte_limiter: RateLimiter,
    pub(crate) next_session: AtomicU64,
    pub(crate) next_generation: AtomicU64,
    pub(crate) identity: Arc<Identity>,
    pub(crate) store: Arc<Store>,
    pub(crate) push: mpsc::UnboundedSender<Push>,
    /// Version of the network admin's list in force (0: none).
    pub(crate) admin_version: AtomicU64,
    pub(crate) pending_per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// When the planned stop the relay announced is due (none: not draining). Meanwhile
    /// new dials are answered "not here", and nodes that arrive are told.
    pub(crate) draining_until: Mutex<Option<tokio::time::Instant>>,
    /// The fleet's relay map this relay hands out (none: a lone relay): what it says, verified
    /// once when it was taken, and its signed form.
    pub(crate) map: Mutex<Option<(RelayMap, SignedRelayMap)>>,
    #[cfg(feature = "testing")]
    pub(crate) hooks: crate::testing::TestHooks,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("online", &self.routes.len())
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Whether the relay announced a planned stop.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining_until.lock().is_ok_and(|u| u.is_some())
    }

    /// Time left until the announced stop, while draining.
    pub(crate) fn drain_left(&self) -> Option<std::time::Duration> {
        let until = self.draining_until.lock().ok().and_then(|u| *u)?;
        Some(until.saturating_duration_since(tokio::time::Instant::now()))
    }

    /// The relay map this relay holds, if it is part of a fleet.
    pub(crate) fn relay_map(&self) -> Option<SignedRelayMap> {
        self.map
            .lock()
            .ok()
            .and_then(|m| m.as_ref().map(|(_, s)| s.clone()))
    }

    /// A snapshot of every node online.
    pub(crate) fn node_stats(&self) -> Vec<crate::NodeStats> {
        self.routes
            .iter()
            .map(|r| r.counters.snapshot(*r.key()))
            .collect()
    }

    /// The keys whose invites and revocation lists bind this relay as the network admin's.
    pub(crate) fn admin_keys(&self) -> Vec<NodeId> {
        let mut keys = vec![self.identity.node_id()];
        let admin = self
            .map
            .lock()
            .ok()
            .and_then(|m| m.as_ref().map(|(map, _)| map.admin));
        if let Some(admin) = admin
            && !keys.contains(&admin)
        {
            keys.push(admin);
        }
        keys
    }

    /// Revokes, here, the union of the keys every admin list in the cache revokes (each list
    /// verified again), and closes the links of nodes no longer admitted. Returns how many.
    pub(crate) fn enforce_admin_lists(&self) -> usize {
        let mut revoked = Vec::new();
        for admin in self.admin_keys() {
            let Some(held) = self.store.revocations.get(&admin).map(|e| e.1.clone()) else {
                continue;
            };
            if let Ok(list) = nullport_keyring::revocation::verify_signed(&held)
                && list.signer == admin
            {
                revoked.extend(list.keys);
            }
        }
        self.admission.set_revoked(revoked);
        self.enforce_admission()
    }

    /// The counters of `node`'s connection, if it is online.
    pub(crate) fn counters(&self, node: &NodeId) -> Option<Arc<crate::nodes::NodeCounters>> {
        self.routes.get(node).map(|r| r.counters.clone())
    }

    /// Closes the link (and with it every splice) of each online node that is no longer
    /// admitted, telling it why, and drops the revocation lists of signers no longer
    /// admitted (they can publish no newer one). Returns how many links were closed.
    pub(crate) fn enforce_admission(&self) -> usize {
        let admins = self.admin_keys();
        let before = self.store.revocations.len();
        // A shared store keeps every list the fleet accepted (this relay's view of it, which
        // the admin's lists must stay in until the map says who the admin is).
        let shared = self.store.is_shared();
        self.store.revocations.retain(|signer, _| {
            shared || admins.contains(signer) || self.admission.check(signer).is_ok()
        });
        if self.store.revocations.len() != before {
            self.store.touch(crate::store::Part::Revocations);
        }
        let mut closed = 0;
        for route in self.routes.iter() {
            if let Err(refusal) = self.admission.check(route.key()) {
                tracing::info!(peer = %route.key(), "closing the link: {refusal}");
                route
                    .conn
                    .close(refusal.close_code().into(), refusal.to_string().as_bytes());
                closed += 1;
            }
        }
        closed
    }

    /// Takes the network admin's list (signed with this relay's key, or the admin key of its
    /// relay map) if it is newer than the one in force: its keys are refused from now on,
    /// their links closed, and the list is kept and pushed to every node like any other.
    pub(crate) fn apply_admin_list(
        &self,
        list: &nullport_keyring::revocation::RevocationList,
        signed: nullport_protocol::relay_link::SignedRevocations,
    ) -> bool {
        if !self.admin_keys().contains(&list.signer) {
            return false;
        }
        // The newest list of each admin key is in force (with a shared store, the cache may
        // hold a newer one of this key already, from another relay).
        let newer = self
            .store
            .cache_list(list.signer, list.version, signed.clone());
        if !newer && list.version <= self.admin_version.load(Ordering::Acquire) {
            return false;
        }
        self.admin_version.fetch_max(list.version, Ordering::AcqRel);
        if newer {
            self.store.touch(crate::store::Part::Revocations);
            let _ = self.push.send(Push::Revocations(signed));
        }
        let closed = self.enforce_admin_lists();
        tracing::info!(
            version = list.version,
            keys = list.keys.len(),
            closed,
            "network admin's revocation list in force"
        );
        true
    }

    /// The chunks to forward for `chunk`, and whether to end the direction after them.
    #[cfg(feature = "testing")]
    pub(crate) fn hook_chunk(
        &self,
        session: SessionId,
        side: Side,
        chunk: Bytes,
    ) -> (Vec<Bytes>, bool) {
        use crate::testing::Direction;
        match &self.hooks.splice {
            Some(h) => {
                let d = match side {
                    Side::Caller => Direction::CallerToTarget,
                    Side::Target => Direction::TargetToCaller,
                };
                let out = h.on_chunk(session, d, chunk);
                (out.chunks, out.finish)
            }
            None => (vec![chunk], false),
        }
    }

    /// The chunks to forward for `chunk` (always just itself without the `testing` feature).
    #[cfg(not(feature = "testing"))]
    pub(crate) fn hook_chunk(
        &self,
        _s: SessionId,
        _side: Side,
        chunk: Bytes,
    ) -> (Vec<Bytes>, bool) {
        (vec![chunk], false)
    }

    #[cfg(feature = "testing")]
    pub(crate) fn route_target(&self, target: NodeId) -> NodeId {
        match self.hooks.reroute {
            Some((from, to)) if from == target => to,
            _ => target,
        }
    }

    #[cfg(not(feature = "testing"))]
    pub(crate) fn route_target(&self, target: NodeId) -> NodeId {
        target
    }

    /// True when this relay plays one that predates `DialWith` (tests only).
    #[cfg(feature = "testing")]
    pub(crate) fn legacy_dial(&self) -> bool {
        self.hooks.legacy_dial
    }

    #[cfg(not(feature = "testing"))]
    pub(crate) fn legacy_dial(&self) -> bool {
        false
    }

    #[cfg(feature = "testing")]
    pub(crate) fn caller_label(&self, caller: NodeId) -> NodeId {
        self.hooks.relabel_caller.unwrap_or(caller)
    }

    #[cfg(not(feature = "testing"))]
    pub(crate) fn caller_label(&self, caller: NodeId) -> NodeId {
        caller
    }
}

/// Counts a connection as pending (globally and for its source IP) until dropped.
pub(crate) struct PendingGuard {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl PendingGuard {
    pub(crate) fn try_new(shared: &Arc<Shared>, ip: IpAddr) -> Option<Self> {
        let mut per_ip = shared.pending_per_ip.lock().ok()?;
        let total = shared.metrics.pending.load(Ordering::Relaxed) as usize;
        let online = shared.metrics.nodes_online.load(Ordering::Relaxed) as usize;
        let mine = per_ip.entry(ip).or_insert(0);
        if total >= shared.limits.max_pending
            || *mine >= shared.limits.max_pending_per_ip
            || online >= shared.limits.max_connections
        {
            if *mine == 0 {
                per_ip.remove(&ip);
            }
            return None;
        }
        *mine += 1;
        shared.metrics.pending.fetch_add(1, Ordering::Relaxed);
        Some(Self {
            shared: shared.clone(),
            ip,
        })
    }
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.shared.metrics.pending.fetch_sub(1, Ordering::Relaxed);
        if let Ok(mut per_ip) = self.shared.pending_per_ip.lock()
            && let Some(n) = per_ip.get_mut(&self.ip)
        {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}
