//! The JSON-RPC firewall at the callee: every message from the caller is parsed once, the
//! parsed value is checked against the caller's MCP rules, and that very value (re-encoded)
//! is what the server receives. Results the caller may not see are filtered out of list
//! responses. No I/O here: lines in, decisions out.
//!
//! Rules of the road:
//! - batches (JSON arrays) are refused with -32600: batching left MCP in 2025-06-18 and has
//!   been used to smuggle calls past tool filters;
//! - unknown methods are denied (default deny); policy denials use code [`DENIED`] with the
//!   rule named in the message and in `data`;
//! - identity claims inside payloads mean nothing: the caller is who the handshake proved;
//! - a malformed or oversize message gets an error and the session stays usable.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use nullport_keyring::{CallGate, CallGrant, CallRefused, McpGrant};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

mod ids;
mod server;
use ids::InFlight;
pub(crate) use ids::{id_key, loose_id_key, respelled_answer};

/// JSON-RPC parse error.
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC invalid request (also: batches, oversize messages).
pub const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC method not found (not allowed under default deny).
pub const METHOD_NOT_FOUND: i64 = -32601;
/// Denied by the callee's nullport policy.
pub const DENIED: i64 = -32001;
/// Over a per-caller quota.
pub const QUOTA_EXCEEDED: i64 = -32002;
/// A human did not approve the call (denied or timed out).
pub const NOT_APPROVED: i64 = -32003;

/// Largest message accepted from a caller, in bytes.
pub const MAX_MESSAGE: usize = 4 << 20;

/// Methods every caller with a grant may use; calls are further checked by name.
const DEFAULT_METHODS: &[&str] = &[
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "prompts/list",
    "prompts/get",
];

/// Notifications a caller may send.
const CALLER_NOTIFICATIONS: &[&str] = &[
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/roots/list_changed",
];

/// What to do with one message from the caller.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Send this line to the server.
    Forward(Vec<u8>),
    /// Send this line (a JSON-RPC error) back to the caller; nothing reaches the server.
    Reply(Vec<u8>),
    /// Ask a human first; forward `line` if approved, else reply `denied`.
    Approve {
        /// The request to forward if approved.
        line: Vec<u8>,
        /// The error to send if not.
        denied: Vec<u8>,
        /// The tool.
        tool: String,
        /// SHA-256 of the tool arguments (hex).
        args_digest: String,
        /// The tool arguments (shown to the person who approves).
        args: Value,
    },
    /// Drop silently (a notification or response that is not allowed).
    Drop,
}

/// One MCP decision, for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// JSON-RPC method (empty if unparseable).
    pub method: String,
    /// Tool, resource or prompt named, if any.
    pub target: Option<String>,
    /// SHA-256 of the arguments (hex), for `tools/call`.
    pub args_digest: Option<String>,
    /// "allowed", "denied", "approval", "invalid".
    pub outcome: &'static str,
    /// Why (the rule or the check).
    pub reason: String,
}

pub use nullport_keyring::pattern::glob_match;
use nullport_keyring::pattern::{PatternKind, any_matches};

/// A normalised absolute path as this host would open it: the longest part that exists with
/// its symlinks resolved, the rest as written (it does not exist yet: nothing to resolve).
pub fn resolve_on_this_host(path: &str) -> String {
    let mut existing = std::path::PathBuf::from(path);
    let mut rest: Vec<std::ffi::OsString> = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(&existing) {
            let mut full = real;
            for part in rest.iter().rev() {
                full.push(part);
            }
            return full.to_string_lossy().into_owned();
        }
        match (
            existing.file_name().map(|n| n.to_owned()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return path.to_owned(),
        }
    }
}

fn error_line(id: Value, code: i64, message: &str, data: Option<Value>) -> Vec<u8> {
    let mut error = json!({ "code": code, "message": message });
    if let Some(d) = data {
        error["data"] = d;
    }
    let mut line = serde_json::to_vec(&json!({ "jsonrpc": "2.0", "id": id, "error": error }))
        .unwrap_or_default();
    line.push(b'\n');
    line
}

fn encode(value: &Value) -> Vec<u8> {
    let mut line = serde_json::to_vec(value).unwrap_or_default();
    line.push(b'\n');
    line
}

/// Which list a pending request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListKind {
    Tools,
    Resources,
    ResourceTemplates,
    Prompts,
}

