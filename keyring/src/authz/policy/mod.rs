//! Service policy: which peers may use which service. Default deny; enforced by the callee.
//!
//! A TOML file:
//! ```toml
//! [services.ssh]
//! allow = ["laptop", "np..."]      # trust-store aliases or NodeIds
//! ```
//! MCP services get per-caller rules on top (methods, tools, resources, prompts, quotas) and
//! a list of tools that need a human's approval:
//! ```toml
//! [mcp.files]
//! approve = ["write_file"]
//! [mcp.files.allow."alice-agent"]
//! tools = ["read_file", "list_*"]          # exact names or globs with `*`
//! resources = ["file:///srv/docs/"]        # URI prefixes
//! prompts = []
//! methods = []                              # extra JSON-RPC methods beyond the defaults
//! calls_per_minute = 60
//! max_concurrent = 4
//! ```
//! A caller with an MCP rule for a service may open a channel to it.
//!
//! Typed RPC services (`nullport_node::rpc`) get per-caller method rules through the same
//! gate as MCP tools (names or globs, quotas, approvals):
//! ```toml
//! [rpc.workers]
//! approve = ["jobs.delete"]
//! [rpc.workers.allow."planner"]
//! methods = ["jobs.*"]
//! calls_per_minute = 600
//! max_concurrent = 64
//! ```
//! A caller with an RPC rule for a service may open a channel to it.
//!
//! Capability tokens open a service when their root issuer is trusted for it; what they
//! allow is the token's scope intersected with the issuer's own MCP rules (never more):
//! ```toml
//! [tokens.files]
//! issuers = ["admin"]
//! ```
//!
//! Who may revoke what here: this node's own revocation list always applies to everything;
//! the signers under `[revocation]` apply to everything too; an issuer trusted for a
//! service's tokens may revoke keys and tokens for that service only:
//! ```toml
//! [revocation]
//! signers = ["admin"]
//! ```
//!
//! Names are resolved through the trust store when a decision is made, so trusting an alias
//! later takes effect without editing the policy.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nullport_protocol::NodeId;
use serde::{Deserialize, Serialize};

use crate::calls::CallGrant;
use crate::error::Error;
use crate::fs::write_private;
use crate::trust::TrustStore;

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    services: BTreeMap<String, ServiceRule>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    mcp: BTreeMap<String, McpService>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    rpc: BTreeMap<String, RpcService>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    tokens: BTreeMap<String, TokenRule>,
    #[serde(default, skip_serializing_if = "RevocationRule::is_empty")]
    revocation: RevocationRule,
}

/// Node-wide revocation signers.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevocationRule {
    #[serde(default)]
    signers: Vec<String>,
}

impl RevocationRule {
    fn is_empty(&self) -> bool {
        self.signers.is_empty()
    }
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRule {
    #[serde(default)]
    issuers: Vec<String>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct McpService {
    #[serde(default)]
    approve: Vec<String>,
    #[serde(default)]
    allow: BTreeMap<String, McpRules>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RpcService {
    #[serde(default)]
    approve: Vec<String>,
    #[serde(default)]
    allow: BTreeMap<String, RpcRules>,
}

/// What one caller may call on one typed RPC service.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpcRules {
    /// Method names or `*` globs.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Calls per minute (none: unlimited).
    #[serde(default)]
    pub calls_per_minute: Option<u32>,
    /// Calls in flight at once (none: unlimited).
    #[serde(default)]
    pub max_concurrent: Option<u32>,
}

/// What one caller may do on one MCP service.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpRules {
    /// Tool names or `*` globs callable with `tools/call` (and listed by `tools/list`).
    #[serde(default)]
    pub tools: Vec<String>,
    /// Resource URI prefixes readable with `resources/read` (and listed).
    #[serde(default)]
    pub resources: Vec<String>,
    /// Prompt names or globs for `prompts/get` (and listed).
    #[serde(default)]
    pub prompts: Vec<String>,
    /// JSON-RPC methods allowed beyond the defaults.
    #[serde(default)]
    pub methods: Vec<String>,
    /// `tools/call` requests per minute (none: unlimited).
    #[serde(default)]
    pub calls_per_minute: Option<u32>,
    /// `tools/call` requests in flight at once (none: unlimited).
    #[serde(default)]
    pub max_concurrent: Option<u32>,
    /// Rules on tool arguments (every one whose tool matches applies).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<crate::args::ArgRule>,
}

/// The MCP rules that apply to one caller on one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpGrant {
    /// The policy entry (alias or NodeId) that matched: named in denials and the audit log.
    pub rule: String,
    /// What it allows.
    pub rules: McpRules,
    /// Tools that need a human's approval before each call.
    pub approve: Vec<String>,
}

