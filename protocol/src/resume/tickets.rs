//! The resumption secrets a process holds, and the replay window of each.
//!
//! A full handshake between two nodes leaves both with the same secret (derived from the
//! handshake's split keys, never sent). The caller keeps the newest one per callee; the callee
//! keeps a few per caller, each with a window of the counters already used. Everything is in
//! memory and bounded: a process that restarts has none, and its peers fall back to a full
//! handshake.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use crate::node_id::NodeId;

/// Length of a ticket id, the public name both sides give one resumption secret.
pub const TICKET_ID_LEN: usize = 16;

/// The public name of one resumption secret.
pub type TicketId = [u8; TICKET_ID_LEN];

/// A resumption secret (the Noise PSK of a resumed open).
pub(crate) type Secret = Zeroizing<[u8; 32]>;

/// Callees a caller remembers a ticket for.
const OUTGOING_ENTRIES: usize = 1024;
/// Tickets a callee remembers, over all callers.
const INCOMING_ENTRIES: usize = 4096;
/// Tickets a callee remembers per caller (a caller that ran several full handshakes at once
/// keeps only the last one it learned; the callee cannot know which, so it keeps a few).
const INCOMING_PER_CALLER: usize = 4;
/// Resumed opens one ticket allows; then the caller runs a full handshake again.
pub const MAX_RESUMPTIONS: u64 = 1 << 20;
/// Counters a callee accepts behind the highest it has seen (opens racing each other
/// arrive slightly out of order).
pub const REPLAY_WINDOW: u64 = 1024;

/// What a caller uses for one resumed open.
pub(crate) struct Lease {
    pub(crate) id: TicketId,
    pub(crate) secret: Secret,
    pub(crate) counter: u64,
}

struct Outgoing {
    id: TicketId,
    secret: Secret,
    expires: Instant,
    next: u64,
}

struct Incoming {
    caller: NodeId,
    secret: Secret,
    expires: Instant,
    window: ReplayWindow,
}

/// Counters seen, as in IPsec and WireGuard: the highest, and a bitmap of the
/// [`REPLAY_WINDOW`] below it.
#[derive(Default)]
pub(crate) struct ReplayWindow {
    top: u64,
    seen: [u64; (REPLAY_WINDOW / 64) as usize],
}

impl ReplayWindow {
    /// Records `counter`; false when it was seen before or is too old to tell.
    pub(crate) fn check_and_set(&mut self, counter: u64) -> bool {
        if counter == 0 {
            return false; // counters start at 1
        }
        if counter > self.top {
            let shift = counter - self.top;
            if shift >= REPLAY_WINDOW {
                self.seen = Default::default();
            } else {
                for _ in 0..shift {
                    self.shift_one();
                }
            }
            self.top = counter;
            self.set(0);
            return true;
        }
        let back = self.top - counter;
        if back >= REPLAY_WINDOW || self.get(back) {
            return false;
        }
        self.set(back);
        true
    }

    fn shift_one(&mut self) {
        // Bit i means "top - i was seen"; moving top up by one moves every bit up by one.
        let mut carry = 0;
        for word in &mut self.seen {
            let next = *word >> 63;
            *word = (*word << 1) | carry;
            carry = next;
        }
    }

    fn get(&self, back: u64) -> bool {
        self.seen[(back / 64) as usize] & (1 << (back % 64)) != 0
    }

    fn set(&mut self, back: u64) {
        self.seen[(back / 64) as usize] |= 1 << (back % 64);
    }
}

#[derive(Default)]
struct State {
    outgoing: HashMap<NodeId, Outgoing>,
    incoming: HashMap<TicketId, Incoming>,
    /// Incoming ticket ids in the order they were stored (oldest first), for the bound.
    incoming_order: VecDeque<TicketId>,
    per_caller: HashMap<NodeId, VecDeque<TicketId>>,
    /// When expired secrets were last dropped.
    last_sweep: Option<Instant>,
}

impl State {
    /// Drops every expired secret (zeroized as it goes), at most once per [`SWEEP_EVERY`].
    fn sweep_if_due(&mut self, now: Instant) {
        if self
            .last_sweep
            .is_some_and(|at| now.saturating_duration_since(at) < SWEEP_EVERY)
        {
            return;
        }
        self.sweep(now);
    }

