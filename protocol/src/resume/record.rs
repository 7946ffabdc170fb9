//! What a callee knows of each counter of one ticket: used or not (a replay window), and,
//! of the used ones, which took no effect (the callee did not accept that open). A dial's
//! open that names a given-up R1 is a duplicate only if that R1 was used and not undone.

use std::collections::VecDeque;

/// Counters a callee accepts behind the highest it has seen (opens racing each other
/// arrive slightly out of order).
pub const REPLAY_WINDOW: u64 = 1024;

/// What `SessionCache::burn` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Burn {
    /// The counter was unused; now it can never be.
    Burned,
    /// The counter was used (or is too old to tell): the given-up open may have reached
    /// this node.
    AlreadyUsed,
    /// No live ticket of this caller by that id.
    NotHeld,
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

/// Used counters recorded as having taken no effect, and burned ones, per ticket, each (beyond
/// that, the oldest is forgotten and counts as having taken effect: at most once before
/// availability).
const UNDONE_MAX: usize = 64;

/// The counters of one callee ticket.
#[derive(Default)]
pub(crate) struct Record {
    window: ReplayWindow,
    /// Used counters whose opens took no effect, oldest first.
    undone: VecDeque<u64>,
    /// Counters burned before any open used them (so none ever can), oldest first: a later
    /// open of the same dial may name them again.
    burned: VecDeque<u64>,
}

impl Record {
    /// Uses `counter` for an open; false for a replay (or a counter too old to tell).
    pub(crate) fn use_counter(&mut self, counter: u64) -> bool {
        self.window.check_and_set(counter)
    }

    /// Burns `counter` of a given-up open (`SessionCache::burn`).
    pub(crate) fn burn(&mut self, counter: u64) -> Burn {
        if self.window.check_and_set(counter) {
            remember(&mut self.burned, counter);
            Burn::Burned
        } else if self.undone.contains(&counter) || self.burned.contains(&counter) {
            Burn::Burned
        } else {
            Burn::AlreadyUsed
        }
    }

    /// Records that the open that used `counter` took no effect.
    pub(crate) fn undo(&mut self, counter: u64) {
        remember(&mut self.undone, counter);
    }
}

/// Adds `counter` to a bounded list of counters that took no effect (the oldest forgotten
/// beyond [`UNDONE_MAX`]: it then counts as having taken effect).
fn remember(list: &mut VecDeque<u64>, counter: u64) {
    if list.contains(&counter) {
        return;
    }
    if list.len() >= UNDONE_MAX {
        list.pop_front();
    }
    list.push_back(counter);
}
