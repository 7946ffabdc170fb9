//! The body of every fuzz target, one function each. `fuzz/fuzz_targets/*.rs` call these, and
//! `tests/tests/all/fuzz_replay.rs` runs every committed input in `fuzz/seeds/<target>/`
//! through them as an ordinary test, so CI replays the corpora without a fuzzer.
//!
//! Each function must not panic on any input; where a target checks a property beyond
//! "no panic", the doc says which.

use std::path::Path;
use std::time::Instant;

use nullport::mcp::firewall::{Firewall, Verdict, glob_match};
use nullport_keyring::policy::Policy;
use nullport_keyring::token::Token;
use nullport_keyring::trust::TrustStore;
use nullport_keyring::{McpGrant, McpRules};
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
    ("handshake_msg2_plaintext", handshake_msg2_plaintext),
    ("handshake_verdict_plaintext", handshake_verdict_plaintext),
    ("handshake_msg3_plaintext", handshake_msg3_plaintext),
    ("channel_plaintext", channel_plaintext),
    ("relay_link_live", relay_link_live),
    ("rpc_frame", rpc_frame),
    ("relay_map", relay_map),
    ("resume_open", resume_open),
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

/// Resumed opens (first byte selects, modulo 4): a callee holding a live ticket fed R1 (0: as
/// is, 1: behind the real ticket id, so the AEAD is reached), a caller fed the answer (R2 or
/// K2) and a verdict (2), or R1's request behind the AEAD, encrypted by a genuine caller
/// (3); bit 2 picks a keyed open (clear) or one with a DH (set) for 2 and 3, and a callee
/// that wants a DH (set) for 0 and 1. Properties: a
/// forged R1 or answer never authenticates; a request only for exactly one well-formed
/// service and blob.
pub fn resume_open(data: &[u8]) {
    if let Some((&selector, rest)) = data.split_first() {
        // Bit 2 picks the kind of open: keyed (clear) or with a DH (set).
        let dh = selector & 4 != 0;
        match selector % 4 {
            0 => fuzzing::resume_responder(rest, false, dh),
            1 => fuzzing::resume_responder(rest, true, dh),
            2 => fuzzing::resume_initiator(rest, dh),
            _ => fuzzing::resume_payload(rest, !dh),
        }
    }
}

/// An initiator fed message 2 and a verdict. Property: a forged message 2 never completes.
pub fn handshake_initiator(data: &[u8]) {
    fuzzing::initiator_messages(data);
}

/// Message 2's plaintext, behind the AEAD: a real responder encrypts the input as the payload
/// of message 2 (where the identity proof goes). Property: the initiator goes on only for the
/// responder's genuine proof.
pub fn handshake_msg2_plaintext(data: &[u8]) {
    let _ = fuzzing::initiator_msg2_payload(data);
}

/// The verdict frame's plaintext, behind the AEAD, after a real handshake. Property: accept
/// only for exactly `[Accept]`, a denial only for `[Deny, code]`.
pub fn handshake_verdict_plaintext(data: &[u8]) {
    let _ = fuzzing::initiator_verdict(data);
}

/// Message 3's plaintext, behind the AEAD (first byte odd: the genuine identity proof is put
/// first, so the service and blob parsers are reached). Property: a request only behind the
/// genuine proof, with exactly the service and blob encoded.
pub fn handshake_msg3_plaintext(data: &[u8]) {
    if let Some((&selector, rest)) = data.split_first() {
        let _ = fuzzing::responder_msg3_payload(rest, selector & 1 == 1);
    }
}