    fn sweep(&mut self, now: Instant) {
        self.last_sweep = Some(now);
        self.outgoing.retain(|_, o| now < o.expires);
        let before = self.incoming.len();
        self.incoming.retain(|_, t| now < t.expires);
        if self.incoming.len() != before {
            let incoming = &self.incoming;
            self.incoming_order.retain(|id| incoming.contains_key(id));
            self.per_caller.retain(|_, ids| {
                ids.retain(|id| incoming.contains_key(id));
                !ids.is_empty()
            });
        }
    }
}

/// How often the cache drops expired secrets when it is used (a node also sweeps it on a
/// timer, so an idle process does not keep them either).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The resumption secrets of one process (shared by its handshakes, like its keys).
#[derive(Default)]
pub struct SessionCache {
    state: Mutex<State>,
}

impl std::fmt::Debug for SessionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (out, inc) = self
            .state
            .lock()
            .map(|s| (s.outgoing.len(), s.incoming.len()))
            .unwrap_or_default();
        write!(
            f,
            "SessionCache(outgoing: {out}, incoming: {inc}, secrets: ..)"
        )
    }
}

/// Which of the callee's checks a resumed open failed.
pub(crate) enum Lookup {
    /// The ticket's secret and the caller it belongs to.
    Found { caller: NodeId, secret: Secret },
    /// No such ticket (never made, expired, evicted, forgotten, or this process restarted).
    Unknown,
}

impl SessionCache {
    /// Remembers, as the caller, the secret shared with `callee` (replacing an older one).
    pub(crate) fn store_outgoing(
        &self,
        callee: NodeId,
        id: TicketId,
        secret: Secret,
        (now, expires): (Instant, Instant),
    ) {
        let Ok(mut s) = self.state.lock() else { return };
        s.sweep_if_due(now);
        if s.outgoing.len() >= OUTGOING_ENTRIES && !s.outgoing.contains_key(&callee) {
            // Drop the entry closest to expiry.
            if let Some(victim) = s
                .outgoing
                .iter()
                .min_by_key(|(_, o)| o.expires)
                .map(|(k, _)| *k)
            {
                s.outgoing.remove(&victim);
            }
        }
        s.outgoing.insert(
            callee,
            Outgoing {
                id,
                secret,
                expires,
                next: 1,
            },
        );
    }

    /// Remembers, as the callee, the secret shared with `caller`.
    pub(crate) fn store_incoming(
        &self,
        caller: NodeId,
        id: TicketId,
        secret: Secret,
        (now, expires): (Instant, Instant),
    ) {
        let Ok(mut s) = self.state.lock() else { return };
        let s = &mut *s;
        s.sweep_if_due(now);
        if s.incoming.contains_key(&id) {
            return; // cannot happen short of a hash collision; never overwrite a window
        }
        let mine = s.per_caller.entry(caller).or_default();
        if mine.len() >= INCOMING_PER_CALLER
            && let Some(old) = mine.pop_front()
        {
            s.incoming.remove(&old);
            s.incoming_order.retain(|x| *x != old);
        }
        mine.push_back(id);
        while s.incoming.len() >= INCOMING_ENTRIES {
            let Some(old) = s.incoming_order.pop_front() else {
                break;
            };
            if let Some(gone) = s.incoming.remove(&old) {
                forget_id(&mut s.per_caller, &gone.caller, &old);
            }
        }
        s.incoming_order.push_back(id);
        s.incoming.insert(
            id,
            Incoming {
                caller,
                secret,
                expires,
                window: ReplayWindow::default(),
            },
        );
    }

    /// Takes the next counter of the caller's ticket for `callee`, if it has a live one.
    pub(crate) fn lease(&self, callee: &NodeId, now: Instant) -> Option<Lease> {
        let mut s = self.state.lock().ok()?;
        s.sweep_if_due(now);
        let entry = s.outgoing.get_mut(callee)?;
        if now >= entry.expires || entry.next > MAX_RESUMPTIONS {
            s.outgoing.remove(callee);
            return None;
        }
        let counter = entry.next;
        entry.next += 1;
        Some(Lease {
            id: entry.id,
            secret: entry.secret.clone(),
            counter,
        })
    }

    /// Finds the callee's ticket `id`; an expired one is dropped and reported unknown.
    pub(crate) fn lookup(&self, id: &TicketId, now: Instant) -> Lookup {
        let Ok(mut s) = self.state.lock() else {
            return Lookup::Unknown;
        };
        let s = &mut *s;
        s.sweep_if_due(now);
        match s.incoming.get(id) {
            Some(t) if now < t.expires => Lookup::Found {
                caller: t.caller,
                secret: t.secret.clone(),
            },
            Some(t) => {
                let caller = t.caller;
                s.incoming.remove(id);
                s.incoming_order.retain(|x| x != id);
                forget_id(&mut s.per_caller, &caller, id);
                Lookup::Unknown
            }
            None => Lookup::Unknown,
        }
    }

