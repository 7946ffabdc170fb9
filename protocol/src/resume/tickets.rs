//! The resumption secrets a process holds, and the replay window of each.
//!
//! A full handshake between two nodes leaves both with the same secret (derived from the
//! handshake's split keys, never sent). The caller keeps the newest one per callee; the callee
//! keeps a few per caller, each with a window of the counters already used. Everything is in
//! memory and bounded: a process that restarts has none, and its peers fall back to a full
//! handshake.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zeroize::{Zeroize, Zeroizing};

pub(crate) use super::record::Burn;
use super::record::Record;
use super::retired::RetiredRecords;
use super::retired::retention;
use crate::limits::Limits;
use crate::node_id::NodeId;

pub use crate::limits::TICKET_ID_LEN;

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
/// Most callees remembered as wanting a DH in every channel.
const MAX_WANTS_DH: usize = OUTGOING_ENTRIES;
/// Resumed opens one ticket allows; then the caller runs a full handshake again.
pub const MAX_RESUMPTIONS: u64 = 1 << 20;
pub use super::record::REPLAY_WINDOW;

/// What a caller uses for one resumed open.
pub(crate) struct Lease {
    pub(crate) id: TicketId,
    pub(crate) secret: Secret,
    pub(crate) counter: u64,
    /// How long ago this side's full handshake made the secret.
    pub(crate) age: Duration,
    /// The callee said it wants a DH in every channel ([`SessionCache::wants_dh`]).
    pub(crate) dh: bool,
}

struct Outgoing {
    id: TicketId,
    secret: Secret,
    /// When the full handshake made the secret (this side's clock).
    born: Instant,
    expires: Instant,
    next: u64,
}

struct Incoming {
    caller: NodeId,
    secret: Secret,
    born: Instant,
    expires: Instant,
    record: Record,
    /// How long its record is kept once it expires or is evicted.
    retire_for: Duration,
}

#[derive(Default)]
struct State {
    outgoing: HashMap<NodeId, Outgoing>,
    incoming: HashMap<TicketId, Incoming>,
    /// Incoming ticket ids in the order they were stored (oldest first), for the bound.
    incoming_order: VecDeque<TicketId>,
    per_caller: HashMap<NodeId, VecDeque<TicketId>>,
    /// Expired and evicted tickets' records of counters.
    retired: RetiredRecords,
    /// The latest time any call gave (a node's timer sweeps every few seconds): when a
    /// record is retired, its time starts no earlier than this.
    clock: Option<Instant>,
    /// When expired secrets were last dropped.
    last_sweep: Option<Instant>,
    /// Callees that refused a keyed open because they want a DH in every channel, each
    /// until when it is remembered (at most [`MAX_WANTS_DH`], the soonest to end dropped
    /// first).
    wants_dh: HashMap<NodeId, Instant>,
}

impl State {
    /// Drops every expired secret (zeroized as it goes), at most once per [`SWEEP_EVERY`].
    fn sweep_if_due(&mut self, now: Instant) {
        self.clock = self.clock.max(Some(now));
        if self
            .last_sweep
            .is_some_and(|at| now.saturating_duration_since(at) < SWEEP_EVERY)
        {
            return;
        }
        self.sweep(now);
    }

    fn sweep(&mut self, now: Instant) {
        self.clock = self.clock.max(Some(now));
        self.last_sweep = Some(now);
        self.outgoing.retain(|_, o| now < o.expires);
        self.wants_dh.retain(|_, until| now < *until);
        let ids: Vec<TicketId> = self
            .incoming
            .iter()
            .filter(|(_, t)| now >= t.expires)
            .map(|(id, _)| *id)
            .collect();
        let expired: Vec<(TicketId, Incoming)> = ids
            .into_iter()
            .filter_map(|id| self.incoming.remove(&id).map(|t| (id, t)))
            .collect();
        if !expired.is_empty() {
            let incoming = &self.incoming;
            self.incoming_order.retain(|id| incoming.contains_key(id));
            self.per_caller.retain(|_, ids| {
                ids.retain(|id| incoming.contains_key(id));
                !ids.is_empty()
            });
            for (id, t) in expired {
                self.retire(id, t, now);
            }
        }
        self.retired.sweep(now);
    }

    /// Keeps the record of a ticket that expired or was evicted (its secret is dropped,
    /// zeroized, with `ticket`).
    fn retire(&mut self, id: TicketId, ticket: Incoming, now: Instant) {
        let Incoming {
            caller,
            record,
            retire_for,
            ..
        } = ticket;
        let from = self.clock.map_or(now, |clock| clock.max(now));
        self.retired.retire(id, caller, record, from + retire_for);
    }

