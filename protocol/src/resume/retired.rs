//! The records of counters of a callee's tickets that expired or were evicted: their secrets
//! are gone (no open under them can be accepted), but for a while a dial's open that names a
//! given-up R1 under one still learns whether that R1 took effect.
//!
//! Bounded per caller and in all; a record dropped before its time leaves a mark on its
//! caller (and, if marks overflow, on everyone) until that time, during which a given-up R1
//! under an unknown ticket of that caller counts as having taken effect: one peer's churn
//! can cost another a false duplicate, never a second effect.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::record::{Burn, Record};
use crate::limits::TICKET_ID_LEN;
use crate::node_id::NodeId;

type TicketId = [u8; TICKET_ID_LEN];

/// How long a retired record is kept at least: longer than one dial's opens take (each is
/// bounded by the handshake deadline; a fleet dial tries a few relays). Longer with a longer
/// handshake deadline ([`retention`]).
pub(crate) const RETIRED_FOR: Duration = Duration::from_secs(120);
/// Retired records kept per caller (its own churn drops its own oldest first).
const PER_CALLER: usize = 8;
/// Retired records kept in all.
const ALL: usize = 4096;
/// Callers marked at once; beyond that, the mark is on everyone.
const MARKS: usize = 4096;

/// How long to keep a retired record, for a handshake deadline of `handshake_timeout`.
pub(crate) fn retention(handshake_timeout: Duration) -> Duration {
    RETIRED_FOR.max(handshake_timeout.saturating_mul(12))
}

struct Retired {
    caller: NodeId,
    record: Record,
    until: Instant,
}

/// The retired records of one process's callee tickets.
#[derive(Default)]
pub(crate) struct RetiredRecords {
    records: HashMap<TicketId, Retired>,
    /// Oldest first.
    order: VecDeque<TicketId>,
    per_caller: HashMap<NodeId, VecDeque<TicketId>>,
    /// Callers whose records were dropped early, until when.
    marks: HashMap<NodeId, Instant>,
    /// Everyone, until when (the marks overflowed).
    everyone: Option<Instant>,
}

impl RetiredRecords {
    /// Keeps `record` of `caller`'s ticket `id` until `until`.
    pub(crate) fn retire(&mut self, id: TicketId, caller: NodeId, record: Record, until: Instant) {
        if self
            .records
            .insert(
                id,
                Retired {
                    caller,
                    record,
                    until,
                },
            )
            .is_some()
        {
            return; // cannot happen short of a hash collision
        }
        self.order.push_back(id);
        let mine = self.per_caller.entry(caller).or_default();
        mine.push_back(id);
        let own_oldest = if mine.len() > PER_CALLER {
            mine.pop_front()
        } else {
            None
        };
        if let Some(old) = own_oldest {
            self.drop_early(&old);
        }
        while self.records.len() > ALL {
            let Some(old) = self.order.front().copied() else {
                break;
            };
            self.drop_early(&old);
        }
    }

    /// Drops a record before its time, marking its caller.
    fn drop_early(&mut self, id: &TicketId) {
        self.order.retain(|x| x != id);
        let Some(gone) = self.records.remove(id) else {
            return;
        };
        if let Some(ids) = self.per_caller.get_mut(&gone.caller) {
            ids.retain(|x| x != id);
            if ids.is_empty() {
                self.per_caller.remove(&gone.caller);
            }
        }
        if self.marks.len() >= MARKS && !self.marks.contains_key(&gone.caller) {
            self.everyone = self.everyone.max(Some(gone.until));
            return;
        }
        let mark = self.marks.entry(gone.caller).or_insert(gone.until);
        *mark = (*mark).max(gone.until);
    }

    /// The record of `caller`'s retired ticket `id`.
    pub(crate) fn record_of(
        &mut self,
        caller: &NodeId,
        id: &TicketId,
        now: Instant,
    ) -> Option<&mut Record> {
        self.records
            .get_mut(id)
            .filter(|r| r.caller == *caller && now < r.until)
            .map(|r| &mut r.record)
    }

    /// What burning a counter of `caller`'s ticket that this process holds no record of
    /// means: nothing to burn, unless a record of `caller` was dropped early and could have
    /// been this one.
    pub(crate) fn unknown(&self, caller: &NodeId, now: Instant) -> Burn {
        let marked = self.marks.get(caller).is_some_and(|until| now < *until)
            || self.everyone.is_some_and(|until| now < until);
        if marked {
            Burn::AlreadyUsed
        } else {
            Burn::NotHeld
        }
    }

    /// Records that `counter` of retired ticket `id` took no effect.
    pub(crate) fn undo(&mut self, id: &TicketId, counter: u64) {
        if let Some(r) = self.records.get_mut(id) {
            r.record.undo(counter);
        }
    }

    /// Drops what is past its time.
    pub(crate) fn sweep(&mut self, now: Instant) {
        self.records.retain(|_, r| now < r.until);
        let records = &self.records;
        self.order.retain(|id| records.contains_key(id));
        self.per_caller.retain(|_, ids| {
            ids.retain(|id| records.contains_key(id));
            !ids.is_empty()
        });
        self.marks.retain(|_, until| now < *until);
        if self.everyone.is_some_and(|until| now >= until) {
            self.everyone = None;
        }
    }

    /// Forgets everything of `caller` (its opens are refused from now on anyway).
    pub(crate) fn forget(&mut self, caller: &NodeId) {
        if let Some(ids) = self.per_caller.remove(caller) {
            for id in ids {
                self.records.remove(&id);
            }
            let records = &self.records;
            self.order.retain(|id| records.contains_key(id));
        }
        self.marks.remove(caller);
    }
}
