//! Capability tokens at the callee: verification against the policy's trusted issuers, and
//! the MCP rules a token grants (its scope intersected with the issuer's own rules).

use std::time::{SystemTime, UNIX_EPOCH};

use nullport_keyring::pattern::{Pattern, PatternKind};
use nullport_keyring::token::{Scope, Token, TokenError};
use nullport_keyring::{McpGrant, McpRules, Policy, TrustStore};
use nullport_protocol::NodeId;

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A verified token presentation.
#[derive(Debug, Clone)]
pub struct Presented {
    /// The token.
    pub token: Token,
    /// Its effective scope.
    pub scope: Scope,
    /// The root issuer.
    pub issuer: NodeId,
    /// How to name it in denials and the audit log.
    pub rule: String,
}

/// Verifies `blob` as a token presented by `peer` to `callee` for `service` at `now` (Unix
/// seconds), with `skew` seconds of clock tolerance.
#[allow(clippy::too_many_arguments)]
pub fn check(
    blob: &[u8],
    peer: &NodeId,
    callee: &NodeId,
    service: &str,
    policy: &Policy,
    trust: &TrustStore,
    now: u64,
    skew: u64,
) -> Result<Presented, TokenError> {
    let token = Token::from_bytes(blob)?;
    let issuers = policy.token_issuers(service, trust);
    let scope = token.verify(peer, callee, service, &issuers, now, skew)?;
    let issuer = token.links[0].body.issuer;
    let rule = format!(
        "token from {}",
        trust
            .alias_of(&issuer)
            .map(str::to_owned)
            .unwrap_or_else(|| issuer.to_string())
    );
    Ok(Presented {
        token,
        scope,
        issuer,
        rule,
    })
}

fn narrow(
    token: &Option<Vec<String>>,
    bound: Option<&Vec<String>>,
    kind: PatternKind,
) -> Vec<String> {
    let covered = |t: &String, b: &String| Pattern::new(kind, b).covers(&Pattern::new(kind, t));
    match (token, bound) {
        (Some(t), Some(b)) => t
            .iter()
            .filter(|t| b.iter().any(|b| covered(t, b)))
            .cloned()
            .collect(),
        (None, Some(b)) => b.clone(),
        // The issuer has no rules of its own here: it can delegate nothing (the documented
        // "never more than the issuer's own rules").
        (_, None) => Vec::new(),
    }
}

/// The MCP rules a token grants: its scope within the issuer's own rules on the service,
/// never more than either. An issuer with no MCP rules of its own on the service grants no
/// tool, resource or prompt (give it rules with `nullport mcp allow ISSUER SERVICE ...` to
/// set the most it may delegate).
pub fn grant(
    presented: &Presented,
    policy: &Policy,
    trust: &TrustStore,
    service: &str,
) -> McpGrant {
    let bound = policy
        .mcp_grant(&presented.issuer, service, trust)
        .map(|g| g.rules);
    let b = bound.as_ref();
    let s = &presented.scope;
    McpGrant {
        rule: presented.rule.clone(),
        rules: McpRules {
            tools: narrow(&s.tools, b.map(|r| &r.tools), PatternKind::Glob),
            resources: narrow(
                &s.resources,
                b.map(|r| &r.resources),
                PatternKind::UriPrefix,
            ),
            prompts: narrow(&s.prompts, b.map(|r| &r.prompts), PatternKind::Glob),
            methods: match (&s.methods, b) {
                (Some(m), Some(r)) => m
                    .iter()
                    .filter(|m| r.methods.contains(m))
                    .cloned()
                    .collect(),
                (None, Some(r)) => r.methods.clone(),
                (_, None) => Vec::new(),
            },
            calls_per_minute: b.and_then(|r| r.calls_per_minute),
            max_concurrent: b.and_then(|r| r.max_concurrent),
            // The issuer's own argument rules, and the token's on top (all apply).
            args: {
                let mut args = b.map(|r| r.args.clone()).unwrap_or_default();
                for rule in &s.args {
                    if !args.contains(rule) {
                        args.push(rule.clone());
                    }
                }
                args
            },
        },
        approve: policy.mcp_approve(service),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_scope_is_intersected_with_the_issuers_rules() {
        let bound = Some(vec!["read_*".to_owned(), "list_directory".to_owned()]);
        let token = Some(vec![
            "read_file".to_owned(),
            "write_file".to_owned(),
            "*".to_owned(),
        ]);
        assert_eq!(
            narrow(&token, bound.as_ref(), PatternKind::Glob),
            vec!["read_file"]
        );
        assert_eq!(
            narrow(&None, bound.as_ref(), PatternKind::Glob),
            vec!["read_*", "list_directory"]
        );
        assert_eq!(
            narrow(
                &Some(vec!["file:///srv/docs/a".into(), "file:///etc".into()]),
                Some(&vec!["file:///srv/".into()]),
                PatternKind::UriPrefix
            ),
            vec!["file:///srv/docs/a"]
        );
        // An issuer without rules of its own delegates nothing, whatever the token says.
        assert!(narrow(&token, None, PatternKind::Glob).is_empty());
        assert!(narrow(&None, None, PatternKind::Glob).is_empty());
    }
}
