use super::*;
use nullport_protocol::Identity;

/// A typo anywhere in the policy is an error naming the key and line, never a rule that
/// silently allows more (or less) than written.
#[test]
fn unknown_fields_at_every_level_are_errors_with_the_line() {
    let path = Path::new("policy.toml");
    for (text, key, line) in [
        ("[services.ssh]\nalow = [\"laptop\"]\n", "alow", 2),
        ("[servics.ssh]\nallow = []\n", "servics", 1),
        (
            "[mcp.files.allow.\"a\"]\ntools = []\ntool = [\"*\"]\n",
            "tool",
            3,
        ),
        ("[mcp.files]\napprove = []\ndeny = [\"x\"]\n", "deny", 3),
        ("[tokens.files]\nissuer = [\"admin\"]\n", "issuer", 2),
    ] {
        let err = Policy::parse(path, text)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_else(|| panic!("accepted {text:?}"));
        assert!(err.contains("unknown field") && err.contains(key), "{err}");
        assert!(err.contains(&format!("line {line}")), "{err}");
    }
}

#[test]
fn default_deny_aliases_and_ids() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        Identity::from_seed([1; 32]).node_id(),
        Identity::from_seed([2; 32]).node_id(),
    );
    let mut trust = TrustStore::load(&dir.path().join("trust.toml")).unwrap();
    let mut policy = Policy::load(&dir.path().join("policy.toml")).unwrap();
    assert_eq!(policy.decide(&a, "ssh", &trust), Decision::Denied);
    assert!(policy.allow("laptop", "ssh"));
    assert!(!policy.allow("laptop", "ssh"));
    assert!(policy.allow(&b.to_string(), "web"));
    // The alias is not trusted yet: still denied; once trusted, allowed.
    assert_eq!(policy.decide(&a, "ssh", &trust), Decision::Denied);
    trust.add("laptop", a, false).unwrap();
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
    policy.save().unwrap();
    let mut again = Policy::load(&dir.path().join("policy.toml")).unwrap();
    assert!(matches!(
        again.decide(&a, "ssh", &trust),
        Decision::Allowed { .. }
    ));
    assert!(again.revoke("laptop", "ssh"));
    assert_eq!(again.decide(&a, "ssh", &trust), Decision::Denied);
}

#[test]
fn mcp_rules_grant_the_channel_and_carry_the_rule_name() {
    let dir = tempfile::tempdir().unwrap();
    let a = Identity::from_seed([1; 32]).node_id();
    let mut trust = TrustStore::load(&dir.path().join("t.toml")).unwrap();
    trust.add("alice-agent", a, false).unwrap();
    let path = dir.path().join("policy.toml");
    std::fs::write(
        &path,
        "[mcp.files]\napprove = [\"write_file\"]\n[mcp.files.allow.\"alice-agent\"]\ntools = [\"read_file\", \"list_*\"]\ncalls_per_minute = 10\n",
    )
    .unwrap();
    let policy = Policy::load(&path).unwrap();
    assert_eq!(
        policy.decide(&a, "files", &trust),
        Decision::Allowed {
            rule: "alice-agent".into()
        }
    );
    let grant = policy
        .mcp_grant(&a, "files", &trust)
        .unwrap_or_else(|| panic!("no grant"));
    assert_eq!(grant.rules.tools, vec!["read_file", "list_*"]);
    assert_eq!(grant.rules.calls_per_minute, Some(10));
    assert_eq!(grant.approve, vec!["write_file"]);
    let b = Identity::from_seed([2; 32]).node_id();
    assert_eq!(policy.decide(&b, "files", &trust), Decision::Denied);
    assert!(policy.mcp_grant(&b, "files", &trust).is_none());
}

#[test]
fn malformed_policy_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.toml");
    std::fs::write(&path, "[services.ssh]\nallow = \"not-a-list\"\n").unwrap();
    let err = Policy::load(&path)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn rpc_rules_open_the_service_and_feed_the_call_gate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.toml");
    let a = Identity::from_seed([1; 32]).node_id();
    let issuer = Identity::from_seed([3; 32]).node_id();
    let mut trust = TrustStore::load(&dir.path().join("trust.toml")).unwrap();
    trust.add("planner", a, false).unwrap();
    std::fs::write(
        &path,
        format!(
            "[rpc.workers]\napprove = [\"jobs.delete\"]\n\
             [rpc.workers.allow.planner]\nmethods = [\"jobs.*\"]\nmax_concurrent = 4\n\
             [rpc.workers.allow.\"{issuer}\"]\nmethods = [\"jobs.run\", \"jobs.list\"]\n"
        ),
    )
    .unwrap();
    let policy = Policy::load(&path).unwrap();
    assert_eq!(
        policy.decide(&a, "workers", &trust),
        Decision::Allowed {
            rule: "planner".into()
        }
    );
    let grant = policy.rpc_grant(&a, "workers", &trust).unwrap();
    assert!(grant.allows("jobs.run") && !grant.allows("admin.reset"));
    assert!(grant.needs_approval("jobs.delete"));
    assert_eq!(grant.max_concurrent, Some(4));
    // A token's methods narrow its issuer's rules, never widen them.
    let narrowed = policy
        .rpc_grant_for_token(
            &issuer,
            Some(&["jobs.run".to_owned(), "admin.reset".to_owned()]),
            "token".into(),
            "workers",
            &trust,
        )
        .unwrap();
    assert!(narrowed.allows("jobs.run"));
    assert!(!narrowed.allows("jobs.list"), "outside the token");
    assert!(
        !narrowed.allows("admin.reset"),
        "outside the issuer's rules"
    );
    let b = Identity::from_seed([2; 32]).node_id();
    assert_eq!(policy.decide(&b, "workers", &trust), Decision::Denied);
    assert!(
        policy
            .rpc_grant_for_token(&b, None, "token".into(), "workers", &trust)
            .is_none()
    );
    // An unknown key in an RPC rule is an error, not ignored.
    std::fs::write(&path, "[rpc.w.allow.x]\ntools = [\"a\"]\n").unwrap();
    assert!(Policy::load(&path).is_err());
}
