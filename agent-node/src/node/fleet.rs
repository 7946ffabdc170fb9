//! A node's relay links and its home among them.
//!
//! A lone-relay node has one link. A fleet node (it pins the network admin key, not one relay
//! key) holds the signed relay map and keeps its **home** link on the first relay it can reach
//! in its rendezvous order over the map (`nullport_keyring::relay_map::rendezvous_order`).
//! The manager here walks that order: every relay before the home keeps being retried (that
//! is how a node notices its first choice is back), and a relay that comes back becomes home
//! again only after its link has stayed up for [`NodeLimits::home_settle`] (hysteresis: no
//! flapping; the one exception is a relay that never failed this node, right after a
//! failover landed it further down its order). Links the node no longer needs (a former home, extra links opened to reach
//! callees homed elsewhere) close once no channel uses them and they have been idle for
//! [`NodeLimits::extra_link_idle`]. A relay that is not in the map is never dialled.
//!
//! [`NodeLimits::home_settle`]: super::NodeLimits::home_settle
//! [`NodeLimits::extra_link_idle`]: super::NodeLimits::extra_link_idle

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use nullport_keyring::relay_map::RelayMap;
use nullport_protocol::NodeId;
use nullport_protocol::relay_link::SignedRelayMap;
use tokio::time::Instant;
use tracing::Instrument;

use super::Inner;
use super::config::LinkState;
use super::link::run_link;
use super::slot::Slot;
use crate::error::Error;
use crate::relay_addr::RelayAddr;

/// How often a fleet node's manager looks again without being woken.
const TICK: Duration = Duration::from_millis(250);

/// Longest drain a node believes (seconds).
const MAX_DRAIN_SECS: u32 = 600;

/// Relays a node without a home links to at once, in its order (more only as those fail).
const LOOKAHEAD: usize = 2;

/// How long a relay found down is not waited for by dials (its link keeps retrying).
const DOWN_MEMORY: Duration = Duration::from_secs(10);

/// The fleet side of a node: the pinned admin key and the newest map it verified.
pub(super) struct Fleet {
    /// The network admin key that signs relay maps.
    pub(super) admin: NodeId,
    /// The newest map verified under `admin`, with its signed form (to hand on).
    pub(super) map: std::sync::Mutex<Option<(RelayMap, SignedRelayMap)>>,
}

impl Inner {
    /// Wakes the manager: a link changed state, or the map changed.
    pub(super) fn fleet_changed(&self) {
        self.changed.notify_one();
    }

    /// The relays this node may use, in `node`'s rendezvous order: the map's, once it has
    /// one; before that (and for a lone relay), the configured relay alone.
    pub(super) fn relay_order(&self, node: &NodeId) -> Vec<RelayAddr> {
        let held = self
            .fleet
            .as_ref()
            .and_then(|f| f.map.lock().ok().and_then(|m| m.clone()));
        let Some((map, _)) = held else {
            return vec![self.config.relay.clone()];
        };
        map.order_for(node)
            .into_iter()
            .filter_map(|entry| {
                // The first address that parses; the map was checked, so one does.
                entry
                    .addrs
                    .iter()
                    .find_map(|a| format!("{}@{a}", entry.node_id).parse::<RelayAddr>().ok())
            })
            .collect()
    }

    /// Every address of `relay` in the map, in its order (the first is `relay` itself); a
    /// relay the map does not list (a lone relay, the bootstrap): `relay` alone.
    pub(super) fn relay_addresses(&self, relay: &RelayAddr) -> Vec<RelayAddr> {
        let held = self
            .fleet
            .as_ref()
            .and_then(|f| f.map.lock().ok().and_then(|m| m.clone()));
        let listed = held.and_then(|(map, _)| {
            map.relay(&relay.node_id).map(|entry| {
                entry
                    .addrs
                    .iter()
                    .filter_map(|a| format!("{}@{a}", entry.node_id).parse::<RelayAddr>().ok())
                    .collect::<Vec<_>>()
            })
        });
        match listed {
            Some(addrs) if addrs.first() == Some(relay) => addrs,
            _ => vec![relay.clone()],
        }
    }

