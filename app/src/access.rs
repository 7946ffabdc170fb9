//! The daemon's access decision, in one place and pure: a snapshot ([`Access`]) of what
//! grants and takes away access (exposed services, policy, trust store, revocation lists,
//! retired keys, settings) and one function over it, [`Access::decide`]: (caller, service,
//! presented tokens, now, channels open) -> a [`Grant`] or a typed [`Refusal`].
//!
//! The same function decides a new channel and re-checks every live one whenever the
//! snapshot changes (a reload, a revocation list, a rotation, `deny`, `unexpose`) and when a
//! token it rests on expires, so taking access away is the same code path as granting it.

use std::collections::BTreeMap;

use nullport_keyring::revocation::RevocationSet;
use nullport_keyring::{Decision, McpGrant, Policy, TrustStore};
use nullport_protocol::{DenyReason, NodeId};

use crate::config_file::Service;
use crate::tokens::{self, Presented};

/// Rotations followed back or forth at most (a longer chain is cut there).
const MAX_LINEAGE: usize = 16;

/// Settings of the decision that are not policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessSettings {
    /// Clock tolerance for token validity, in seconds.
    pub token_skew_secs: u64,
    /// Channels one caller may have open to this node at once.
    pub max_channels_per_caller: usize,
    /// Incoming channels open at once, all callers together. Kept below the streams the
    /// relay may open to this node, so that a caller at its cap leaves room for others.
    pub max_channels: usize,
}

impl Default for AccessSettings {
    fn default() -> Self {
        Self {
            token_skew_secs: 60,
            max_channels_per_caller: 32,
            max_channels: 192,
        }
    }
}

impl From<&crate::config_file::AccessTable> for AccessSettings {
    /// The settings `[access]` in config.toml gives, defaults filled in.
    fn from(t: &crate::config_file::AccessTable) -> Self {
        let d = AccessSettings::default();
        AccessSettings {
            token_skew_secs: t.token_skew_secs.unwrap_or(d.token_skew_secs),
            max_channels_per_caller: t
                .max_channels_per_caller
                .unwrap_or(d.max_channels_per_caller),
            max_channels: t.max_channels.unwrap_or(d.max_channels),
        }
    }
}

/// Channels open now (for the caps).
#[derive(Debug, Clone, Copy, Default)]
pub struct Load {
    /// Incoming channels this caller has open.
    pub caller: usize,
    /// Incoming channels open in total.
    pub total: usize,
}

/// What a channel was granted on.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The service.
    pub service: Service,
    /// How to name the rule in logs and the audit trail.
    pub rule: String,
    /// The capability token it rests on, if any.
    pub token: Option<Presented>,
    /// When the grant ends by itself (a token's earliest expiry, Unix seconds, before skew).
    pub expires: Option<u64>,
}

/// Why a channel is refused, or a live one ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// No such service is exposed.
    #[error("service not exposed")]
    NotExposed,
    /// The caller's key was rotated away.
    #[error("the caller's key was retired by a rotation")]
    KeyRetired,
    /// The caller's key is revoked by a list that applies here.
    #[error("the caller's key is revoked (list of {signer})")]
    KeyRevoked {
        /// The list's signer.
        signer: NodeId,
    },
    /// The presented token does not verify (or does not cover this).
    #[error("capability token refused: {0}")]
    Token(nullport_keyring::token::TokenError),
    /// A token in the chain, or a key in it, is revoked.
    #[error("capability token revoked (list of {signer})")]
    TokenRevoked {
        /// The list's signer.
        signer: NodeId,
    },
    /// No policy rule allows this caller.
    #[error("no policy rule allows this caller (nullport allow <caller> <service>)")]
    NoRule,
    /// The caller has as many channels open as it may.
    #[error("the caller has {open} channels open, the most one caller may have")]
    CallerFull {
        /// Open now.
        open: usize,
    },
    /// This node has as many incoming channels open as it serves.
    #[error("{open} incoming channels open, the most this node serves")]
    NodeFull {
        /// Open now.
        open: usize,
    },
}

impl Refusal {
    /// The reason code the caller sees (in a deny verdict, or an abort of a live channel).
    pub fn reason(&self) -> DenyReason {
        use nullport_keyring::token::TokenError;
        match self {
            Refusal::NotExposed => DenyReason::UnknownService,
            Refusal::KeyRetired | Refusal::KeyRevoked { .. } | Refusal::TokenRevoked { .. } => {
                DenyReason::Revoked
            }
            Refusal::Token(TokenError::Expired { .. }) => DenyReason::Expired,
            Refusal::Token(_) => DenyReason::BadToken,
            Refusal::NoRule => DenyReason::NotAllowed,
            Refusal::CallerFull { .. } | Refusal::NodeFull { .. } => DenyReason::RateLimited,
        }
    }
}