/// Frames' plaintext on an established channel (one session per process): data, close,
/// rekey and anything else, each encrypted by the peer's real transport state. Property: data
/// delivers exactly its body, nothing is delivered after an error or a close.
pub fn channel_plaintext(data: &[u8]) {
    let _ = fuzzing::channel_frames(data);
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
    let max = relay_link::MAX_CONTROL_MESSAGE;
    let n = relay_link::LENGTH_PREFIX;
    if let Ok(m) = relay_link::decode::<NodeToRelay>(data) {
        let mut out = Vec::new();
        let len = relay_link::encode(&m, max, &mut out).unwrap();
        assert_eq!(
            relay_link::decode_len([out[0], out[1], out[2], out[3]], max),
            Ok(len)
        );
        assert_eq!(relay_link::decode::<NodeToRelay>(&out[n..]).ok(), Some(m));
    }
    if let Ok(m) = relay_link::decode::<RelayToNode>(data) {
        let mut out = Vec::new();
        let len = relay_link::encode(&m, max, &mut out).unwrap();
        assert_eq!(relay_link::encoded_len(&m), Ok(len + n));
        assert_eq!(relay_link::decode::<RelayToNode>(&out[n..]).ok(), Some(m));
    }
    if let [a, b, c, d, ..] = data {
        let _ = relay_link::decode_len([*a, *b, *c, *d], relay_link::MAX_LINK_MESSAGE);
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
    let args: Vec<nullport_keyring::args::ArgRule> = [
        "read_*:/path=/srv/docs/**",
        "read_*:/paths/*=/srv/docs/**",
        "read_*:/head 0..100",
        "list_directory:/depth absent",
    ]
    .iter()
    .filter_map(|r| nullport_keyring::args::ArgRule::parse(r).ok())
    .collect();
    let mut firewall = Firewall::new(McpGrant {
        rule: "fuzz".into(),
        rules: McpRules {
            tools: tools.clone(),
            resources: vec!["file:///srv/".into()],
            args: args.clone(),
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
                // Every argument rule that applies holds for what was forwarded.
                let arguments = value["params"]
                    .get("arguments")
                    .cloned()
                    .unwrap_or_default();
                let resolve = nullport::mcp::firewall::resolve_on_this_host;
                if let Err(e) = nullport_keyring::args::check(&args, name, &arguments, &resolve) {
                    panic!("forwarded a call its argument rules refuse: {e}");
                }
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
    if let Ok(report) = nullport_audit::verify(&path, &node, None) {
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

/// A relay running for the whole fuzzing process, with a sentinel connection that must keep
/// being served whatever the fuzzer sends on other connections.
struct LiveRelay {
    runtime: tokio::runtime::Runtime,
    net: crate::TestNet,
    sentinel: (
        quinn::Endpoint,
        quinn::Connection,
        quinn::SendStream,
        quinn::RecvStream,
    ),
}

fn live_relay() -> &'static std::sync::Mutex<LiveRelay> {
    static LIVE: std::sync::OnceLock<std::sync::Mutex<LiveRelay>> = std::sync::OnceLock::new();
    LIVE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        let (net, sentinel) = runtime.block_on(async {
            let net = crate::TestNet::start().await;
            let (endpoint, conn, _) = crate::raw_connect(&net, ([127, 0, 0, 1], 0).into())
                .await
                .unwrap_or_else(|e| panic!("sentinel: {e}"));
            let (send, recv) = crate::raw_hello(&conn).await;
            (net, (endpoint, conn, send, recv))
        });
        std::sync::Mutex::new(LiveRelay {
            runtime,
            net,
            sentinel,
        })
    })
}

/// Reads whole relay-link messages from `recv` until it ends (at most `limit`), as raw bodies.
async fn read_messages(recv: &mut quinn::RecvStream, limit: usize) -> Vec<Vec<u8>> {
    let mut messages = Vec::new();
    while messages.len() < limit {
        let mut prefix = [0u8; 4];
        if recv.read_exact(&mut prefix).await.is_err() {
            break;
        }
        let len = u32::from_be_bytes(prefix) as usize;
        if len > relay_link::MAX_CONTROL_MESSAGE {
            panic!("the relay announced a message of {len} bytes");
        }
        let mut body = vec![0u8; len];
        if recv.read_exact(&mut body).await.is_err() {
            break;
        }
        messages.push(body);
    }
    messages
}

/// Relay-link bytes inside a live, admitted connection: a real relay (in this process, for the
/// whole run) and a new TLS-authenticated connection per input that says `Hello` and then
/// sends the input on its control stream (first byte even) or on a dial stream (odd), then
/// finishes it. Properties: every answer the relay sends is a well-formed `RelayToNode`
/// message, and a sentinel node on another connection is still answered afterwards.
pub fn relay_link_live(data: &[u8]) {
    use nullport_protocol::relay_link::{NodeToRelay, RelayToNode};
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let live = live_relay();
    let mut live = live.lock().unwrap_or_else(|e| e.into_inner());
    let LiveRelay {
        runtime,
        net,
        sentinel,
    } = &mut *live;
    runtime.block_on(async {
        let deadline = std::time::Duration::from_secs(2);
        let Ok((endpoint, conn, _)) = crate::raw_connect(net, ([127, 0, 0, 1], 0).into()).await
        else {
            panic!("the relay stopped admitting connections");
        };
        let (mut control_send, mut control_recv) = crate::raw_hello(&conn).await;
        let (mut send, mut recv) = if selector & 1 == 0 {
            (control_send, control_recv)
        } else {
            let streams = conn.open_bi().await;
            let Ok(streams) = streams else {
                panic!("no dial stream after admission");
            };
            let _ = control_send.finish();
            let _ = tokio::time::timeout(deadline, control_recv.read_to_end(64)).await;
            streams
        };
        let _ = send.write_all(input).await;
        let _ = send.finish();
        let answers = tokio::time::timeout(deadline, read_messages(&mut recv, 64))
            .await
            .unwrap_or_default();
        // A dial that was spliced carries raw bytes after `Dialed`; only the first message
        // of a dial stream is the relay's.
        let relay_said = if selector & 1 == 0 {
            &answers[..]
        } else {
            &answers[..answers.len().min(1)]
        };
        for body in relay_said {
            assert!(
                relay_link::decode::<RelayToNode>(body).is_ok(),
                "the relay sent a malformed message: {body:02x?}"
            );
        }
        conn.close(0u32.into(), b"done");
        drop(endpoint);
        // The sentinel, on its own connection, is still served.
        let (_, _, s_send, s_recv) = sentinel;
        let mut query = Vec::new();
        let target = Identity::from_seed([42; 32]).node_id();
        let _ = relay_link::encode(
            &NodeToRelay::Presence { target },
            relay_link::MAX_LINK_MESSAGE,
            &mut query,
        );
        let answered = async {
            s_send.write_all(&query).await.ok()?;
            read_messages(s_recv, 1).await.pop()
        };
        let answer = tokio::time::timeout(deadline, answered)
            .await
            .ok()
            .flatten();
        assert!(
            matches!(
                answer.as_deref().map(relay_link::decode::<RelayToNode>),
                Some(Ok(RelayToNode::Presence { online: false, .. }))
            ),
            "the sentinel was not answered: {answer:02x?}"
        );
    });
}

/// The RPC frame decoder on arbitrary bytes (first byte: the receiver's message limit, in
/// KiB). Properties: every frame it accepts encodes back to exactly the bytes it took (one
/// encoding per frame, nothing skipped), and a frame over the limit is refused, not awaited.
pub fn rpc_frame(data: &[u8]) {
    use nullport_protocol::rpc::{Frame, HEADER, LEN_PREFIX};
    let Some((&limit, mut rest)) = data.split_first() else {
        return;
    };
    let max = u32::from(limit) * 1024;
    loop {
        match Frame::decode(rest, max) {
            Ok(Some((frame, used))) => {
                let mut out = Vec::new();
                frame.encode(&mut out).unwrap();
                assert_eq!(
                    out,
                    rest[..used],
                    "frame {frame:?} does not re-encode as read"
                );
                rest = &rest[used..];
            }
            Ok(None) => {
                if let Some(prefix) = rest.first_chunk::<LEN_PREFIX>() {
                    let len = u32::from_be_bytes(*prefix) as usize;
                    assert!(len <= max as usize + HEADER, "awaiting an oversize frame");
                }
                return;
            }
            Err(_) => return,
        }
    }
}

/// A fleet's signed relay map, as relays and `map show` check it with
/// `RelayMap::verify_self_signed` (first byte even: the rest is a postcard
/// `SignedRelayMap`, as it travels; odd: the text of a map file, as `run --map` reads it).
/// Property: what verifies is in its one canonical encoding and within every bound, verifies
/// under the admin key it names and under no other, and its file form reads back the same.
pub fn relay_map(data: &[u8]) {
    use nullport_keyring::relay_map::{MAX_ADDRS, MAX_RELAYS, RelayMap, RelayMapError};
    use nullport_relay::map_file::{self, VerifiedMap};
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let verified = if mode % 2 == 0 {
        let Ok(signed) = postcard::from_bytes::<relay_link::SignedRelayMap>(rest) else {
            return;
        };
        match RelayMap::verify_self_signed(&signed) {
            Ok(map) => VerifiedMap { map, signed },
            Err(_) => return,
        }
    } else {
        match map_file::parse(rest) {
            Ok(v) => v,
            Err(_) => return,
        }
    };
    let VerifiedMap { map, signed } = &verified;
    assert_eq!(postcard::to_stdvec(map).unwrap(), signed.body);
    assert_eq!(RelayMap::verify(signed, &map.admin).as_ref(), Ok(map));
    let other = Identity::from_seed([0x5a; 32]).node_id();
    if other != map.admin {
        assert!(matches!(
            RelayMap::verify(signed, &other),
            Err(RelayMapError::WrongAdmin { .. })
        ));
    }
    assert!(!map.relays.is_empty() && map.relays.len() <= MAX_RELAYS);
    assert!(
        map.relays
            .windows(2)
            .all(|w| w[0].node_id.as_bytes() < w[1].node_id.as_bytes())
    );
    assert!(
        map.relays
            .iter()
            .all(|r| (1..=MAX_ADDRS).contains(&r.addrs.len()))
    );
    assert_eq!(map.accepts(map), Ok(false));
    let text = map_file::render(&verified);
    assert_eq!(
        map_file::parse(text.as_bytes()).ok().as_ref(),
        Some(&verified)
    );
}
