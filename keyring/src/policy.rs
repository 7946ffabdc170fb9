//! Service policy: which peers may use which service. Default deny; enforced by the callee.
//!
//! A TOML file:
//! ```toml
//! [services.ssh]
//! allow = ["laptop", "np..."]      # trust-store aliases or NodeIds
//! ```
//! Names are resolved through the trust store when a decision is made, so trusting an alias
//! later takes effect without editing the policy.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nullport_protocol::NodeId;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::fs::write_private;
use crate::trust::TrustStore;

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    services: BTreeMap<String, ServiceRule>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceRule {
    #[serde(default)]
    allow: Vec<String>,
}

/// The node's service policy.
#[derive(Debug, Clone)]
pub struct Policy {
    path: PathBuf,
    file: PolicyFile,
}

/// Why a decision came out as it did (for logs and audit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed by the entry with this name.
    Allowed {
        /// The alias or NodeId that matched.
        rule: String,
    },
    /// No entry allows this peer for this service.
    Denied,
}

impl Policy {
    /// Loads the policy at `path`; a missing file is the empty (deny-all) policy.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let file = match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).map_err(|e| Error::TrustStore {
                path: path.to_owned(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => PolicyFile::default(),
            Err(error) => {
                return Err(Error::Io {
                    path: path.to_owned(),
                    error,
                });
            }
        };
        Ok(Self {
            path: path.to_owned(),
            file,
        })
    }

    /// Allows `peer` (alias or NodeId text) to use `service`. Returns false if already allowed.
    pub fn allow(&mut self, peer: &str, service: &str) -> bool {
        let rule = self.file.services.entry(service.to_owned()).or_default();
        if rule.allow.iter().any(|p| p == peer) {
            return false;
        }
        rule.allow.push(peer.to_owned());
        true
    }

    /// Removes `peer` from `service`'s allow list. Returns false if it was not there.
    pub fn revoke(&mut self, peer: &str, service: &str) -> bool {
        let Some(rule) = self.file.services.get_mut(service) else {
            return false;
        };
        let before = rule.allow.len();
        rule.allow.retain(|p| p != peer);
        let changed = rule.allow.len() != before;
        if rule.allow.is_empty() {
            self.file.services.remove(service);
        }
        changed
    }

    /// Decides whether `peer` may use `service`.
    pub fn decide(&self, peer: &NodeId, service: &str, trust: &TrustStore) -> Decision {
        let Some(rule) = self.file.services.get(service) else {
            return Decision::Denied;
        };
        for name in &rule.allow {
            if trust.resolve(name).ok().as_ref() == Some(peer) {
                return Decision::Allowed { rule: name.clone() };
            }
        }
        Decision::Denied
    }

    /// Every (service, allowed names) pair.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.file
            .services
            .iter()
            .map(|(s, r)| (s.as_str(), r.allow.as_slice()))
    }

    /// Writes the policy back atomically.
    pub fn save(&self) -> Result<(), Error> {
        let text = toml::to_string_pretty(&self.file).map_err(|e| Error::TrustStore {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        let text =
            format!("# nullport policy: which peers may use which service (default deny)\n{text}");
        write_private(&self.path, text.as_bytes(), true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nullport_protocol::Identity;

    #[test]
    fn default_deny_aliases_and_ids() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (a, b) = (
            Identity::from_seed([1; 32]).node_id(),
            Identity::from_seed([2; 32]).node_id(),
        );
        let mut trust =
            TrustStore::load(&dir.path().join("trust.toml")).unwrap_or_else(|e| panic!("{e}"));
        let mut policy =
            Policy::load(&dir.path().join("policy.toml")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(policy.decide(&a, "ssh", &trust), Decision::Denied);
        assert!(policy.allow("laptop", "ssh"));
        assert!(!policy.allow("laptop", "ssh"));
        assert!(policy.allow(&b.to_string(), "web"));
        // The alias is not trusted yet: still denied; once trusted, allowed.
        assert_eq!(policy.decide(&a, "ssh", &trust), Decision::Denied);
        trust
            .add("laptop", a, false)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            policy.decide(&a, "ssh", &trust),
            Decision::Allowed {
                rule: "laptop".into()
            }
        );
        assert_eq!(policy.decide(&a, "web", &trust), Decision::Denied);
        assert!(matches!(
            policy.decide(&b, "web", &trust),
            Decision::Allowed { .. }
        ));
        policy.save().unwrap_or_else(|e| panic!("{e}"));
        let mut again =
            Policy::load(&dir.path().join("policy.toml")).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            again.decide(&a, "ssh", &trust),
            Decision::Allowed { .. }
        ));
        assert!(again.revoke("laptop", "ssh"));
        assert_eq!(again.decide(&a, "ssh", &trust), Decision::Denied);
    }

    #[test]
    fn malformed_policy_names_the_line() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("policy.toml");
        std::fs::write(&path, "[services.ssh]\nallow = \"not-a-list\"\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let err = Policy::load(&path)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("line 2"), "{err}");
    }
}