    /// The record of counters of `caller`'s ticket `id`, live or retired.
    fn record_of(&mut self, caller: &NodeId, id: &TicketId, now: Instant) -> Option<&mut Record> {
        if let Some(t) = self.incoming.get_mut(id) {
            return (t.caller == *caller).then_some(&mut t.record);
        }
        self.retired.record_of(caller, id, now)
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
    /// The ticket's secret, the caller it belongs to, and how long ago this side made it.
    Found {
        caller: NodeId,
        secret: Secret,
        age: Duration,
    },
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
                born: now,
                expires,
                next: 1,
            },
        );
    }

    /// Remembers, as the callee, the secret shared with `caller`, born at `now` (when this
    /// side's message 2 left), and keeps its record of counters `retire_for` once it expires
    /// or is evicted ([`retention`]).
    pub(crate) fn store_incoming(
        &self,
        caller: NodeId,
        id: TicketId,
        secret: Secret,
        (now, expires): (Instant, Instant),
        retire_for: Duration,
    ) {
        let Ok(mut s) = self.state.lock() else { return };
        let s = &mut *s;
        s.sweep_if_due(now);
        if s.incoming.contains_key(&id) {
            return; // cannot happen short of a hash collision; never overwrite a window
        }
        let evicted = {
            let mine = s.per_caller.entry(caller).or_default();
            let old = if mine.len() >= INCOMING_PER_CALLER {
                mine.pop_front()
            } else {
                None
            };
            mine.push_back(id);
            old
        };
        if let Some(old) = evicted {
            s.incoming_order.retain(|x| *x != old);
            if let Some(gone) = s.incoming.remove(&old) {
                s.retire(old, gone, now);
            }
        }
        while s.incoming.len() >= INCOMING_ENTRIES {
            let Some(old) = s.incoming_order.pop_front() else {
                break;
            };
            if let Some(gone) = s.incoming.remove(&old) {
                forget_id(&mut s.per_caller, &gone.caller, &old);
                s.retire(old, gone, now);
            }
        }
        s.incoming_order.push_back(id);
        s.incoming.insert(
            id,
            Incoming {
                caller,
                secret,
                born: now,
                expires,
                record: Record::default(),
                retire_for,
            },
        );
    }

    /// Takes the next counter of the caller's ticket for `callee`, if it has a live one.
    pub(crate) fn lease(&self, callee: &NodeId, now: Instant) -> Option<Lease> {
        let mut s = self.state.lock().ok()?;
        s.sweep_if_due(now);
        let dh = s.wants_dh.get(callee).is_some_and(|until| now < *until);
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
            age: now.saturating_duration_since(entry.born),
            dh,
        })
    }

    /// Records that `callee` refused a keyed open because it wants a DH in every channel:
    /// this node's resumed opens to it carry one until `until` (a secret's lifetime from
    /// now), then try keyed again. The refusal is not authenticated: a relay that forges it
    /// makes this node's opens to `callee` the stronger, slower kind for that long, no more.
    /// When [`MAX_WANTS_DH`] callees are remembered, the one remembered the shortest is
    /// dropped, so a relay forging refusals for many callees cannot lock a genuine one out.
    pub(crate) fn wants_dh(&self, callee: &NodeId, now: Instant, until: Instant) {
        let Ok(mut s) = self.state.lock() else { return };
        s.wants_dh.retain(|_, end| now < *end);
        if s.wants_dh.len() >= MAX_WANTS_DH && !s.wants_dh.contains_key(callee) {
            let soonest = s
                .wants_dh
                .iter()
                .min_by_key(|(_, end)| **end)
                .map(|(id, _)| *id);
            if let Some(id) = soonest {
                s.wants_dh.remove(&id);
            }
        }
        s.wants_dh.insert(*callee, until);
    }

    /// Whether this node's resumed opens to `callee` carry a DH (it asked for one lately).
    pub fn wants_dh_for(&self, callee: &NodeId, now: Instant) -> bool {
        self.state
            .lock()
            .is_ok_and(|s| s.wants_dh.get(callee).is_some_and(|until| now < *until))
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
                age: now.saturating_duration_since(t.born),
            },
            Some(t) => {
                let caller = t.caller;
                if let Some(gone) = s.incoming.remove(id) {
                    s.retire(*id, gone, now);
                }
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
            .is_some_and(|t| t.record.use_counter(counter))
    }

    /// Records that counter `counter` of ticket `id`, used, took no effect: the callee did
    /// not accept that open (denied, dropped undecided, or its answer could not be sent).
    pub(crate) fn undo(&self, id: &TicketId, counter: u64) {
        let Ok(mut s) = self.state.lock() else { return };
        if let Some(t) = s.incoming.get_mut(id) {
            t.record.undo(counter);
        } else {
            s.retired.undo(id, counter);
        }
    }

    /// Burns counter `counter` of `caller`'s ticket `id`: the caller gave up an open under it
    /// (a relay said it failed) and names it in a later open, so that the open, if a relay
    /// delivers it after all, is refused as a replay. Says whether the counter was used
    /// already by an open that was not recorded as having taken no effect (the given-up open
    /// reached this node and was accepted or is still undecided, or it is too old to tell),
    /// or that this node holds no record of `caller`'s ticket `id` (never held, forgotten, or
    /// retired longer ago than its record is kept, [`super::retired::RETIRED_FOR`] or more: no open under it
    /// can be accepted either). Unknown ids of a caller whose records were dropped early
    /// count as used.
    pub(crate) fn burn(&self, caller: &NodeId, id: &TicketId, counter: u64, now: Instant) -> Burn {
        let Ok(mut s) = self.state.lock() else {
            // Cannot tell: count it as used (at most once before availability).
            return Burn::AlreadyUsed;
        };
        if let Some(record) = s.record_of(caller, id, now) {
            return record.burn(counter);
        }
        s.retired.unknown(caller, now)
    }

    /// Forgets this node's ticket for calling `callee` (the callee no longer holds it, or a
    /// resumed open to it failed), and nothing else: the tickets this node holds as
    /// `callee`'s callee, and their counter records, stay.
    pub fn forget_outgoing(&self, callee: &NodeId) {
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
        s.wants_dh.remove(peer);
        if let Some(ids) = s.per_caller.remove(peer) {
            for id in ids {
                s.incoming.remove(&id);
            }
            s.incoming_order.retain(|id| s.incoming.contains_key(id));
        }
        // Its opens are refused from now on anyway; nothing of it is kept.
        s.retired.forget(peer);
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

/// Derives the ticket id and secret of a finished full handshake (both sides get the same).
pub(crate) fn derive(hs: &mut snow::HandshakeState) -> Option<(TicketId, Secret)> {
    use ring::hkdf;
    struct Len(usize);
    impl hkdf::KeyType for Len {
        fn len(&self) -> usize {
            self.0
        }
    }
    let (mut k1, mut k2) = hs.dangerously_get_raw_split();
    let mut ikm = Zeroizing::new([0u8; 64]);
    ikm[..32].copy_from_slice(&k1);
    ikm[32..].copy_from_slice(&k2);
    k1.zeroize();
    k2.zeroize();
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, hs.get_handshake_hash()).extract(&ikm[..]);
    let mut secret = Zeroizing::new([0u8; 32]);
    let mut id = [0u8; TICKET_ID_LEN];
    prk.expand(&[b"nullport/resume-secret/v1"], Len(32))
        .and_then(|okm| okm.fill(&mut secret[..]))
        .ok()?;
    prk.expand(&[b"nullport/resume-id/v1"], Len(TICKET_ID_LEN))
        .and_then(|okm| okm.fill(&mut id))
        .ok()?;
    Some((id, secret))
}