/// One MCP service's rules, as `nullport mcp show` lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpServiceRules {
    /// The service.
    pub service: String,
    /// Each caller (alias or NodeId, as written) and its rules.
    pub callers: Vec<(String, McpRules)>,
    /// Tools whose calls wait for a human.
    pub approve: Vec<String>,
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
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self {
                path: path.to_owned(),
                file: PolicyFile::default(),
            }),
            Err(error) => Err(Error::Io {
                path: path.to_owned(),
                error,
            }),
        }
    }

    /// Parses policy text (the contents of the file at `path`, which is named in errors).
    /// Unknown keys are errors, so a typo never silently widens or narrows a rule.
    pub fn parse(path: &Path, text: &str) -> Result<Self, Error> {
        let file = toml::from_str(text).map_err(|e| Error::Format {
            path: path.to_owned(),
            error: e.into(),
        })?;
        Ok(Self {
            path: path.to_owned(),
            file,
        })
    }

    /// The policy as the TOML text [`Policy::save`] writes.
    pub fn render(&self) -> Result<String, Error> {
        let text = toml::to_string_pretty(&self.file).map_err(|e| Error::Format {
            path: self.path.clone(),
            error: e.into(),
        })?;
        Ok(format!(
            "# nullport policy: which peers may use which service (default deny)\n{text}"
        ))
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

    /// Removes every entry of `service`'s allow list and MCP rules that names `peer` (by
    /// alias or NodeId: entries that resolve to the same NodeId count too). Returns what was
    /// removed (empty: nothing named it).
    pub fn withdraw(&mut self, peer: &str, service: &str, trust: &TrustStore) -> Vec<String> {
        let target = trust.resolve(peer).ok();
        let names =
            |name: &str| name == peer || (target.is_some() && trust.resolve(name).ok() == target);
        let mut removed = Vec::new();
        if let Some(rule) = self.file.services.get_mut(service) {
            rule.allow.retain(|p| {
                let hit = names(p);
                if hit {
                    removed.push(format!("allow {p}"));
                }
                !hit
            });
            if rule.allow.is_empty() {
                self.file.services.remove(service);
            }
        }
        if let Some(svc) = self.file.mcp.get_mut(service) {
            withdraw_callers(&mut svc.allow, &names, "mcp", &mut removed);
            if svc.allow.is_empty() && svc.approve.is_empty() {
                self.file.mcp.remove(service);
            }
        }
        if let Some(svc) = self.file.rpc.get_mut(service) {
            withdraw_callers(&mut svc.allow, &names, "rpc", &mut removed);
            if svc.allow.is_empty() && svc.approve.is_empty() {
                self.file.rpc.remove(service);
            }
        }
        removed
    }

    /// Removes only the MCP rules of `service` that name `peer` (alias or NodeId). Returns
    /// whether there were any.
    pub fn withdraw_mcp(&mut self, peer: &str, service: &str, trust: &TrustStore) -> bool {
        let target = trust.resolve(peer).ok();
        let Some(svc) = self.file.mcp.get_mut(service) else {
            return false;
        };
        let before = svc.allow.len();
        svc.allow
            .retain(|p, _| !(p == peer || (target.is_some() && trust.resolve(p).ok() == target)));
        let changed = svc.allow.len() != before;
        if svc.allow.is_empty() && svc.approve.is_empty() {
            self.file.mcp.remove(service);
        }
        changed
    }

    /// Every MCP service with its callers' rules and the tools that need approval.
    pub fn mcp_services(&self) -> Vec<McpServiceRules> {
        self.file
            .mcp
            .iter()
            .map(|(name, svc)| McpServiceRules {
                service: name.clone(),
                callers: svc
                    .allow
                    .iter()
                    .map(|(p, r)| (p.clone(), r.clone()))
                    .collect(),
                approve: svc.approve.clone(),
            })
            .collect()
    }

    /// The node-wide revocation signers (aliases resolved now).
    pub fn global_revocation_signers(&self, trust: &TrustStore) -> Vec<NodeId> {
        self.file
            .revocation
            .signers
            .iter()
            .filter_map(|n| trust.resolve(n).ok())
            .collect()
    }

    /// The node-wide revocation signers as written (aliases or NodeIds).
    pub fn revocation_signer_names(&self) -> &[String] {
        &self.file.revocation.signers
    }

    /// Trusts `signer` (alias or NodeId) to revoke keys and tokens node-wide. Returns false
    /// if it already was.
    pub fn trust_revocation_signer(&mut self, signer: &str) -> bool {
        if self.file.revocation.signers.iter().any(|s| s == signer) {
            return false;
        }
        self.file.revocation.signers.push(signer.to_owned());
        true
    }

    /// Whether a list signed by `signer` applies to `service` here (`me` is this node: its
    /// own list applies to everything).
    pub fn revocation_applies(
        &self,
        signer: &NodeId,
        service: &str,
        me: &NodeId,
        trust: &TrustStore,
    ) -> bool {
        signer == me
            || self.global_revocation_signers(trust).contains(signer)
            || self.token_issuers(service, trust).contains(signer)
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

    /// Decides whether `peer` may open a channel to `service` (an MCP rule counts).
    pub fn decide(&self, peer: &NodeId, service: &str, trust: &TrustStore) -> Decision {
        if let Some(rule) = self.file.services.get(service) {
            for name in &rule.allow {
                if trust.resolve(name).ok().as_ref() == Some(peer) {
                    return Decision::Allowed { rule: name.clone() };
                }
            }
        }
        if let Some(grant) = self.mcp_grant(peer, service, trust) {
            return Decision::Allowed { rule: grant.rule };
        }
        match self.rpc_grant(peer, service, trust) {
            Some(grant) => Decision::Allowed { rule: grant.rule },
            None => Decision::Denied,
        }
    }

    /// The RPC method rules for `peer` on `service`, if any, as the call gate applies them.
    pub fn rpc_grant(&self, peer: &NodeId, service: &str, trust: &TrustStore) -> Option<CallGrant> {
        let svc = self.file.rpc.get(service)?;
        caller_entry(&svc.allow, peer, trust)
            .map(|(name, rules)| rpc_call_grant(name.clone(), rules, &svc.approve))
    }

    /// What a capability token from `issuer` (verified, with the effective `methods` list of
    /// its scope) allows on RPC `service`: the issuer's own rules, narrowed by the token.
    /// `None` when the issuer has no RPC rules there itself (a token never grants more than
    /// its issuer holds).
    pub fn rpc_grant_for_token(
        &self,
        issuer: &NodeId,
        methods: Option<&[String]>,
        rule: String,
        service: &str,
        trust: &TrustStore,
    ) -> Option<CallGrant> {
        let mut grant = self.rpc_grant(issuer, service, trust)?;
        grant.rule = rule;
        grant.narrowed = methods.map(<[String]>::to_vec);
        Some(grant)
    }

    /// Sets the RPC rules for `peer` on `service`.
    pub fn set_rpc_rules(&mut self, peer: &str, service: &str, rules: RpcRules) {
        self.file
            .rpc
            .entry(service.to_owned())
            .or_default()
            .allow
            .insert(peer.to_owned(), rules);
    }

    /// Marks `method` on RPC `service` as needing a human's approval.
    pub fn require_rpc_approval(&mut self, service: &str, method: &str) {
        let svc = self.file.rpc.entry(service.to_owned()).or_default();
        if !svc.approve.iter().any(|m| m == method) {
            svc.approve.push(method.to_owned());
        }
    }

    /// The MCP rules for `peer` on `service`, if any.
    pub fn mcp_grant(&self, peer: &NodeId, service: &str, trust: &TrustStore) -> Option<McpGrant> {
        let svc = self.file.mcp.get(service)?;
        caller_entry(&svc.allow, peer, trust).map(|(name, rules)| McpGrant {
            rule: name.clone(),
            rules: rules.clone(),
            approve: svc.approve.clone(),
        })
    }

    /// The tools of `service` that need a human's approval.
    pub fn mcp_approve(&self, service: &str) -> Vec<String> {
        self.file
            .mcp
            .get(service)
            .map(|s| s.approve.clone())
            .unwrap_or_default()
    }

    /// Sets the MCP rules for `peer` on `service`.
    pub fn set_mcp_rules(&mut self, peer: &str, service: &str, rules: McpRules) {
        self.file
            .mcp
            .entry(service.to_owned())
            .or_default()
            .allow
            .insert(peer.to_owned(), rules);
    }

    /// The issuers whose capability tokens may open `service` (aliases resolved now).
    pub fn token_issuers(&self, service: &str, trust: &TrustStore) -> Vec<NodeId> {
        self.file
            .tokens
            .get(service)
            .map(|r| {
                r.issuers
                    .iter()
                    .filter_map(|n| trust.resolve(n).ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every signer whose revocation list applies to something on this node: the node-wide
    /// signers and every trusted token issuer (each for its own services). This node itself
    /// is not listed: its own list always applies.
    pub fn revocation_signers(&self, trust: &TrustStore) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self
            .file
            .tokens
            .values()
            .flat_map(|r| r.issuers.iter().filter_map(|n| trust.resolve(n).ok()))
            .chain(self.global_revocation_signers(trust))
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Trusts `issuer` (alias or NodeId) to issue tokens for `service`.
    pub fn trust_issuer(&mut self, issuer: &str, service: &str) -> bool {
        let rule = self.file.tokens.entry(service.to_owned()).or_default();
        if rule.issuers.iter().any(|i| i == issuer) {
            return false;
        }
        rule.issuers.push(issuer.to_owned());
        true
    }

    /// Marks `tool` on `service` as needing approval.
    pub fn require_approval(&mut self, service: &str, tool: &str) {
        let svc = self.file.mcp.entry(service.to_owned()).or_default();
        if !svc.approve.iter().any(|t| t == tool) {
            svc.approve.push(tool.to_owned());
        }
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
        let text = self.render()?;
        // What is written must load back as the same policy: checked before the file changes.
        Policy::parse(&self.path, &text)?;
        write_private(&self.path, text.as_bytes(), true)
    }
}

/// The entry of `allow` whose name (alias or NodeId) resolves to `peer` now.
fn caller_entry<'a, T>(
    allow: &'a BTreeMap<String, T>,
    peer: &NodeId,
    trust: &TrustStore,
) -> Option<(&'a String, &'a T)> {
    allow
        .iter()
        .find(|(name, _)| trust.resolve(name).ok().as_ref() == Some(peer))
}

/// Removes the entries of `allow` that `names` matches, noting each as "`kind` rules of ...".
fn withdraw_callers<T>(
    allow: &mut BTreeMap<String, T>,
    names: &dyn Fn(&str) -> bool,
    kind: &str,
    removed: &mut Vec<String>,
) {
    allow.retain(|p, _| {
        let hit = names(p);
        if hit {
            removed.push(format!("{kind} rules of {p}"));
        }
        !hit
    });
}

fn rpc_call_grant(rule: String, rules: &RpcRules, approve: &[String]) -> CallGrant {
    CallGrant {
        rule,
        names: rules.methods.clone(),
        narrowed: None,
        approve: approve.to_vec(),
        calls_per_minute: rules.calls_per_minute,
        max_concurrent: rules.max_concurrent,
    }
}

#[cfg(test)]
mod tests;
