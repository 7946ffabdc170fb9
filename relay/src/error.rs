//! The relay layer's error.

use std::path::PathBuf;

/// What can go wrong starting or running the relay.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Building the TLS configuration failed.
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
    /// QUIC does not accept the TLS configuration.
    #[error("QUIC TLS setup: {0}")]
    QuicTls(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    /// Binding or using a socket failed.
    #[error("{what}: {error}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        error: std::io::Error,
    },
    /// The allowlist file is invalid.
    #[error("{path}:{line}: {entry:?}: {error}")]
    AllowList {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The entry.
        entry: String,
        /// What is wrong with it.
        error: nullport_protocol::NodeIdError,
    },
    /// The relay's state directory could not be read or written.
    #[error("state: {0}")]
    State(Box<StateError>),
    /// A key file could not be used.
    #[error(transparent)]
    Key(#[from] nullport_keyring::Error),
    /// A relay map that this relay will not hand out: malformed, forged, older than the one
    /// it holds, or not listing this relay.
    #[error("relay map refused: {0}")]
    RelayMap(String),
    /// The state store (`--store`) could not be opened or could not answer.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<StateError> for Error {
    fn from(e: StateError) -> Self {
        Error::State(Box::new(e))
    }
}

/// Why a file of the relay's state directory could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// Reading or writing the file failed.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// The file is not the JSON it should be.
    #[error("{path}: {error}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        error: serde_json::Error,
    },
    /// A signed statement in the file does not verify.
    #[error("{path}: {error}")]
    Signature {
        /// The file.
        path: PathBuf,
        /// Why it does not verify.
        error: nullport_keyring::revocation::RevocationError,
    },
    /// Writing the file privately (owner-only, atomically) failed.
    #[error(transparent)]
    Write(nullport_keyring::Error),
    /// The network admin's list is signed by another key than the relay's.
    #[error("{path}: signed by {signer}, not by this relay's key {admin}")]
    WrongSigner {
        /// The file.
        path: PathBuf,
        /// Who signed it.
        signer: nullport_protocol::NodeId,
        /// The relay's key.
        admin: nullport_protocol::NodeId,
    },
    /// The blocking task reading or writing the state died.
    #[error("state task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Why the state store (`--store`) could not decide or could not be opened.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The shared store did not answer in time or refused to (etcd without quorum, or
    /// unreachable). Decisions that need it fail closed.
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    /// The `--store` value does not parse.
    #[error("--store {spec:?}: {why}")]
    Spec {
        /// The value given.
        spec: String,
        /// What is wrong with it.
        why: String,
    },
    /// `--store etcd://...` on a relay built without etcd support.
    #[error(
        "--store etcd://...: this nullport-relay was built without the `etcd` cargo feature \
         (build it with `cargo build -p nullport-relay --features etcd`)"
    )]
    NotBuilt,
}