/// The firewall for one caller session.
#[derive(Debug)]
pub struct Firewall {
    grant: McpGrant,
    /// The pinned tool manifests, and the scope this session's tools are pinned under.
    pins: Option<(std::sync::Arc<crate::mcp::pins::Pins>, String)>,
    pending_lists: HashMap<String, ListKind>,
    pending_calls: HashSet<String>,
    /// Every caller request forwarded and not answered yet (by exact id: `1`, `"1"` and
    /// `1.0` are different ids): only these may be answered by the server, once each.
    forwarded: HashMap<String, InFlight>,
    server_requests: HashSet<String>,
    /// The call gate shared with typed RPC: tool names, quotas, approvals.
    gate: CallGate,
}

/// The call gate's view of an MCP grant: tools are the names called.
fn tool_gate(grant: &McpGrant) -> CallGrant {
    CallGrant {
        rule: grant.rule.clone(),
        names: grant.rules.tools.clone(),
        narrowed: None,
        approve: grant.approve.clone(),
        calls_per_minute: grant.rules.calls_per_minute,
        max_concurrent: grant.rules.max_concurrent,
    }
}

/// Most caller requests in flight in one session (a caller past it is answered with an
/// error until the server catches up).
pub const MAX_IN_FLIGHT: usize = 1024;

impl Firewall {
    /// A firewall applying `grant`.
    pub fn new(grant: McpGrant) -> Self {
        Self {
            gate: CallGate::new(tool_gate(&grant)),
            grant,
            pins: None,
            pending_lists: HashMap::new(),
            pending_calls: HashSet::new(),
            forwarded: HashMap::new(),
            server_requests: HashSet::new(),
        }
    }

    /// Checks this session's tools against `pins` under `scope`: changed and new tools are
    /// hidden and refused until accepted.
    pub fn with_pins(mut self, pins: std::sync::Arc<crate::mcp::pins::Pins>, scope: &str) -> Self {
        self.pins = Some((pins, scope.to_owned()));
        self
    }

    /// Replaces the rules (policy reload).
    pub fn set_grant(&mut self, grant: McpGrant) {
        self.gate.set_grant(tool_gate(&grant));
        self.grant = grant;
    }

    fn deny(
        &self,
        id: Value,
        method: &str,
        target: Option<String>,
        what: String,
    ) -> (Verdict, Decision) {
        let message = format!(
            "denied by nullport policy (rule {:?}): {what}",
            self.grant.rule
        );
        let data = json!({ "rule": self.grant.rule, "reason": what });
        (
            Verdict::Reply(error_line(id, DENIED, &message, Some(data))),
            Decision {
                method: method.to_owned(),
                target,
                args_digest: None,
                outcome: "denied",
                reason: what,
            },
        )
    }

    fn over_quota(
        &self,
        id: Value,
        method: String,
        target: Option<String>,
        args_digest: Option<String>,
        what: String,
    ) -> (Verdict, Decision) {
        let message = format!("over quota (rule {:?}): {what}", self.grant.rule);
        (
            Verdict::Reply(error_line(
                id,
                QUOTA_EXCEEDED,
                &message,
                Some(json!({ "rule": self.grant.rule })),
            )),
            Decision {
                method,
                target,
                args_digest,
                outcome: "denied",
                reason: what,
            },
        )
    }