    /// Records that the callee accepted counter `counter` of ticket `id` (after the open
    /// authenticated); false for a replay, or a ticket forgotten meanwhile.
    pub(crate) fn mark_used(&self, id: &TicketId, counter: u64) -> bool {
        let Ok(mut s) = self.state.lock() else {
            return false;
        };
        s.incoming
            .get_mut(id)
            .is_some_and(|t| t.window.check_and_set(counter))
    }

    /// Forgets the caller's ticket for `callee` (the callee no longer holds it).
    pub(crate) fn forget_outgoing(&self, callee: &NodeId) {
        if let Ok(mut s) = self.state.lock() {
            s.outgoing.remove(callee);
        }
    }

    /// Forgets every secret shared with `peer`, as caller and as callee (its key was revoked
    /// or rotated away, or it was removed from trust): its next channel needs a full
    /// handshake.
    pub fn forget(&self, peer: &NodeId) {
        let Ok(mut s) = self.state.lock() else { return };
        let s = &mut *s;
        s.outgoing.remove(peer);
        if let Some(ids) = s.per_caller.remove(peer) {
            for id in ids {
                s.incoming.remove(&id);
            }
            s.incoming_order.retain(|id| s.incoming.contains_key(id));
        }
    }

    /// Drops every secret whose lifetime is over (each zeroized as it goes). A node calls this
    /// on a timer, so that an idle process does not keep expired secrets in memory.
    pub fn sweep(&self, now: Instant) {
        if let Ok(mut s) = self.state.lock() {
            s.sweep(now);
        }
    }

    /// Forgets every secret.
    pub fn clear(&self) {
        if let Ok(mut s) = self.state.lock() {
            *s = State::default();
        }
    }

    /// Secrets held: (as caller, as callee).
    pub fn len(&self) -> (usize, usize) {
        self.state
            .lock()
            .map(|s| (s.outgoing.len(), s.incoming.len()))
            .unwrap_or_default()
    }

    /// True when no secret is held.
    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0)
    }
}

fn forget_id(per_caller: &mut HashMap<NodeId, VecDeque<TicketId>>, caller: &NodeId, id: &TicketId) {
    if let Some(ids) = per_caller.get_mut(caller) {
        ids.retain(|x| x != id);
        if ids.is_empty() {
            per_caller.remove(caller);
        }
    }
}

