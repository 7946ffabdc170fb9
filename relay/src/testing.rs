//! Test-only hooks (feature `testing`): a tap that sees every spliced byte, tampering
//! modes, re-routing and relabelling, to prove the end-to-end layer detects a hostile relay.
//! Reachable only through [`crate::RelayConfig`], never from the binary's command line.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use nullport_protocol::{NodeId, SessionId};

/// Which way a chunk is travelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the dialing node to the dialed one.
    CallerToTarget,
    /// From the dialed node back to the caller.
    TargetToCaller,
}

/// What to do with a chunk.
#[derive(Debug, Clone, Default)]
pub struct HookOutput {
    /// Chunks to forward instead (empty: drop it).
    pub chunks: Vec<Bytes>,
    /// After forwarding them, end this direction cleanly (FIN), as a truncating relay would.
    pub finish: bool,
}

impl HookOutput {
    /// Forward these chunks.
    pub fn forward(chunks: Vec<Bytes>) -> Self {
        Self {
            chunks,
            finish: false,
        }
    }
}

/// Sees (and may change) every chunk the relay splices.
pub trait SpliceHook: Send + Sync + std::fmt::Debug {
    /// What to forward instead of `chunk`.
    fn on_chunk(&self, session: SessionId, direction: Direction, chunk: Bytes) -> HookOutput;
}

/// All test hooks; the default does nothing.
#[derive(Debug, Clone, Default)]
pub struct TestHooks {
    /// Called for every spliced chunk.
    pub splice: Option<Arc<dyn SpliceHook>>,
    /// Dials for the first NodeId are routed to the second.
    pub reroute: Option<(NodeId, NodeId)>,
    /// Targets are told this caller instead of the authenticated one.
    pub relabel_caller: Option<NodeId>,
    /// Answer `DialWith` as a relay older than it does (`Error { malformed }`).
    pub legacy_dial: bool,
}

/// Records every spliced byte.
#[derive(Debug, Default)]
pub struct Tap {
    /// Everything seen, in order of arrival, both directions.
    pub bytes: Mutex<Vec<u8>>,
}

impl SpliceHook for Tap {
    fn on_chunk(&self, _s: SessionId, _d: Direction, chunk: Bytes) -> HookOutput {
        if let Ok(mut b) = self.bytes.lock() {
            b.extend_from_slice(&chunk);
        }
        HookOutput::forward(vec![chunk])
    }
}

/// What a [`Tamper`] hook does once it reaches its byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TamperMode {
    /// Flip the lowest bit of the byte at the offset.
    FlipBit,
    /// Drop the chunk that contains the offset.
    DropChunk,
    /// Send the chunk that contains the offset twice.
    DuplicateChunk,
    /// Hold the chunk that contains the offset and send it after the next one (reorder).
    SwapWithNext,
    /// Forward bytes up to the offset, then end the stream cleanly (truncation).
    TruncateAt,
}

/// Tampers once with one direction, at a byte offset counted per session.
#[derive(Debug)]
pub struct Tamper {
    /// The direction to tamper with.
    pub direction: Direction,
    /// The byte offset (in that direction's stream) to act on.
    pub offset: u64,
    /// What to do there.
    pub mode: TamperMode,
    seen: Mutex<std::collections::HashMap<SessionId, u64>>,
    held: Mutex<Option<Bytes>>,
}

impl Tamper {
    /// A tamper hook.
    pub fn new(direction: Direction, offset: u64, mode: TamperMode) -> Self {
        Self {
            direction,
            offset,
            mode,
            seen: Mutex::new(Default::default()),
            held: Mutex::new(None),
        }
    }
}

impl SpliceHook for Tamper {
    fn on_chunk(&self, session: SessionId, direction: Direction, chunk: Bytes) -> HookOutput {
        if direction != self.direction {
            return HookOutput::forward(vec![chunk]);
        }
        if let Some(held) = self.held.lock().ok().and_then(|mut h| h.take()) {
            return HookOutput::forward(vec![chunk, held]);
        }
        let Ok(mut seen) = self.seen.lock() else {
            return HookOutput::forward(vec![chunk]);
        };
        let start = *seen.entry(session).or_insert(0);
        let end = start + chunk.len() as u64;
        seen.insert(session, end);
        if !(start..end).contains(&self.offset) {
            return HookOutput::forward(vec![chunk]);
        }
        let at = (self.offset - start) as usize;
        match self.mode {
            TamperMode::FlipBit => {
                let mut v = chunk.to_vec();
                v[at] ^= 1;
                HookOutput::forward(vec![Bytes::from(v)])
            }
            TamperMode::DropChunk => HookOutput::default(),
            TamperMode::DuplicateChunk => HookOutput::forward(vec![chunk.clone(), chunk]),
            TamperMode::SwapWithNext => {
                if let Ok(mut h) = self.held.lock() {
                    *h = Some(chunk);
                }
                HookOutput::default()
            }
            TamperMode::TruncateAt => HookOutput {
                chunks: vec![chunk.slice(..at)],
                finish: true,
            },
        }
    }
}