/// A finished full handshake's resumption secret, not kept yet: the caller keeps it when the
/// callee accepts, the callee when it accepts (never for a denied request).
pub(crate) struct PendingTicket {
    sessions: Arc<SessionCache>,
    peer: NodeId,
    id: TicketId,
    secret: Zeroizing<[u8; 32]>,
    /// When the handshake finished, and when the secret expires.
    times: (Instant, Instant),
    outgoing: bool,
    /// How long the callee keeps its record of counters once the ticket is gone.
    retire_for: Duration,
}

impl PendingTicket {
    /// Derives it from the finished handshake `hs` with `peer` (none when resumption is
    /// off). The initiator's `hs` has written message 3; the responder's has read it.
    pub(crate) fn derive(
        hs: &mut snow::HandshakeState,
        sessions: &Arc<SessionCache>,
        peer: NodeId,
        limits: Limits,
        now: Instant,
    ) -> Option<Self> {
        if limits.resume_lifetime.is_zero() {
            return None;
        }
        let (id, secret) = derive(hs)?;
        Some(Self {
            sessions: sessions.clone(),
            peer,
            id,
            secret,
            times: (now, now + limits.resume_lifetime),
            outgoing: hs.is_initiator(),
            retire_for: retention(limits.handshake_timeout),
        })
    }

    /// Keeps the secret for resumed opens with the peer.
    pub(crate) fn keep(self) {
        if self.outgoing {
            self.sessions
                .store_outgoing(self.peer, self.id, self.secret, self.times);
        } else {
            self.sessions.store_incoming(
                self.peer,
                self.id,
                self.secret,
                self.times,
                self.retire_for,
            );
        }
    }
}

/// A resumed open the callee has not accepted: dropped without
/// [`UnacceptedOpen::accepted`] (denied, dropped undecided, or its R2 could not be sent),
/// it records that its counter took no effect, so that the dial's next open that names it
/// is not denied as a duplicate.
pub(crate) struct UnacceptedOpen {
    sessions: Arc<SessionCache>,
    id: TicketId,
    counter: u64,
    armed: bool,
}

impl UnacceptedOpen {
    pub(crate) fn new(sessions: Arc<SessionCache>, id: TicketId, counter: u64) -> Self {
        Self {
            sessions,
            id,
            counter,
            armed: true,
        }
    }

    /// The callee accepted the open: it took effect.
    pub(crate) fn accepted(mut self) {
        self.armed = false;
    }
}

impl Drop for UnacceptedOpen {
    fn drop(&mut self) {
        if self.armed {
            self.sessions.undo(&self.id, self.counter);
        }
    }
}

#[cfg(test)]
#[path = "tickets_tests.rs"]
mod tests;
