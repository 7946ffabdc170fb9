//! The audit layer's error.

use std::path::PathBuf;

/// Why the audit log could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// File I/O failed (including a full disk).
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// The disk refused a write; the entry waits in memory and is written, in order, by
    /// the next append or checkpoint that finds room. Nothing is torn.
    #[error("{path}: {queued} audit entries held in memory, not yet on disk: {reason}")]
    Backlog {
        /// The file.
        path: PathBuf,
        /// Entries waiting.
        queued: usize,
        /// The OS error.
        reason: String,
    },
    /// The disk refused writes and the backlog is full: this entry is lost; a `gap` entry
    /// with the count is written once the disk accepts writes again.
    #[error("{path}: audit entry dropped ({lost} since the backlog filled): {reason}")]
    Dropped {
        /// The file.
        path: PathBuf,
        /// Entries lost so far.
        lost: u64,
        /// The OS error.
        reason: String,
    },
    /// The existing log cannot be continued (its last whole line is not an entry).
    #[error("{path}: cannot continue the log: {reason}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}
