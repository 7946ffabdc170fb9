//! The events a node records, typed. Each has a stable name (`event`) and stable field names,
//! so a SIEM can ingest the log without knowing nullport's code.
//!
//! | event | fields |
//! | --- | --- |
//! | `node-start`, `node-stop`, `link-up`, `link-down`, `rotation`, `rotation-refused` | `detail` |
//! | `channel` | `caller`, `service`, `outcome` (accepted, denied, closed), `rule` (or why) |
//! | `token` | `caller`, `service`, `token_ids`, `outcome` (accepted, denied), `reason` |
//! | `revocation` | `signer`, `version`, `keys`, `tokens`, `applies` |
//! | `dial` | `peer`, `service`, `outcome` (open, failed) |
//! | `mcp` | `caller`, `service`, `method`, `target`, `args_sha256`, `outcome`, `reason`, `latency_us` |
//! | `receipt` | `role`, `valid`, `caller`, `callee`, `handshake`, `id`, `request_sha256`, `decision`, `result_sha256`, `sig` |
//! | `request-signature` | `caller`, `service`, `request_sha256`, `sig`, `valid` |
//!
//! The writer adds `seq`, `ts`, `prev` and `event` to each, and writes `log-start`,
//! `recovery`, `rotated`, `gap` and `checkpoint` entries of its own.

use nullport_protocol::NodeId;
use serde_json::{Map, Value, json};

/// Something that happened to the node itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeEvent {
    /// The daemon started.
    Start,
    /// The daemon stopped.
    Stop,
    /// The relay link came up.
    LinkUp,
    /// The relay link went down.
    LinkDown,
    /// A key rotation was followed.
    Rotation,
    /// A key rotation was refused (revoked key, second rotation of a key).
    RotationRefused,
}

impl NodeEvent {
    fn name(self) -> &'static str {
        match self {
            NodeEvent::Start => "node-start",
            NodeEvent::Stop => "node-stop",
            NodeEvent::LinkUp => "link-up",
            NodeEvent::LinkDown => "link-down",
            NodeEvent::Rotation => "rotation",
            NodeEvent::RotationRefused => "rotation-refused",
        }
    }
}

/// What became of a channel at the callee.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChannelOutcome {
    /// Accepted (the rule says by what).
    Accepted,
    /// Refused (the rule says why).
    Denied,
    /// Ended by the callee while live (access taken away, idle).
    Closed,
}

/// One event to record.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A node event.
    Node {
        /// Which.
        kind: NodeEvent,
        /// Details (the relay, the keys of a rotation, ...).
        detail: String,
    },
    /// A channel decided or ended at the callee.
    Channel {
        /// The caller, as the handshake proved it.
        caller: NodeId,
        /// The service.
        service: String,
        /// What became of it.
        outcome: ChannelOutcome,
        /// The rule that allowed it, or why it was refused or ended.
        rule: String,
    },
    /// A capability token presented to this node.
    Token {
        /// The presenter.
        caller: NodeId,
        /// The service.
        service: String,
        /// The ids of the chain's links (hex).
        token_ids: Vec<String>,
        /// Accepted or not.
        accepted: bool,
        /// The rule, or why it was refused.
        reason: String,
    },
    /// A revocation list applied.
    Revocation {
        /// Its signer.
        signer: NodeId,
        /// Its version.
        version: u64,
        /// Keys it revokes.
        keys: Vec<NodeId>,
        /// Token ids it revokes.
        tokens: Vec<[u8; 16]>,
        /// What it applies to here.
        applies: String,
    },
    /// A dial out (caller side).
    Dial {
        /// The peer dialed.
        peer: NodeId,
        /// The service.
        service: String,
        /// Whether the channel opened.
        opened: bool,
    },
    /// An MCP firewall decision.
    Mcp {
        /// The caller.
        caller: NodeId,
        /// The MCP service.
        service: String,
        /// The JSON-RPC method.
        method: String,
        /// The tool, resource or prompt named, if any.
        target: Option<String>,
        /// SHA-256 of the arguments, if any.
        args_sha256: Option<String>,
        /// What the firewall did.
        outcome: String,
        /// Why.
        reason: String,
        /// Time to decide and forward, in microseconds.
        latency_us: u64,
    },
    /// A typed RPC call decided at the callee (the same gate as MCP tool calls).
    Rpc {
        /// The caller.
        caller: NodeId,
        /// The RPC service.
        service: String,
        /// The method.
        method: String,
        /// allowed, denied, over quota, approved, not approved, not found.
        outcome: String,
        /// The rule, or why not.
        reason: String,
        /// Time to decide, in microseconds.
        latency_us: u64,
    },
    /// A signed receipt of a tool call, issued (callee) or checked (caller).
    Receipt {
        /// "callee" or "caller".
        role: &'static str,
        /// Whether its signature verified.
        valid: bool,
        /// Fields of the receipt, as it travels.
        receipt: Value,
    },
    /// A caller's signature over a request digest, made (caller) or checked (callee).
    RequestSignature {
        /// The caller.
        caller: NodeId,
        /// The service.
        service: String,
        /// The digest signed.
        request_sha256: Option<String>,
        /// The signature (hex).
        sig: Option<String>,
        /// Whether it verified.
        valid: bool,
    },
    /// A tool call that waited for a human: what became of it, who decided, how, why.
    Approval {
        /// The caller.
        caller: NodeId,
        /// The MCP service.
        service: String,
        /// The tool.
        tool: String,
        /// SHA-256 of the arguments the decision is bound to.
        args_sha256: String,
        /// "approved", "denied", "timed out", or "granted" (a standing grant approved it).
        outcome: String,
        /// Who or what decided: "cli", "console", `grant ID`, "timeout".
        by: String,
        /// The reason given, if any.
        reason: Option<String>,
    },
    /// A standing approval grant made, used up, expired or revoked.
    Grant {
        /// The grant's id.
        id: String,
        /// "made", "revoked", "expired".
        action: String,
        /// The caller it is for.
        caller: NodeId,
        /// The MCP service.
        service: String,
        /// The tool.
        tool: String,
        /// Its scope, as a person reads it ("this session", "until ...", "arguments ...").
        scope: String,
        /// Who made or revoked it ("cli", "console"), or "timer" when it expired.
        by: String,
    },
    /// A tool's manifest pinned, held because it changed (or is new), or accepted.
    ToolManifest {
        /// The service (at the tool host) or `peer/service` (at the caller).
        scope: String,
        /// The tool.
        tool: String,
        /// "pinned", "held", "accepted".
        action: String,
        /// The manifest as pinned before, if any.
        pinned: Option<Value>,
        /// The manifest as the server presents it.
        presented: Value,
    },
    /// An action taken in the local console (every state change it makes is one).
    Console {
        /// What was done ("login", "close channel", "allow", "deny", ...).
        action: String,
        /// On what.
        detail: String,
    },
}

