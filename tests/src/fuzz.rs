//! The body of every fuzz target, one function each. `fuzz/fuzz_targets/*.rs` call these, and
//! `tests/tests/all/fuzz_replay.rs` runs every committed input in `fuzz/seeds/<target>/`
//! through them as an ordinary test, so CI replays the corpora without a fuzzer.
//!
//! Each function must not panic on any input; where a target checks a property beyond
//! "no panic", the doc says which.

use std::path::Path;
use std::time::Instant;

use nullport_keyring::policy::Policy;
use nullport_keyring::token::Token;
use nullport_keyring::trust::TrustStore;
use nullport_keyring::{McpGrant, McpRules};
use nullport_node::mcp::firewall::{Firewall, Verdict, glob_match};
use nullport_protocol::relay_link::{self, NodeToRelay, RelayToNode};
use nullport_protocol::{Deframer, Identity, NodeId, fuzzing};

/// One fuzz target's body.
pub type Body = fn(&[u8]);

/// Every target by name, as `fuzz/Cargo.toml` names its binaries.
pub const TARGETS: &[(&str, Body)] = &[
    ("frame_decoder", frame_decoder),
    ("handshake_responder", handshake_responder),
    ("handshake_initiator", handshake_initiator),
    ("node_id", node_id),
    ("relay_link", relay_link),
    ("token", token),
    ("mcp_firewall", mcp_firewall),
    ("audit_verify", audit_verify),
    ("policy", policy),
    ("key_file", key_file),
];