    /// The link to `relay`, started if the node has none.
    pub(super) fn slot_for(self: &Arc<Self>, relay: &RelayAddr) -> Result<Arc<Slot>, Error> {
        let mut slots = self.slots.lock().map_err(|_| Error::Shutdown)?;
        if let Some(slot) = slots.get(&relay.node_id)
            && !slot.is_retired()
        {
            if slot.relay == *relay {
                return Ok(slot.clone());
            }
            // The map moved this relay to another address: the old link goes.
            tracing::info!(relay = %relay, "relay address changed in the map");
            slot.retire();
        }
        // A fleet node's link may hold half of its handshakes in progress (one relay
        // cannot starve the others); a lone relay's link all of them.
        let share = if self.fleet.is_some() {
            self.config.limits.max_pending_handshakes / 2
        } else {
            self.config.limits.max_pending_handshakes
        };
        let slot = Arc::new(Slot::new(
            &self.config.identity,
            relay.clone(),
            &self.config.limits,
            share,
        )?);
        slots.insert(relay.node_id, slot.clone());
        let span = tracing::info_span!("link", relay = %relay.node_id.fmt_short());
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.spawn(
                run_link(self.clone(), slot.clone(), self.endpoint.clone()).instrument(span),
            );
        }
        Ok(slot)
    }

    /// The home link now, if the node has one.
    pub(super) fn home_slot(&self) -> Option<Arc<Slot>> {
        self.home.lock().ok().and_then(|h| h.clone())
    }

    /// Takes `signed` as the relay map if it verifies under the pinned admin key and is newer
    /// than the one held; refuses (and logs) anything else. `from` is the link it came over.
    pub(super) fn offer_map(&self, signed: SignedRelayMap, from: &Slot) {
        let Some(fleet) = &self.fleet else {
            tracing::warn!(relay = %from.relay, "relay map ignored: this node is not in a fleet");
            return;
        };
        let map = match RelayMap::verify(&signed, &fleet.admin) {
            Ok(map) => map,
            Err(e) => {
                tracing::warn!(relay = %from.relay, "relay map refused: {e}");
                return;
            }
        };
        let Ok(mut held) = fleet.map.lock() else {
            return;
        };
        if let Some((current, _)) = held.as_ref() {
            match current.accepts(&map) {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!(relay = %from.relay, "relay map refused: {e}");
                    return;
                }
            }
        }
        tracing::info!(
            version = map.version,
            relays = map.relays.len(),
            "relay map in force"
        );
        *held = Some((map, signed.clone()));
        drop(held);
        self.map_updates.send_replace(Some(signed));
        self.fleet_changed();
    }

    /// Notes that the link to `relay` was found down (a dial does not wait for it again for
    /// a while).
    pub(super) fn note_down(&self, relay: &NodeId) {
        if let Ok(mut down) = self.down.lock() {
            down.insert(*relay, Instant::now());
        }
    }

    /// Notes that a link to `relay` is up.
    pub(super) fn note_up(&self, relay: &NodeId) {
        if let Ok(mut down) = self.down.lock() {
            down.remove(relay);
        }
    }

    /// Whether a link to `relay` was found down within [`DOWN_MEMORY`].
    pub(super) fn recently_down(&self, relay: &NodeId) -> bool {
        self.down
            .lock()
            .is_ok_and(|down| down.get(relay).is_some_and(|at| at.elapsed() < DOWN_MEMORY))
    }

    /// Whether any relay of `node`'s order announced a stop (`node` may be moving).
    pub(super) fn order_draining(&self, node: &NodeId) -> bool {
        let Ok(slots) = self.slots.lock() else {
            return false;
        };
        self.relay_order(node)
            .iter()
            .any(|r| slots.get(&r.node_id).is_some_and(|s| s.is_draining()))
    }

    /// The relay behind `slot` said it stops within `within_secs`: not a home meanwhile.
    pub(super) fn relay_draining(&self, slot: &Slot, within_secs: u32) {
        tracing::info!(relay = %slot.relay, within_secs, "relay announced a planned stop");
        // A drain counts as a failure: once it is over, the relay must stay up for the settle
        // time before it is home again (a relay announcing drains it never carries out moves
        // its nodes once, not back and forth). Bounded: a drain of days is a lie.
        let until =
            Instant::now() + Duration::from_secs(within_secs.clamp(1, MAX_DRAIN_SECS).into());
        if let Ok(mut d) = slot.draining_until.lock() {
            *d = Some(until);
        }
        if let Ok(mut since) = slot.online_since.lock()
            && since.is_some()
        {
            *since = Some(until);
        }
        slot.mark_failed();
        self.fleet_changed();
    }
}

