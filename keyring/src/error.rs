//! The keyring layer's error.

use std::path::PathBuf;

/// What can go wrong loading or storing keys and the trust store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// The file exists and overwriting was not asked for.
    #[error("{path} already exists (refusing to overwrite a key)")]
    AlreadyExists {
        /// The file.
        path: PathBuf,
    },
    /// The key file can be read by other users.
    #[error(
        "{path} has permissions {mode:o}; a secret file (key, passphrase, token) must be 0600 (run: chmod 600 {path})"
    )]
    LoosePermissions {
        /// The file.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// A secret file belongs to another user than the one running nullport.
    #[error(
        "{path} belongs to uid {owner}, not to uid {euid} running nullport; refusing a secret another user controls (run: chown {euid} {path})"
    )]
    ForeignOwner {
        /// The file.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The effective uid of this process.
        euid: u32,
    },
    /// A private directory (a node's home) is open to other users or owned by another.
    #[error(
        "{path} must be a directory of uid {euid} closed to others (mode 700), but it is mode {mode:o} owned by uid {owner} (run: {})",
        if owner == euid { format!("chmod 700 {}", path.display()) } else { format!("chown {euid} {} && chmod 700 {}", path.display(), path.display()) }
    )]
    LooseDirectory {
        /// The directory.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
        /// Its owner.
        owner: u32,
        /// The effective uid of this process.
        euid: u32,
    },
    /// Not a nullport key file (wrong magic).
    #[error("{path} is not a nullport key file")]
    NotAKeyFile {
        /// The file.
        path: PathBuf,
    },
    /// A key file version this build does not understand.
    #[error("{path}: unsupported key file version {version}")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version byte.
        version: u8,
    },
    /// The file ends early.
    #[error("{path} is truncated ({len} bytes)")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
    /// The file has bytes after its end, or an unknown kind, or an inconsistent key.
    #[error("{path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
    /// The key derivation parameters are below the floor or above the ceiling.
    #[error("{path}: key derivation parameters refused: {problem}")]
    KdfParams {
        /// The file.
        path: PathBuf,
        /// Which bound, or what the KDF said.
        problem: KdfProblem,
    },
    /// Wrong passphrase, or the encrypted file was altered: the two are indistinguishable
    /// on purpose.
    #[error("{path}: wrong passphrase, or the key file was altered")]
    DecryptFailed {
        /// The file.
        path: PathBuf,
    },
    /// The key is encrypted and no passphrase was given.
    #[error("{path} is encrypted: a passphrase is needed")]
    PassphraseRequired {
        /// The file.
        path: PathBuf,
    },
    /// The passphrase could not be obtained.
    #[error("{0}")]
    PassphraseUnavailable(crate::passphrase::PassphraseProblem),
    /// A new passphrase is too short.
    #[error(
        "passphrase too short: use at least {min} characters (or --insecure-plaintext-key to store the key unencrypted)"
    )]
    PassphraseTooShort {
        /// The minimum, in characters.
        min: usize,
    },
    /// An empty passphrase was given for a new key.
    #[error("empty passphrase (use the plaintext opt-out explicitly if that is what you want)")]
    EmptyPassphrase,
    /// A trust store, policy or revocation file is not valid (or could not be rendered).
    #[error("{path}: {error}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong (the parser's error, with line and column where known).
        error: FormatError,
    },
    /// Text that looks like a NodeId but is not a valid one.
    #[error("{text:?} is not a valid NodeId: {error}")]
    BadNodeId {
        /// The text.
        text: String,
        /// What is wrong.
        error: nullport_protocol::NodeIdError,
    },
    /// An alias is not in the trust store and is not a NodeId either.
    #[error("unknown peer {name:?}: not a NodeId and not an alias in the trust store")]
    UnknownAlias {
        /// The name.
        name: String,
    },
    /// An alias with characters outside `[A-Za-z0-9._-]`, longer than 64, or starting with
    /// `np` in any case (it would read as a NodeId).
    #[error(
        "invalid alias {name:?}: use 1-64 characters of A-Z a-z 0-9 . _ -, not starting with \"np\" in any case"
    )]
    InvalidAlias {
        /// The alias.
        name: String,
    },
    /// The alias already names another NodeId.
    #[error(
        "alias {name:?} already names {existing} (pass --replace to point it at the new NodeId)"
    )]
    AliasTaken {
        /// The alias.
        name: String,
        /// What it names now.
        existing: nullport_protocol::NodeId,
    },
    /// Operating-system randomness failed.
    #[error("randomness unavailable")]
    Random,
}

/// Why a file's text could not be read as (or written from) its format.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// TOML that does not parse, or does not fit the file's schema.
    #[error(transparent)]
    Toml(Box<toml::de::Error>),
    /// A value TOML cannot represent.
    #[error(transparent)]
    TomlWrite(#[from] toml::ser::Error),
    /// JSON that does not parse, or does not fit the file's schema.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// What is wrong with key derivation parameters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KdfProblem {
    /// A parameter outside the allowed range.
    #[error("{name} = {value}, allowed {min}..={max}")]
    OutOfBounds {
        /// Which parameter.
        name: &'static str,
        /// Its value.
        value: u32,
        /// The floor.
        min: u32,
        /// The ceiling.
        max: u32,
    },
    /// Argon2 refused them.
    #[error("argon2: {0}")]
    Argon2(argon2::Error),
}

impl From<toml::de::Error> for FormatError {
    fn from(e: toml::de::Error) -> Self {
        FormatError::Toml(Box::new(e))
    }
}