/// The deframer and an established channel's reader on arbitrary bytes (first byte: the
/// chunk size pushed at a time). Property: a frame that fails to open delivers nothing.
pub fn frame_decoder(data: &[u8]) {
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let (_sender, mut receiver) = fuzzing::channel_pair();
    let mut deframer = Deframer::new(65_535);
    let mut out = Vec::new();
    let mut input = rest;
    loop {
        loop {
            match deframer.next_message() {
                Ok(Some(m)) => {
                    if receiver.open(m, &mut out).is_err() {
                        assert!(out.is_empty(), "bytes delivered from forged input");
                        return;
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        if input.is_empty() {
            let _ = deframer.finish();
            return;
        }
        let n = deframer.push(&input[..chunk.min(input.len())]);
        input = &input[n..];
    }
}

/// A responder fed messages 1 and 3 (even first byte), or the message 3 payload decoder
/// (odd). Property: a forged message 3 is never accepted.
pub fn handshake_responder(data: &[u8]) {
    if let Some((&selector, rest)) = data.split_first() {
        if selector & 1 == 0 {
            fuzzing::responder_messages(rest);
        } else {
            let _ = fuzzing::decode_msg3_payload(rest);
        }
    }
}

/// An initiator fed message 2 and a verdict. Property: a forged message 2 never completes.
pub fn handshake_initiator(data: &[u8]) {
    fuzzing::initiator_messages(data);
}

/// NodeId text and binary parsing. Property: whatever parses prints back to the same input.
pub fn node_id(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(id) = text.parse::<NodeId>()
    {
        assert_eq!(id.to_string(), text);
    }
    if let Ok(id) = NodeId::from_slice(data) {
        assert_eq!(&id.as_bytes()[..], data);
    }
}

/// Relay-link messages, both directions. Property: whatever decodes re-encodes to a
/// message that decodes to the same value.
pub fn relay_link(data: &[u8]) {
    if let Ok(m) = relay_link::decode::<NodeToRelay>(data) {
        let mut out = Vec::new();
        relay_link::encode(&m, &mut out);
        assert_eq!(relay_link::decode::<NodeToRelay>(&out[2..]).ok(), Some(m));
    }
    if let Ok(m) = relay_link::decode::<RelayToNode>(data) {
        let mut out = Vec::new();
        relay_link::encode(&m, &mut out);
        assert_eq!(relay_link::decode::<RelayToNode>(&out[2..]).ok(), Some(m));
    }
    if let [a, b, ..] = data {
        let _ = relay_link::decode_len([*a, *b], relay_link::MAX_LINK_MESSAGE);
    }
}

/// Capability token decoding and chain verification. Property: only a chain signed by the
/// fixed trusted root verifies, and the fuzzer cannot forge one.
pub fn token(data: &[u8]) {
    let Ok(token) = Token::from_bytes(data) else {
        return;
    };
    let issuer = Identity::from_seed([1; 32]).node_id();
    let presenter = token.last().body.holder;
    let callee = Identity::from_seed([9; 32]).node_id();
    if let Ok(scope) = token.verify(&presenter, &callee, "files", &[issuer], 1_800_000_000, 60) {
        panic!("a forged chain verified: {scope:?}");
    }
    let _ = token.to_text();
}

/// The MCP firewall on newline-separated caller lines (every third line comes from the
/// server). Property: anything forwarded is one JSON object, and a forwarded `tools/call`
/// names an allowed tool.
pub fn mcp_firewall(data: &[u8]) {
    let tools = vec!["read_*".to_owned(), "list_directory".to_owned()];
    let mut firewall = Firewall::new(McpGrant {
        rule: "fuzz".into(),
        rules: McpRules {
            tools: tools.clone(),
            resources: vec!["file:///srv/".into()],
            ..McpRules::default()
        },
        approve: vec!["read_secret".into()],
    });
    for (i, line) in data.split(|&b| b == b'\n').enumerate() {
        if i % 3 == 2 {
            let _ = firewall.from_server(line);
            continue;
        }
        let (verdict, _) = firewall.from_caller(line, Instant::now());
        if let Verdict::Forward(out) | Verdict::Approve { line: out, .. } = verdict {
            let value: serde_json::Value = serde_json::from_slice(&out)
                .unwrap_or_else(|e| panic!("forwarded invalid JSON: {e}"));
            assert!(value.is_object(), "forwarded a non-object");
            if value["method"] == "tools/call" {
                let name = value["params"]["name"]
                    .as_str()
                    .unwrap_or_else(|| panic!("forwarded a nameless call"));
                assert!(
                    tools.iter().any(|t| glob_match(t, name)),
                    "forwarded a forbidden tool {name}"
                );
            }
        }
    }
}

/// A scratch file for targets whose decoder reads a path (0600, per process and target).
fn scratch(name: &str, data: &[u8]) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("np-fuzz-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let path = dir.join(name);
    std::fs::write(&path, data).ok()?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).ok()?;
    Some(path)
}

/// The audit log verifier on arbitrary file contents. Property: an unsigned log (the
/// fuzzer cannot sign) is never reported intact.
pub fn audit_verify(data: &[u8]) {
    let Some(path) = scratch("audit.log", data) else {
        return;
    };
    let node = Identity::from_seed([7; 32]).node_id();
    if let Ok(report) = nullport_keyring::audit::verify(&path, &node, None) {
        assert!(!report.ok(), "an unsigned log verified: {report:?}");
    }
}

/// The policy and trust-store parsers (input: `policy \0 trust`). Property: a policy that
/// parses renders to text that parses back to the same decisions, so the CLI rewriting the
/// file never changes its meaning.
pub fn policy(data: &[u8]) {
    let mut parts = data.splitn(2, |b| *b == 0);
    let policy_bytes = parts.next().unwrap_or_default();
    let trust_bytes = parts.next().unwrap_or_default();
    let (Ok(policy_text), Ok(trust_text)) = (
        std::str::from_utf8(policy_bytes),
        std::str::from_utf8(trust_bytes),
    ) else {
        return;
    };
    let trust_path = Path::new("trust.toml");
    let Ok(trust) =
        TrustStore::parse(trust_path, trust_text).or_else(|_| TrustStore::parse(trust_path, ""))
    else {
        return;
    };
    let path = Path::new("policy.toml");
    let Ok(policy) = Policy::parse(path, policy_text) else {
        return;
    };
    let peers: Vec<NodeId> = (1..=3u8)
        .map(|i| Identity::from_seed([i; 32]).node_id())
        .collect();
    let before = decisions(&policy, &trust, &peers);
    let rendered = policy
        .render()
        .unwrap_or_else(|e| panic!("a parsed policy failed to render: {e}"));
    let again = Policy::parse(path, &rendered)
        .unwrap_or_else(|e| panic!("a rendered policy failed to parse: {e}\n{rendered}"));
    assert_eq!(
        before,
        decisions(&again, &trust, &peers),
        "meaning changed:\n{rendered}"
    );
}

fn decisions(policy: &Policy, trust: &TrustStore, peers: &[NodeId]) -> String {
    let mut out = String::new();
    for peer in peers {
        for service in ["ssh", "files", "web", ""] {
            out.push_str(&format!(
                "{:?}{:?}{:?}",
                policy.decide(peer, service, trust),
                policy.mcp_grant(peer, service, trust),
                policy.token_issuers(service, trust),
            ));
        }
    }
    out.push_str(&format!("{:?}", policy.revocation_signers(trust)));
    out
}

/// The key-file loader on arbitrary file contents. Property: a file loads only if its
/// stored NodeId is the key's, and the clear NodeId reader agrees with the loader.
pub fn key_file(data: &[u8]) {
    let Some(path) = scratch("node.key", data) else {
        return;
    };
    let stored = nullport_keyring::key_file::read_node_id(&path);
    if let Ok(identity) = nullport_keyring::key_file::load(&path, Some("fuzz passphrase")) {
        assert_eq!(
            stored.ok(),
            Some(identity.node_id()),
            "loaded a key whose stored NodeId differs"
        );
    }
}