/// Keeps the node's links and its home in line with its rendezvous order, until the node
/// stops.
pub(super) async fn manage(inner: Arc<Inner>) {
    let mut refreshed = Instant::now();
    let mut turn = 0usize;
    loop {
        arrange(&inner);
        if inner.fleet.is_some() && refreshed.elapsed() >= inner.config.limits.map_refresh {
            refreshed = Instant::now();
            turn = turn.wrapping_add(1);
            refresh_map(&inner, turn);
        }
        if inner.fleet.is_some() {
            // Settle times, drains and idle links run out by themselves: look again.
            let _ = tokio::time::timeout(TICK, inner.changed.notified()).await;
        } else {
            // A lone relay's one link only changes when its task says so.
            inner.changed.notified().await;
        }
    }
}

/// Asks a relay other than the home one for the newest map (each time the next one in the
/// order): a relay the admin removed from the map, and that keeps running, cannot keep its
/// nodes on the old map by never handing on the new one. The link is an extra link, closed
/// again when idle.
fn refresh_map(inner: &Arc<Inner>, turn: usize) {
    let home = inner.home_slot().map(|h| h.relay_id());
    let others: Vec<RelayAddr> = inner
        .relay_order(&inner.node_id)
        .into_iter()
        .filter(|r| Some(r.node_id) != home)
        .collect();
    if others.is_empty() {
        return;
    }
    let relay = others[turn % others.len()].clone();
    let Ok(slot) = inner.slot_for(&relay) else {
        return;
    };
    let asking = inner.clone();
    if let Ok(mut tasks) = inner.tasks.lock() {
        tasks.spawn(async move {
            let _lease = slot.uses.clone();
            slot.touch();
            let mut conn = slot.conn.subscribe();
            let up = tokio::time::timeout(asking.config.limits.connect_timeout, async {
                while conn.borrow_and_update().is_none() {
                    if conn.changed().await.is_err() {
                        return;
                    }
                }
            })
            .await;
            if up.is_err() {
                return;
            }
            match super::control::slot_exchange(
                &asking,
                &slot,
                nullport_protocol::relay_link::NodeToRelay::MapQuery,
            )
            .await
            {
                Ok(mut answers) => {
                    if let Some(nullport_protocol::relay_link::RelayToNode::Map {
                        map: Some(map),
                    }) = answers.pop()
                    {
                        asking.offer_map(map, &slot);
                    }
                }
                Err(e) => tracing::debug!(relay = %slot.relay, "map refresh failed: {e}"),
            }
        });
    }
}

