//! nullport's keys at rest, local trust and authorization, grouped by concept:
//!
//! - [`keys`]: identity key files (encrypted by default), passphrases, private files;
//! - [`trust`]: the trust store of peer aliases;
//! - [`authz`]: the callee's policy, capability tokens, and the one [`authz::pattern`] type
//!   their rule lists match with (name globs, resource URI prefixes);
//! - [`statements`]: signed statements that travel through the relay: revocation lists, key
//!   rotations, invites.
//!
//! No async runtime and no network: plain `std::fs` at the edges only.
#![forbid(unsafe_code)]

pub mod authz;
pub mod error;
pub mod keys;
pub mod statements;
pub mod trust;

pub use authz::{args, calls, pattern, policy, token, ttl, uri};
pub use error::{Error, FormatError, KdfProblem};
pub use keys::{fs, key_file, passphrase};
pub use statements::{invite, relay_map, revocation, rotation};

pub use calls::{Admitted, CallGate, CallGrant, CallRefused};
pub use key_file::{KdfParams, Protection};
pub use passphrase::PassphraseSource;
pub use policy::{Decision, McpGrant, McpRules, Policy, RpcRules};
pub use trust::TrustStore;
