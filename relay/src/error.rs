//! The relay layer's error.

use std::path::PathBuf;

/// What can go wrong starting or running the relay.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Building the TLS configuration failed.
    #[error("TLS setup: {0}")]
    Tls(String),
    /// Binding or using a socket failed.
    #[error("{what}: {error}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        error: std::io::Error,
    },
    /// The allowlist file is invalid.
    #[error("{path}:{line}: {reason}")]
    AllowList {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The relay's state directory could not be read or written.
    #[error("state: {0}")]
    State(String),
    /// A key file could not be used.
    #[error(transparent)]
    Key(#[from] nullport_keyring::Error),
}