/// A snapshot of everything the access decision reads.
#[derive(Debug, Clone)]
pub struct Access {
    /// This node.
    pub me: NodeId,
    /// Exposed services.
    pub services: BTreeMap<String, Service>,
    /// The policy.
    pub policy: Policy,
    /// The trust store (aliases).
    pub trust: TrustStore,
    /// Revocation lists held.
    pub revocations: RevocationSet,
    /// Rotations followed, old key -> new key. The old keys are refused for good; a key
    /// inherits the revocations of the keys it was rotated from, and the lists of a signer
    /// keep applying under the keys it rotated to.
    pub rotations: BTreeMap<NodeId, NodeId>,
    /// Settings.
    pub settings: AccessSettings,
}

impl Access {
    /// The decision for `peer` opening `service` with `blob` (capability tokens; empty: none)
    /// at `now` (Unix seconds), with `load` channels open.
    pub fn decide(
        &self,
        peer: &NodeId,
        service: &str,
        blob: &[u8],
        now: u64,
        load: Load,
    ) -> Result<Grant, Refusal> {
        let grant = self.recheck(peer, service, blob, now)?;
        if load.caller >= self.settings.max_channels_per_caller {
            return Err(Refusal::CallerFull { open: load.caller });
        }
        if load.total >= self.settings.max_channels {
            return Err(Refusal::NodeFull { open: load.total });
        }
        Ok(grant)
    }

    /// The decision without the caps: whether a live channel may go on.
    pub fn recheck(
        &self,
        peer: &NodeId,
        service: &str,
        blob: &[u8],
        now: u64,
    ) -> Result<Grant, Refusal> {
        let spec = self.services.get(service).ok_or(Refusal::NotExposed)?;
        if self.rotations.contains_key(peer) {
            return Err(Refusal::KeyRetired);
        }
        if let Some(signer) = self.key_revoked(peer, service) {
            return Err(Refusal::KeyRevoked { signer });
        }
        if blob.is_empty() {
            return match self.policy.decide(peer, service, &self.trust) {
                Decision::Allowed { rule } => Ok(Grant {
                    service: spec.clone(),
                    rule,
                    token: None,
                    expires: None,
                }),
                Decision::Denied => Err(Refusal::NoRule),
            };
        }
        let presented = tokens::check(
            blob,
            peer,
            &self.me,
            service,
            &self.policy,
            &self.trust,
            now,
            self.settings.token_skew_secs,
        )
        .map_err(Refusal::Token)?;
        for link in &presented.token.links {
            let revoked = self
                .revocations
                .token_revoked_by(link.body.id)
                .find(|s| self.applies(s, service))
                .or_else(|| self.key_revoked(&link.body.issuer, service))
                .or_else(|| self.key_revoked(&link.body.holder, service));
            if let Some(signer) = revoked {
                return Err(Refusal::TokenRevoked { signer });
            }
        }
        let expires = presented.token.links.iter().map(|l| l.body.expires).min();
        Ok(Grant {
            service: spec.clone(),
            rule: presented.rule.clone(),
            token: Some(presented),
            expires,
        })
    }

    /// What the MCP firewall enforces for this caller now (None: nothing any more).
    pub fn mcp_grant(
        &self,
        peer: &NodeId,
        service: &str,
        blob: &[u8],
        now: u64,
    ) -> Option<McpGrant> {
        let grant = self.recheck(peer, service, blob, now).ok()?;
        if let Some(presented) = &grant.token {
            return Some(tokens::grant(presented, &self.policy, &self.trust, service));
        }
        self.policy
            .mcp_grant(peer, service, &self.trust)
            .or(Some(McpGrant {
                rule: grant.rule,
                rules: Default::default(),
                approve: Vec::new(),
            }))
    }

    /// `key` and the keys it was rotated from, newest first (bounded).
    fn with_predecessors(&self, key: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        std::iter::successors(Some(key), move |k| {
            self.rotations
                .iter()
                .find(|(_, new)| *new == k)
                .map(|(old, _)| *old)
        })
        .take(MAX_LINEAGE)
    }