/// Lifetime of a resumption secret by default: channels opened later than this after the
/// full handshake run a full handshake again (and make a new secret).
pub const DEFAULT_RESUME_LIFETIME: Duration = Duration::from_secs(600);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_window_accepts_each_counter_once() {
        let mut w = ReplayWindow::default();
        assert!(!w.check_and_set(0), "0 is never valid");
        for c in [1, 3, 2, 10, 5, 4] {
            assert!(w.check_and_set(c), "{c} first time");
        }
        for c in [1, 2, 3, 4, 5, 10] {
            assert!(!w.check_and_set(c), "{c} again");
        }
        assert!(w.check_and_set(10 + REPLAY_WINDOW - 1));
        assert!(!w.check_and_set(9), "fell out of the window");
        assert!(w.check_and_set(11), "inside the window, unseen");
        assert!(w.check_and_set(5_000_000), "a jump past the window");
        assert!(!w.check_and_set(5_000_000));
        assert!(!w.check_and_set(11 + REPLAY_WINDOW), "far behind");
        assert!(w.check_and_set(5_000_000 - REPLAY_WINDOW + 1));
    }

    #[test]
    fn replay_window_matches_a_set_model() {
        // Against a plain set model: accept iff unseen and within the window of the maximum.
        let mut w = ReplayWindow::default();
        let mut seen = std::collections::BTreeSet::new();
        let mut top = 0u64;
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let c = (top + 64).saturating_sub(x % 1500).max(1);
            let expect = !seen.contains(&c) && (c > top || top - c < REPLAY_WINDOW);
            assert_eq!(w.check_and_set(c), expect, "counter {c}, top {top}");
            if expect {
                seen.insert(c);
                top = top.max(c);
            }
        }
    }

    fn secret(b: u8) -> Secret {
        Zeroizing::new([b; 32])
    }

    fn node(seed: u8) -> NodeId {
        crate::Identity::from_seed([seed; 32]).node_id()
    }

    #[test]
    fn leases_count_up_and_expire() {
        let cache = SessionCache::default();
        let now = Instant::now();
        cache.store_outgoing(
            node(2),
            [7; 16],
            secret(1),
            (now, now + Duration::from_secs(5)),
        );
        let a = cache.lease(&node(2), now).map(|l| l.counter);
        let b = cache.lease(&node(2), now).map(|l| l.counter);
        assert_eq!((a, b), (Some(1), Some(2)));
        assert!(cache.lease(&node(3), now).is_none());
        assert!(
            cache
                .lease(&node(2), now + Duration::from_secs(5))
                .is_none(),
            "expired"
        );
        assert!(cache.lease(&node(2), now).is_none(), "and dropped");
    }

    #[test]
    fn callee_keeps_a_few_tickets_per_caller_and_forgets_on_request() {
        let cache = SessionCache::default();
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        for i in 0..6u8 {
            cache.store_incoming(node(1), [i; 16], secret(i), (now, later));
        }
        cache.store_incoming(node(2), [100; 16], secret(9), (now, later));
        assert_eq!(cache.len(), (0, INCOMING_PER_CALLER + 1));
        assert!(
            matches!(cache.lookup(&[0; 16], now), Lookup::Unknown),
            "oldest evicted"
        );
        assert!(matches!(cache.lookup(&[5; 16], now), Lookup::Found { .. }));
        assert!(cache.mark_used(&[5; 16], 1));
        assert!(!cache.mark_used(&[5; 16], 1), "replay");
        cache.forget(&node(1));
        assert!(matches!(cache.lookup(&[5; 16], now), Lookup::Unknown));
        assert!(
            !cache.mark_used(&[5; 16], 2),
            "forgotten ticket marks nothing"
        );
        assert!(matches!(
            cache.lookup(&[100; 16], now),
            Lookup::Found { .. }
        ));
        assert!(
            matches!(cache.lookup(&[100; 16], later), Lookup::Unknown),
            "expired"
        );
        assert_eq!(cache.len(), (0, 0));
    }

    #[test]
    fn callee_bound_holds_over_many_callers() {
        let cache = SessionCache::default();
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        for i in 0..(INCOMING_ENTRIES + 10) {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&(i as u64).to_be_bytes());
            let mut seed = [1u8; 32];
            seed[..8].copy_from_slice(&(i as u64).to_be_bytes());
            let caller = crate::Identity::from_seed(seed).node_id();
            cache.store_incoming(caller, id, secret(1), (now, later));
        }
        assert!(cache.len().1 <= INCOMING_ENTRIES);
        let order = cache
            .state
            .lock()
            .map(|s| s.incoming_order.len())
            .unwrap_or(0);
        assert!(
            order <= INCOMING_ENTRIES,
            "{order} ids in the eviction order"
        );
    }

    #[test]
    fn one_caller_cycling_its_tickets_leaves_nothing_behind() {
        let cache = SessionCache::default();
        let now = Instant::now();
        for i in 0..20_000u64 {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&i.to_be_bytes());
            cache.store_incoming(node(1), id, secret(1), (now, now + Duration::from_secs(60)));
        }
        let s = cache.state.lock().unwrap_or_else(|e| e.into_inner());
        assert_eq!(
            (s.incoming.len(), s.incoming_order.len(), s.per_caller.len()),
            (INCOMING_PER_CALLER, INCOMING_PER_CALLER, 1)
        );
    }

    #[test]
    fn expired_secrets_are_dropped_by_a_sweep_and_by_use() {
        let cache = SessionCache::default();
        let now = Instant::now();
        let soon = now + Duration::from_millis(10);
        cache.store_outgoing(node(2), [1; 16], secret(1), (now, soon));
        cache.store_incoming(node(3), [2; 16], secret(2), (now, soon));
        assert_eq!(cache.len(), (1, 1));
        cache.sweep(soon);
        assert_eq!(cache.len(), (0, 0), "a sweep at expiry drops both");
        // Used after a second, the cache sweeps itself.
        cache.store_outgoing(node(2), [1; 16], secret(1), (now, soon));
        cache.store_incoming(node(3), [2; 16], secret(2), (now, soon));
        let later = now + Duration::from_secs(2);
        cache.store_incoming(
            node(4),
            [3; 16],
            secret(3),
            (later, later + Duration::from_secs(60)),
        );
        assert_eq!(cache.len(), (0, 1));
        let s = cache.state.lock().unwrap_or_else(|e| e.into_inner());
        assert_eq!((s.incoming_order.len(), s.per_caller.len()), (1, 1));
    }
}
