//! nullport's keys at rest and local trust: identity key files (encrypted by default), the
//! trust store of peer aliases, and (in later issues) policy, capability tokens, revocation
//! and the audit log ([`audit`]: hash-chained JSON lines with signed checkpoints).
//!
//! No async runtime and no network: plain `std::fs` at the edges only.
#![forbid(unsafe_code)]

pub mod error;
pub mod fs;
pub mod invite;
pub mod key_file;
pub mod passphrase;
pub mod policy;
pub mod revocation;
pub mod rotation;
pub mod token;
pub mod trust;
pub mod ttl;
pub mod uri;

pub use error::{Error, FormatError, KdfProblem};
pub use key_file::{KdfParams, Protection};
pub use passphrase::PassphraseSource;
pub use policy::{Decision, McpGrant, McpRules, Policy};
pub use trust::TrustStore;