/// One pass: walk the order, choose the home, mirror its state, close what is not needed.
fn arrange(inner: &Arc<Inner>) {
    let limits = &inner.config.limits;
    let order = inner.relay_order(&inner.node_id);
    let current = inner.home_slot();
    let current_usable = current
        .as_ref()
        .is_some_and(|h| h.connection().is_some() && !h.is_draining() && !h.is_retired());
    let home_age = inner
        .home_since
        .lock()
        .ok()
        .and_then(|t| t.map(|t| t.elapsed()));
    let mut wanted = HashSet::new();
    let mut home: Option<Arc<Slot>> = None;
    let mut first: Option<Arc<Slot>> = None;
    let mut fallback: Option<Arc<Slot>> = None;
    // Links still making their first attempt, in this walk: at most LOOKAHEAD at once, so a
    // node with no home up (starting, failing over) does not link to the whole fleet.
    let mut trying = 0;
    for relay in &order {
        let known = inner
            .slots
            .lock()
            .is_ok_and(|s| s.get(&relay.node_id).is_some_and(|s| !s.is_retired()));
        if trying >= LOOKAHEAD && !known {
            break;
        }
        let Ok(slot) = inner.slot_for(relay) else {
            continue;
        };
        wanted.insert(relay.node_id);
        first.get_or_insert_with(|| slot.clone());
        if slot.connection().is_none() {
            if !slot.is_down() {
                trying += 1;
            }
            continue;
        }
        if slot.is_draining() {
            fallback.get_or_insert_with(|| slot.clone());
            continue;
        }
        let is_current = current.as_ref().is_some_and(|h| Arc::ptr_eq(h, &slot));
        // Hysteresis: a relay earlier in the order must stay linked for the settle time
        // before it is home again, unless the node only just landed where it is (a failover
        // moments ago) and this relay has never let it down.
        let settled = slot.online_for().is_some_and(|t| t >= limits.home_settle)
            || (!slot.has_failed() && home_age.is_some_and(|age| age < limits.home_settle));
        if is_current || !current_usable || settled {
            home = Some(slot);
            break;
        }
    }
    let home = home.or(fallback);
    if let Ok(mut h) = inner.home.lock() {
        let changed = match (&*h, &home) {
            (Some(a), Some(b)) => !Arc::ptr_eq(a, b),
            (None, None) => false,
            _ => true,
        };
        if changed {
            if let Some(new) = &home {
                tracing::info!(relay = %new.relay, "home relay");
            }
            *h = home.clone();
            if let Ok(mut since) = inner.home_since.lock() {
                *since = home.as_ref().map(|_| Instant::now());
            }
        }
    }
    // Mirror the home link (or, with none, the first link being tried) into the node's state.
    let shown = home.clone().or(first);
    if let Some(slot) = &shown {
        let conn = home.as_ref().and_then(|h| h.connection());
        let state = if conn.is_some() {
            LinkState::Online
        } else {
            slot.state.borrow().clone()
        };
        inner.conn.send_if_modified(|c| {
            let same = match (&*c, &conn) {
                (Some(a), Some(b)) => a.stable_id() == b.stable_id(),
                (None, None) => true,
                _ => false,
            };
            if !same {
                *c = conn.clone();
            }
            !same
        });
        inner.state.send_if_modified(|s| {
            let same = s.to_string() == state.to_string();
            if !same {
                *s = state;
            }
            !same
        });
    }
    // Close what is not needed: links to relays outside the map at once, others once unused
    // and idle.
    let in_map: HashSet<NodeId> = order.iter().map(|r| r.node_id).collect();
    let mut down_now = Vec::new();
    let Ok(mut slots) = inner.slots.lock() else {
        return;
    };
    slots.retain(|id, slot| {
        if slot.is_retired() {
            return false;
        }
        if wanted.contains(id) {
            return true;
        }
        let drop_now = !in_map.contains(id)
            || (!slot.in_use()
                && (slot.idle_for() >= limits.extra_link_idle
                    || slot.is_down()
                    || slot.is_draining()));
        if drop_now {
            if slot.is_down() {
                down_now.push(*id);
            }
            tracing::debug!(relay = %slot.relay, "closing a link no longer needed");
            slot.retire();
        }
        !drop_now
    });
    drop(slots);
    for id in down_now {
        inner.note_down(&id);
    }
}