    /// `signer` and the keys it rotated to, oldest first (bounded).
    fn with_successors(&self, signer: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        std::iter::successors(Some(signer), move |k| self.rotations.get(k).copied())
            .take(MAX_LINEAGE)
    }

    /// The signer of a list that applies here and revokes `key` (or a key it was rotated
    /// from: revocation follows rotations) for `service`.
    pub fn key_revoked(&self, key: &NodeId, service: &str) -> Option<NodeId> {
        self.with_predecessors(*key).find_map(|k| {
            self.revocations
                .key_revoked_by(k)
                .find(|s| self.applies(s, service))
        })
    }

    /// Whether `key` (or a key it was rotated from) is revoked by a list that applies to
    /// everything here: this node's own, or a node-wide signer's. A rotation from or to such
    /// a key is not followed; a revocation scoped to one service follows the rotation
    /// instead (the new key inherits it).
    pub fn key_revoked_everywhere(&self, key: &NodeId) -> Option<NodeId> {
        self.with_predecessors(*key).find_map(|k| {
            self.revocations
                .key_revoked_by(k)
                .find(|s| self.applies_everywhere(s))
        })
    }

    /// Whether a list signed by `signer` (or by a key that rotated to it) applies to
    /// `service` here.
    pub fn applies(&self, signer: &NodeId, service: &str) -> bool {
        self.with_successors(*signer).any(|s| {
            self.policy
                .revocation_applies(&s, service, &self.me, &self.trust)
        })
    }

    /// Whether a list signed by `signer` applies to everything here.
    fn applies_everywhere(&self, signer: &NodeId) -> bool {
        self.with_successors(*signer).any(|s| {
            s == self.me
                || self
                    .policy
                    .global_revocation_signers(&self.trust)
                    .contains(&s)
        })
    }

    /// Whether lists signed by `signer` are kept here (they apply to something).
    pub fn keeps_lists_of(&self, signer: &NodeId) -> bool {
        self.with_successors(*signer)
            .any(|s| s == self.me || self.policy.revocation_signers(&self.trust).contains(&s))
    }