    /// Checks one message (one line, without the newline) from the caller.
    pub fn from_caller(&mut self, line: &[u8], now: Instant) -> (Verdict, Decision) {
        let invalid = |code: i64, message: &str| {
            (
                Verdict::Reply(error_line(Value::Null, code, message, None)),
                Decision {
                    method: String::new(),
                    target: None,
                    args_digest: None,
                    outcome: "invalid",
                    reason: message.to_owned(),
                },
            )
        };
        if line.len() > MAX_MESSAGE {
            return invalid(INVALID_REQUEST, "message too large");
        }
        let value: Value = match serde_json::from_slice(line) {
            Ok(v) => v,
            Err(_) => return invalid(PARSE_ERROR, "Parse error"),
        };
        let Value::Object(msg) = value else {
            let what = if value.is_array() {
                "batches are not accepted (MCP 2025-06-18 removed them)"
            } else {
                "not a JSON-RPC object"
            };
            return invalid(INVALID_REQUEST, what);
        };
        if msg.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return invalid(INVALID_REQUEST, "jsonrpc must be \"2.0\"");
        }
        let id = msg.get("id").cloned();
        let method = msg.get("method").and_then(Value::as_str).map(str::to_owned);
        match (method, id) {
            // A response to a request the server sent us.
            (None, Some(id)) => {
                let known = id_key(&id).is_some_and(|k| self.server_requests.remove(&k));
                let decision = Decision {
                    method: "(response)".into(),
                    target: None,
                    args_digest: None,
                    outcome: if known { "allowed" } else { "denied" },
                    reason: if known {
                        "answers a server request".into()
                    } else {
                        "answers nothing the server asked".into()
                    },
                };
                if known {
                    (Verdict::Forward(encode(&Value::Object(msg))), decision)
                } else {
                    (Verdict::Drop, decision)
                }
            }
            (None, None) => invalid(INVALID_REQUEST, "neither a request nor a response"),
            // A notification.
            (Some(method), None) => {
                let allowed = CALLER_NOTIFICATIONS.contains(&method.as_str());
                let decision = Decision {
                    method: method.clone(),
                    target: None,
                    args_digest: None,
                    outcome: if allowed { "allowed" } else { "denied" },
                    reason: "notification".into(),
                };
                if allowed {
                    (Verdict::Forward(encode(&Value::Object(msg))), decision)
                } else {
                    (Verdict::Drop, decision)
                }
            }
            (Some(method), Some(id)) => {
                let Some(key) = id_key(&id) else {
                    return invalid(INVALID_REQUEST, "request id must be a string or a number");
                };
                let loose = loose_id_key(&id);
                let taken = self.forwarded.contains_key(&key)
                    || self
                        .forwarded
                        .values()
                        .any(|f| loose.is_some() && loose_id_key(&f.id) == loose);
                if taken {
                    return self.deny(
                        id,
                        &method,
                        None,
                        "a request with this id is in flight".into(),
                    );
                }
                if self.forwarded.len() >= MAX_IN_FLIGHT {
                    let what = format!("quota: {MAX_IN_FLIGHT} requests in flight");
                    return self.over_quota(id, method, None, None, what);
                }
                let decided = self.check_request(msg, method, id.clone(), key.clone(), now);
                match decided.0 {
                    Verdict::Forward(_) => {
                        self.forwarded.insert(key, InFlight { id, sent: true });
                    }
                    Verdict::Approve { .. } => {
                        self.forwarded.insert(key, InFlight { id, sent: false });
                    }
                    _ => {}
                }
                decided
            }
        }
    }

    fn check_request(
        &mut self,
        msg: Map<String, Value>,
        method: String,
        id: Value,
        key: String,
        now: Instant,
    ) -> (Verdict, Decision) {
        let rules = &self.grant.rules;
        if !DEFAULT_METHODS.contains(&method.as_str())
            && !rules.methods.iter().any(|m| m == &method)
        {
            let what = format!("method {method:?} is not allowed");
            let message = format!(
                "Method not found or not allowed (rule {:?}): {method}",
                self.grant.rule
            );
            return (
                Verdict::Reply(error_line(
                    id,
                    METHOD_NOT_FOUND,
                    &message,
                    Some(json!({ "rule": self.grant.rule })),
                )),
                Decision {
                    method,
                    target: None,
                    args_digest: None,
                    outcome: "denied",
                    reason: what,
                },
            );
        }
        let params = msg.get("params").and_then(Value::as_object);
        let name = params
            .and_then(|p| p.get("name"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let allowed_by =
            |patterns: &[String], value: &str| any_matches(PatternKind::Glob, patterns, value);
        let mut target = None;
        let mut args_digest = None;
        match method.as_str() {
            "tools/call" => {
                let Some(tool) = name else {
                    return self.deny(id, &method, None, "tools/call without a tool name".into());
                };
                let tool = tool.as_str();
                target = Some(tool.to_owned());
                if !self.gate.grant().allows(tool) {
                    return self.deny(id, &method, target, format!("tool {tool:?} is not allowed"));
                }
                let args = params
                    .and_then(|p| p.get("arguments"))
                    .cloned()
                    .unwrap_or(Value::Null);
                let digest = nullport_protocol::hex::encode(&Sha256::digest(
                    serde_json::to_vec(&args).unwrap_or_default(),
                ));
                args_digest = Some(digest.clone());
                if let Some((pins, scope)) = &self.pins
                    && let Err(e) = pins.call_allowed(scope, tool)
                {
                    return self.deny(id, &method, target, e.to_string());
                }
                if let Err(e) =
                    nullport_keyring::args::check(&rules.args, tool, &args, &resolve_on_this_host)
                {
                    let (verdict, mut decision) = self.deny(id, &method, target, e.to_string());
                    decision.args_digest = args_digest;
                    return (verdict, decision);
                }
                if let Err(refused) = self.gate.take_quota(self.pending_calls.len(), now) {
                    let what = match refused {
                        CallRefused::PerMinute(limit) => {
                            format!("quota: {limit} tool calls per minute")
                        }
                        CallRefused::Concurrent(limit) => {
                            format!("quota: {limit} concurrent tool calls")
                        }
                        other => other.to_string(),
                    };
                    return self.over_quota(id, method, target, args_digest, what);
                }
                self.pending_calls.insert(key.clone());
                if self.gate.grant().needs_approval(tool) {
                    let line = encode(&Value::Object(msg));
                    let denied = error_line(
                        id,
                        NOT_APPROVED,
                        &format!("tool {tool:?} needs a human's approval, which was not given"),
                        None,
                    );
                    return (
                        Verdict::Approve {
                            line,
                            denied,
                            tool: tool.to_owned(),
                            args_digest: digest.clone(),
                            args,
                        },
                        Decision {
                            method,
                            target,
                            args_digest,
                            outcome: "approval",
                            reason: format!("rule {:?}; tool marked approve", self.grant.rule),
                        },
                    );
                }
            }
            "resources/read" => {
                let uri = params
                    .and_then(|p| p.get("uri"))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                let Some(uri) = uri else {
                    return self.deny(id, &method, None, "resources/read without a uri".into());
                };
                let uri = uri.as_str();
                target = Some(uri.to_owned());
                match nullport_keyring::uri::covered_by_any(&rules.resources, uri) {
                    Ok(true) => {}
                    Ok(false) => {
                        return self.deny(
                            id,
                            &method,
                            target,
                            format!("resource {uri:?} is not under an allowed prefix"),
                        );
                    }
                    Err(e) => {
                        return self.deny(
                            id,
                            &method,
                            target,
                            format!("resource {uri:?} refused: {e}"),
                        );
                    }
                }
            }
            "prompts/get" => {
                let Some(prompt) = name else {
                    return self.deny(id, &method, None, "prompts/get without a name".into());
                };
                let prompt = prompt.as_str();
                target = Some(prompt.to_owned());
                if !allowed_by(&rules.prompts, prompt) {
                    return self.deny(
                        id,
                        &method,
                        target,
                        format!("prompt {prompt:?} is not allowed"),
                    );
                }
            }
            "tools/list" => {
                self.pending_lists.insert(key, ListKind::Tools);
            }
            "resources/list" => {
                self.pending_lists.insert(key, ListKind::Resources);
            }
            "resources/templates/list" => {
                self.pending_lists.insert(key, ListKind::ResourceTemplates);
            }
            "prompts/list" => {
                self.pending_lists.insert(key, ListKind::Prompts);
            }
            _ => {}
        }
        let reason = format!("rule {:?}", self.grant.rule);
        (
            Verdict::Forward(encode(&Value::Object(msg))),
            Decision {
                method,
                target,
                args_digest,
                outcome: "allowed",
                reason,
            },
        )
    }

    /// Marks a call that waited for a person as sent to the server now (approved): from
    /// here on the server may answer it.
    pub fn sent_after_approval(&mut self, id: &Value) {
        if let Some(f) = id_key(id).and_then(|k| self.forwarded.get_mut(&k)) {
            f.sent = true;
        }
    }

    /// Forgets a forwarded request that was answered without the server (an approval
    /// refused, an HTTP server that could not be reached): its id may be used again.
    pub fn answered_locally(&mut self, id: &Value) {
        if let Some(key) = id_key(id) {
            self.forwarded.remove(&key);
            self.pending_calls.remove(&key);
        }
    }

    /// Tool calls sent to the server and not answered yet.
    pub fn calls_in_flight(&self) -> usize {
        self.pending_calls.len()
    }
}

#[cfg(test)]
mod tests;
