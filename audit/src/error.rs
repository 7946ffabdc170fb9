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
    #[error("{path}: {queued} audit entries held in memory, not yet on disk: {error}")]
    Backlog {
        /// The file.
        path: PathBuf,
        /// Entries waiting.
        queued: usize,
        /// What the OS said.
        error: std::io::ErrorKind,
    },
    /// The disk refused writes and the backlog is full: this entry is lost; a `gap` entry
    /// with the count is written once the disk accepts writes again.
    #[error("{path}: audit entry dropped ({lost} since the backlog filled): {error}")]
    Dropped {
        /// The file.
        path: PathBuf,
        /// Entries lost so far.
        lost: u64,
        /// What the OS said.
        error: std::io::ErrorKind,
    },
    /// The existing log cannot be continued (its last whole line is not an entry).
    #[error("{path}: cannot continue the log: {problem}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        problem: LogProblem,
    },
}

/// Why an existing audit log cannot be continued.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogProblem {
    /// The file holds no whole entry.
    #[error("no whole entry")]
    Empty,
    /// The last whole line is not JSON.
    #[error("last entry: {0}")]
    LastEntry(serde_json::Error),
    /// The last entry has no sequence number.
    #[error("last entry has no seq")]
    NoSeq,
}