    /// What a list signed by `signer` applies to here, in words (None: nothing).
    pub fn scope_of(&self, signer: &NodeId) -> Option<String> {
        let lineage: Vec<NodeId> = self.with_successors(*signer).collect();
        let rotated = if lineage.len() > 1 {
            " (signed by a key since rotated)"
        } else {
            ""
        };
        if lineage.contains(&self.me) {
            return Some(format!("everything (this node's own list){rotated}"));
        }
        let global = self.policy.global_revocation_signers(&self.trust);
        if lineage.iter().any(|s| global.contains(s)) {
            return Some(format!(
                "everything (a node-wide revocation signer){rotated}"
            ));
        }
        let services: Vec<&str> = self
            .services
            .keys()
            .map(String::as_str)
            .filter(|svc| {
                let issuers = self.policy.token_issuers(svc, &self.trust);
                lineage.iter().any(|s| issuers.contains(s))
            })
            .collect();
        (!services.is_empty())
            .then(|| format!("tokens and keys for {}{rotated}", services.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config_file::ServiceSpec;
    use nullport_keyring::revocation::RevocationList;
    use nullport_keyring::token::{Scope, Token};
    use nullport_protocol::Identity;
    use std::path::Path;

    fn id(seed: u8) -> Identity {
        Identity::from_seed([seed; 32])
    }

    /// This node (1) exposes `files` and `ssh`; `admin` (2) issues tokens for `files`;
    /// `alice` (3) may use `ssh`; `bob` (4) holds tokens.
    fn access(policy: &str) -> Access {
        let trust = TrustStore::parse(
            Path::new("trust.toml"),
            &format!(
                "[peers]\nadmin = \"{}\"\nalice = \"{}\"\nbob = \"{}\"\n",
                id(2).node_id(),
                id(3).node_id(),
                id(4).node_id()
            ),
        )
        .unwrap();
        let mut services = BTreeMap::new();
        services.insert(
            "ssh".into(),
            Service::new(ServiceSpec::Tcp("127.0.0.1:22".into())),
        );
        services.insert(
            "files".into(),
            Service::new(ServiceSpec::Exec(vec!["cat".into()])),
        );
        Access {
            me: id(1).node_id(),
            services,
            policy: Policy::parse(Path::new("policy.toml"), policy).unwrap(),
            trust,
            revocations: RevocationSet::default(),
            rotations: BTreeMap::new(),
            settings: AccessSettings::default(),
        }
    }

    const POLICY: &str =
        "[services.ssh]\nallow = [\"alice\"]\n[tokens.files]\nissuers = [\"admin\"]\n";

    fn revoke(a: &mut Access, signer: &Identity, keys: Vec<NodeId>, tokens: Vec<[u8; 16]>) {
        let version = a.revocations.version_of(&signer.node_id()) + 1;
        let list = RevocationList {
            signer: signer.node_id(),
            version,
            issued: 0,
            keys,
            tokens,
        }
        .sign(signer);
        a.revocations.apply(&list, |_| true).unwrap();
    }

    fn token(expires: u64) -> Token {
        Token::issue(
            &id(2),
            id(4).node_id(),
            None,
            "files",
            Scope::default(),
            0,
            expires,
        )
        .unwrap()
    }

    #[test]
    fn policy_grants_and_every_way_of_taking_it_away() {
        let alice = id(3).node_id();
        let mut a = access(POLICY);
        assert_eq!(
            a.decide(&alice, "ssh", &[], 0, Load::default())
                .map(|g| g.rule),
            Ok("alice".into())
        );
        assert_eq!(
            a.decide(&alice, "web", &[], 0, Load::default()).err(),
            Some(Refusal::NotExposed)
        );
        assert_eq!(
            a.decide(&id(4).node_id(), "ssh", &[], 0, Load::default())
                .err(),
            Some(Refusal::NoRule)
        );
        // Caps.
        let full = Load {
            caller: 32,
            total: 0,
        };
        assert_eq!(
            a.decide(&alice, "ssh", &[], 0, full).err(),
            Some(Refusal::CallerFull { open: 32 })
        );
        assert!(
            a.recheck(&alice, "ssh", &[], 0).is_ok(),
            "caps do not end live channels"
        );
        // A token issuer for `files` may not revoke alice's ssh access...
        revoke(&mut a, &id(2), vec![alice], vec![]);
        assert!(a.decide(&alice, "ssh", &[], 0, Load::default()).is_ok());
        // ...but this node's own list may.
        revoke(&mut a, &id(1), vec![alice], vec![]);
        assert_eq!(
            a.decide(&alice, "ssh", &[], 0, Load::default()).err(),
            Some(Refusal::KeyRevoked {
                signer: id(1).node_id()
            })
        );
        let mut b = access(POLICY);
        b.rotations.insert(alice, id(9).node_id());
        assert_eq!(
            b.decide(&alice, "ssh", &[], 0, Load::default()).err(),
            Some(Refusal::KeyRetired)
        );
        let c = access("[services.web]\nallow = [\"alice\"]\n");
        assert_eq!(
            c.recheck(&alice, "ssh", &[], 0).err(),
            Some(Refusal::NoRule)
        );
    }

    #[test]
    fn tokens_expire_and_are_revoked_by_the_signers_that_apply() {
        let bob = id(4).node_id();
        let mut a = access(POLICY);
        let t = token(1_000);
        let blob = t.to_bytes();
        let grant = a.decide(&bob, "files", &blob, 500, Load::default());
        assert_eq!(grant.as_ref().map(|g| g.expires), Ok(Some(1_000)));
        // Past expiry plus skew: refused with the expiry, which the caller reads as Expired.
        let late = a.recheck(&bob, "files", &blob, 1_061).err();
        assert!(matches!(
            late,
            Some(Refusal::Token(
                nullport_keyring::token::TokenError::Expired { .. }
            ))
        ));
        assert_eq!(late.map(|r| r.reason()), Some(DenyReason::Expired));
        // The issuer revokes the token id: it applies to `files`.
        revoke(&mut a, &id(2), vec![], vec![t.links[0].body.id]);
        assert_eq!(
            a.recheck(&bob, "files", &blob, 500).err(),
            Some(Refusal::TokenRevoked {
                signer: id(2).node_id()
            })
        );
        // A node-wide signer revoking the holder's key ends it too.
        let mut b = access(&format!("{POLICY}[revocation]\nsigners = [\"alice\"]\n"));
        revoke(&mut b, &id(3), vec![bob], vec![]);
        assert_eq!(
            b.recheck(&bob, "files", &blob, 500).err(),
            Some(Refusal::KeyRevoked {
                signer: id(3).node_id()
            })
        );
        // An untrusted signer's list changes nothing.
        let mut c = access(POLICY);
        revoke(&mut c, &id(9), vec![bob], vec![t.links[0].body.id]);
        assert!(c.recheck(&bob, "files", &blob, 500).is_ok());
    }
}
