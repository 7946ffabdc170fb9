//! Changes to who may use what, in one place for every way of making them (the CLI, the
//! console): checked, written, and then the daemon reloads.

use nullport_keyring::{Policy, TrustStore};
use nullport_protocol::NodeId;

use crate::home::Home;

/// Why a change was not made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EditError {
    /// A file could not be read, checked or written.
    #[error(transparent)]
    Keyring(#[from] nullport_keyring::Error),
    /// Not a service name.
    #[error("invalid service name {0:?}: use 1-64 of A-Z a-z 0-9 . _ -")]
    BadService(String),
    /// Nothing lets the peer use the service.
    #[error("no rule lets {peer} use {service} (see `nullport mcp show` and {policy})")]
    NoRule {
        /// The peer.
        peer: String,
        /// The service.
        service: String,
        /// The policy file.
        policy: String,
    },
}

/// Lets `peer` (an alias or NodeId) use `service`; returns its NodeId and whether the rule
/// is new.
pub fn allow(home: &Home, peer: &str, service: &str) -> Result<(NodeId, bool), EditError> {
    nullport_protocol::ServiceName::new(service)
        .map_err(|_| EditError::BadService(service.to_owned()))?;
    let trust = TrustStore::load(&home.trust())?;
    let id = trust.resolve(peer)?;
    let mut policy = Policy::load(&home.policy())?;
    let added = policy.allow(peer, service);
    policy.save()?;
    Ok((id, added))
}

/// Takes back every rule that lets `peer` use `service` (allow entries and MCP rules);
/// returns what was removed.
pub fn deny(home: &Home, peer: &str, service: &str) -> Result<Vec<String>, EditError> {
    let trust = TrustStore::load(&home.trust())?;
    let mut policy = Policy::load(&home.policy())?;
    let removed = policy.withdraw(peer, service, &trust);
    if removed.is_empty() {
        return Err(EditError::NoRule {
            peer: peer.to_owned(),
            service: service.to_owned(),
            policy: home.policy().display().to_string(),
        });
    }
    policy.save()?;
    Ok(removed)
}
