//! The tamper-evident audit log: JSON lines, each carrying the SHA-256 of the line before it,
//! with checkpoints signed by the node's identity.
//!
//! Line layout (field order is fixed by the writer; verification hashes the raw bytes):
//! ```text
//! {"seq":N,"ts":"RFC 3339 UTC","prev":"<hex SHA-256 of line N-1>","event":"...", ...fields}
//! {"seq":M,"ts":...,"prev":...,"event":"checkpoint","head":"<prev>","node":"np...","sig":"<hex>"}
//! ```
//! - The first line (`seq` 0, `prev` all zeros) is a `log-start` entry naming the node.
//! - A checkpoint signs `"seq:{seq}\nhead:{prev}"` under [`nullport_protocol::domain::AUDIT_CHECKPOINT_V1`];
//!   `prev` commits to every line before it through the chain.
//! - A process killed mid-append leaves a torn last line (no newline). The next writer ends it
//!   with a newline and appends a `recovery` entry naming it; verification reports it as torn,
//!   not as tampering, and the chain continues from the last whole line.
//!
//! [`verify()`] names the first bad line and why. Lines after the last checkpoint are not
//! covered by a signature: a truncated tail is only detectable against a witnessed
//! checkpoint (kept by the relay), which [`verify()`] checks when given one.
//!
//! In rooms: [`chain`] (hashing, times, the checkpoint and witness bodies, signed and
//! countersigned by node and relay alike), [`writer`] (appending, given the time), [`verify`](mod@verify),
//! [`witness`] (a relay's countersignature, checked), [`event`] (the typed events a node
//! records), [`time`] (times people give: RFC 3339 and durations).
//!
//! No async runtime and no network: `std::fs` only.
#![forbid(unsafe_code)]

pub mod chain;
mod error;
pub mod event;
pub mod time;
pub mod verify;
pub mod witness;
pub mod writer;

pub use chain::{Checkpoint, checkpoint_body, log_files, rfc3339, sha256_hex, witness_body};
pub use error::{AuditError, LogProblem};
pub use event::{ChannelOutcome, Event, NodeEvent};
pub use verify::{Problem, Report, entries, verify};
pub use writer::{AuditConfig, AuditWriter, FsyncPolicy};

#[cfg(test)]
mod tests;