impl Event {
    /// The event's name (the `event` field).
    pub fn name(&self) -> &'static str {
        match self {
            Event::Node { kind, .. } => kind.name(),
            Event::Channel { .. } => "channel",
            Event::Token { .. } => "token",
            Event::Revocation { .. } => "revocation",
            Event::Dial { .. } => "dial",
            Event::Mcp { .. } => "mcp",
            Event::Rpc { .. } => "rpc",
            Event::Receipt { .. } => "receipt",
            Event::RequestSignature { .. } => "request-signature",
            Event::Approval { .. } => "approval",
            Event::Grant { .. } => "grant",
            Event::ToolManifest { .. } => "tool-manifest",
            Event::Console { .. } => "console",
        }
    }

    /// The event's fields, by their stable names.
    pub fn fields(&self) -> Map<String, Value> {
        let value = match self {
            Event::Node { detail, .. } => json!({ "detail": detail }),
            Event::Channel {
                caller,
                service,
                outcome,
                rule,
            } => json!({
                "caller": caller.to_string(),
                "service": service,
                "outcome": match outcome {
                    ChannelOutcome::Accepted => "accepted",
                    ChannelOutcome::Denied => "denied",
                    ChannelOutcome::Closed => "closed",
                },
                "rule": rule,
            }),
            Event::Token {
                caller,
                service,
                token_ids,
                accepted,
                reason,
            } => json!({
                "caller": caller.to_string(),
                "service": service,
                "token_ids": token_ids,
                "outcome": if *accepted { "accepted" } else { "denied" },
                "reason": reason,
            }),
            Event::Revocation {
                signer,
                version,
                keys,
                tokens,
                applies,
            } => json!({
                "signer": signer.to_string(),
                "version": version,
                "keys": keys.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
                "tokens": tokens.iter().map(|t| nullport_protocol::hex::encode(t)).collect::<Vec<_>>(),
                "applies": applies,
            }),
            Event::Dial {
                peer,
                service,
                opened,
            } => json!({
                "peer": peer.to_string(),
                "service": service,
                "outcome": if *opened { "open" } else { "failed" },
            }),
            Event::Mcp {
                caller,
                service,
                method,
                target,
                args_sha256,
                outcome,
                reason,
                latency_us,
            } => json!({
                "caller": caller.to_string(),
                "service": service,
                "method": method,
                "target": target,
                "args_sha256": args_sha256,
                "outcome": outcome,
                "reason": reason,
                "latency_us": latency_us,
            }),
            Event::Rpc {
                caller,
                service,
                method,
                outcome,
                reason,
                latency_us,
            } => json!({
                "caller": caller.to_string(),
                "service": service,
                "method": method,
                "outcome": outcome,
                "reason": reason,
                "latency_us": latency_us,
            }),
            Event::Receipt {
                role,
                valid,
                receipt,
            } => {
                let mut m = match receipt {
                    Value::Object(m) => m.clone(),
                    _ => Map::new(),
                };
                m.insert("role".into(), json!(role));
                m.insert("valid".into(), json!(valid));
                Value::Object(m)
            }
            Event::RequestSignature {
                caller,
                service,
                request_sha256,
                sig,
                valid,
            } => json!({
                "caller": caller.to_string(),
                "service": service,
                "request_sha256": request_sha256,
                "sig": sig,
                "valid": valid,
            }),
            Event::Approval {
                caller,
                service,
                tool,
                args_sha256,
                outcome,
                by,
                reason,
            } => json!({
                "caller": caller.to_string(),
                "service": service,
                "tool": tool,
                "args_sha256": args_sha256,
                "outcome": outcome,
                "by": by,
                "reason": reason,
            }),
            Event::Grant {
                id,
                action,
                caller,
                service,
                tool,
                scope,
                by,
            } => json!({
                "id": id,
                "action": action,
                "caller": caller.to_string(),
                "service": service,
                "tool": tool,
                "scope": scope,
                "by": by,
            }),
            Event::ToolManifest {
                scope,
                tool,
                action,
                pinned,
                presented,
            } => json!({
                "scope": scope,
                "tool": tool,
                "action": action,
                "pinned": pinned,
                "presented": presented,
            }),
            Event::Console { action, detail } => json!({ "action": action, "detail": detail }),
        };
        match value {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }
}
