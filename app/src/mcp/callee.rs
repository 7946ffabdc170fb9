//! The callee side of an MCP session: the upstream server (a stdio process with a clean
//! environment, or a local HTTP endpoint) behind the JSON-RPC firewall, and the way back to
//! the caller with signed receipts.

use crate::mcp::approvals::Request;
use crate::tasks::OwnedTask;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

use nullport_keyring::McpGrant;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use super::approvals::Approvals;
use super::firewall::{Firewall, MAX_MESSAGE, Verdict};
use super::http::HttpUpstream;
use super::receipt;
use super::session::*;
use crate::audit::Audit;

/// The live upstream of one session.
#[derive(Clone)]
enum Upstream {
    /// A byte stream: a server process's stdin, or an in-process server's stream.
    Pipe(Arc<tokio::sync::Mutex<Box<dyn AsyncWrite + Send + Unpin>>>),
    Http(Arc<HttpUpstream>),
}

impl Upstream {
    /// Delivers one allowed message; answers (HTTP) go through the firewall to the caller.
    async fn send(&self, line: Vec<u8>, out: &Outbound) -> std::io::Result<()> {
        let to_caller = &out.tx;
        match self {
            Upstream::Pipe(input) => {
                let mut input = input.lock().await;
                input.write_all(&line).await?;
                input.flush().await
            }
            Upstream::Http(http) => {
                let mut answers = Vec::new();
                let result = http.post(&line, |m| answers.push(m)).await;
                for m in answers {
                    out.deliver(&m).await;
                }
                if let Err(e) = &result {
                    // Answer the request so the caller does not wait forever.
                    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&line)
                        && let Some(id) = v.get("id").filter(|_| v.get("method").is_some())
                    {
                        if let Ok(mut f) = out.firewall.lock() {
                            f.answered_locally(id);
                        }
                        let err = serde_json::json!({ "jsonrpc": "2.0", "id": id, "error": { "code": -32603, "message": format!("MCP server unavailable: {e}") } });
                        let mut l = serde_json::to_vec(&err).unwrap_or_default();
                        l.push(b'\n');
                        let _ = to_caller.send(l).await;
                    }
                }
                result
            }
        }
    }
}

/// The grant of a caller whose access was removed: nothing but errors.
fn revoked() -> McpGrant {
    McpGrant {
        rule: "(access removed)".into(),
        rules: nullport_keyring::McpRules::default(),
        approve: Vec::new(),
    }
}

/// A forwarded tool call awaiting its answer: (request id, request digest, decision).
type PendingCall = (serde_json::Value, String, &'static str);

/// The way back to the caller: list filtering, and signed receipts for tool calls.
#[derive(Clone)]
struct Outbound {
    firewall: Arc<Mutex<Firewall>>,
    tx: mpsc::Sender<Vec<u8>>,
    session: Session,
    audit: Audit,
    pending: Arc<Mutex<HashMap<String, PendingCall>>>,
}

impl Outbound {
    /// Filters one server message and sends it (with a receipt if it answers a tool call).
    /// False once the caller is gone.
    async fn deliver(&self, raw: &[u8]) -> bool {
        let filtered = self
            .firewall
            .lock()
            .ok()
            .and_then(|mut f| f.from_server(raw));
        let Some(line) = filtered else { return true };
        let receipt = self.receipt_for_answer(&line);
        if self.tx.send(line).await.is_err() {
            return false;
        }
        if let Some(r) = receipt {
            let _ = self.tx.send(r.notification()).await;
        }
        true
    }

    /// Remembers a forwarded tool call, to sign a receipt when its answer comes.
    fn expect(&self, id: serde_json::Value, request_sha256: String, decision: &'static str) {
        if let (Some(key), Ok(mut p)) = (id_key(&id), self.pending.lock()) {
            p.insert(key, (id, request_sha256, decision));
        }
    }

    fn receipt_for_answer(&self, line: &[u8]) -> Option<receipt::Receipt> {
        let v: serde_json::Value = serde_json::from_slice(line).ok()?;
        if v.get("method").is_some() {
            return None;
        }
        let key = id_key(v.get("id")?)?;
        let (id, request, decision) = self.pending.lock().ok()?.remove(&key)?;
        Some(self.sign(&id, &request, decision, line))
    }

    fn sign(
        &self,
        id: &serde_json::Value,
        request: &str,
        decision: &str,
        answer: &[u8],
    ) -> receipt::Receipt {
        let answer = answer.strip_suffix(b"\n").unwrap_or(answer);
        let r = receipt::Receipt::sign(
            &self.session.signer,
            &self.session.handshake,
            &self.session.caller,
            id,
            request,
            decision,
            &receipt::digest(answer),
        );
        self.audit.record(receipt_event(&r, "issued", true));
        r
    }

    /// Sends a firewall reply to a tool call, followed by its receipt.
    async fn reply_with_receipt(
        &self,
        line: Vec<u8>,
        id: &serde_json::Value,
        request: &str,
        decision: &str,
    ) {
        let r = self.sign(id, request, decision, &line);
        let _ = self.tx.send(line).await;
        let _ = self.tx.send(r.notification()).await;
    }
}

/// Serves one caller session: starts the upstream (a stdio server process, or a session with
/// a local HTTP server) and relays JSON-RPC lines both ways through the firewall. Returns
/// when the caller is done and the server has answered, or the channel fails; a server
/// process is killed then.
pub async fn serve<C>(
    channel: C,
    upstream: &UpstreamSpec,
    grant: GrantSource,
    session: Session,
    approvals: Arc<Approvals>,
    audit: Audit,
    pins: Arc<crate::mcp::pins::Pins>,
) -> std::io::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let initial = grant().ok_or_else(|| std::io::Error::other("no MCP grant for this caller"))?;
    let firewall = Arc::new(Mutex::new(
        Firewall::new(initial).with_pins(pins, &session.service),
    ));
    let (reader, mut writer) = tokio::io::split(channel);
    // One writer towards the caller: server output and firewall replies.
    let (to_caller, mut outbox) = mpsc::channel::<Vec<u8>>(64);
    let mut write_task = OwnedTask::spawn(async move {
        while let Some(line) = outbox.recv().await {
            if writer.write_all(&line).await.is_err() {
                return;
            }
        }
        let _ = writer.shutdown().await;
    });
    let out = Outbound {
        firewall: firewall.clone(),
        tx: to_caller.clone(),
        session: session.clone(),
        audit: audit.clone(),
        pending: Arc::new(Mutex::new(HashMap::new())),
    };
    let upstream_spec = upstream;
    let (upstream, mut child, server_task) = match upstream {
        UpstreamSpec::Http(target) => (
            Upstream::Http(Arc::new(HttpUpstream::new(target.clone()))),
            None,
            None,
        ),
        UpstreamSpec::Stdio {
            command,
            env,
            sandbox,
        } => {
            let mut child = crate::services::exec::spawn_exec(command, env, sandbox.as_ref())?;
            let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                return Err(std::io::Error::other("MCP server without pipes"));
            };
            let stderr_task = child.stderr.take().map(|stderr| {
                let service = session.service.clone();
                OwnedTask::spawn(
                    async move { crate::services::io::log_stderr(stderr, &service).await },
                )
            });
            (
                Upstream::Pipe(Arc::new(tokio::sync::Mutex::new(Box::new(stdin)))),
                Some(child),
                Some(server_output(Box::new(stdout), out.clone(), stderr_task)),
            )
        }
        UpstreamSpec::Embedded(embedded) => {
            let (output, input) = tokio::io::split(embedded.open(&session)?);
            (
                Upstream::Pipe(Arc::new(tokio::sync::Mutex::new(Box::new(input)))),
                None,
                Some(server_output(Box::new(output), out.clone(), None)),
            )
        }
    };
    // Requests in flight (HTTP calls, approvals being asked): owned here, given a bounded
    // time to finish once the caller is done, then stopped.
    let mut requests = JoinSet::new();
    // Calls waiting for a person: they end with the caller (nothing is left to approve for
    // a caller that went away).
    let mut awaiting = JoinSet::new();
    // Caller -> server, through the firewall.
    let caller_task = {
        let requests = &mut requests;
        let awaiting = &mut awaiting;
        let source = grant.clone();
        let upstream = upstream.clone();
        let firewall = firewall.clone();
        let tx = to_caller.clone();
        let out = out.clone();
        async move {
            let mut input = BufReader::new(reader);
            loop {
                let started = Instant::now();
                let line = match read_line(&mut input, MAX_MESSAGE).await? {
                    Line::Message(line) if line.iter().all(u8::is_ascii_whitespace) => continue,
                    Line::Message(line) => line,
                    Line::TooLong => vec![b' '; MAX_MESSAGE + 1],
                    Line::End => return Ok::<(), std::io::Error>(()),
                };
                // The caller daemon's signature over its next tool call: verify, audit, keep
                // it away from the server.
                if line
                    .windows(receipt::REQUEST_SIGNATURE_METHOD.len())
                    .any(|w| w == receipt::REQUEST_SIGNATURE_METHOD.as_bytes())
                    && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&line)
                    && v["method"] == receipt::REQUEST_SIGNATURE_METHOD
                {
                    let sig: Option<receipt::RequestSignature> =
                        serde_json::from_value(v["params"].clone()).ok();
                    let valid = sig
                        .as_ref()
                        .is_some_and(|s| s.verify(&session.caller, &session.handshake));
                    audit.record(signature_event(&session, sig.as_ref(), valid));
                    continue;
                }
                let raw = line;
                let call_id = raw_tool_call_id(&raw);
                let request_sha = receipt::digest(&raw);
                let line = raw;
                // The policy may have been reloaded: decide with the rules in force now.
                let current = grant().unwrap_or_else(revoked);
                let (verdict, decision) = match firewall.lock() {
                    Ok(mut f) => {
                        f.set_grant(current);
                        f.from_caller(&line, Instant::now())
                    }
                    Err(_) => return Err(std::io::Error::other("firewall poisoned")),
                };
                match verdict {
                    Verdict::Forward(line) => {
                        audit.record(decision_event(&session, &decision, started.elapsed()));
                        if let Some(id) = call_id.clone() {
                            out.expect(id, request_sha.clone(), "allowed");
                        }
                        match &upstream {
                            Upstream::Pipe(_) => upstream.send(line, &out).await?,
                            // HTTP: initialize first and alone (it creates the session); the
                            // rest concurrently, so a slow call does not hold up a ping.
                            Upstream::Http(_) if decision.method == "initialize" => {
                                let _ = upstream.send(line, &out).await;
                            }
                            Upstream::Http(_) => {
                                let (upstream, out) = (upstream.clone(), out.clone());
                                while requests.try_join_next().is_some() {}
                                requests.spawn(async move {
                                    let _ = upstream.send(line, &out).await;
                                });
                            }
                        }
                    }
                    Verdict::Reply(line) => {
                        audit.record(decision_event(&session, &decision, started.elapsed()));
                        tracing::info!(peer = %session.caller.fmt_short(), method = %decision.method, target = ?decision.target, "mcp denied: {}", decision.reason);
                        match &call_id {
                            Some(id) => {
                                out.reply_with_receipt(line, id, &request_sha, "denied")
                                    .await
                            }
                            None => {
                                let _ = tx.send(line).await;
                            }
                        }
                    }
                    Verdict::Drop => {
                        audit.record(decision_event(&session, &decision, started.elapsed()))
                    }
                    Verdict::Approve {
                        line,
                        denied,
                        tool,
                        args_digest,
                        args,
                    } => {
                        audit.record(decision_event(&session, &decision, started.elapsed()));
                        let (approvals, session, audit, upstream, out, call_id, request_sha) = (
                            approvals.clone(),
                            session.clone(),
                            audit.clone(),
                            upstream.clone(),
                            out.clone(),
                            call_id.clone(),
                            request_sha.clone(),
                        );
                        let source = source.clone();
                        while awaiting.try_join_next().is_some() {}
                        awaiting.spawn(async move {
                            let resolution = approvals
                                .ask(Request {
                                    caller: session.caller,
                                    caller_alias: session.caller_alias.as_deref(),
                                    service: &session.service,
                                    tool: &tool,
                                    args: &args,
                                    args_digest: &args_digest,
                                    session: &session.handshake,
                                })
                                .await;
                            // Approved, but is the caller still allowed this tool now (access
                            // may have been taken away while it waited)?
                            let still_allowed = source().is_some_and(|g| {
                                nullport_keyring::pattern::any_matches(
                                    nullport_keyring::pattern::PatternKind::Glob,
                                    &g.rules.tools,
                                    &tool,
                                )
                            });
                            let approved = resolution.approved() && still_allowed;
                            let mut d = decision;
                            d.outcome = match resolution.outcome.as_str() {
                                _ if resolution.approved() && !still_allowed => {
                                    "approved, but access was taken away meanwhile"
                                }
                                "approved" => "approved",
                                "granted" => "granted",
                                "timed out" => "timed out",
                                _ => "not approved",
                            };
                            audit.record(decision_event(&session, &d, started.elapsed()));
                            match (approved, call_id) {
                                (true, id) => {
                                    if let Some(id) = &id
                                        && let Ok(mut f) = out.firewall.lock()
                                    {
                                        f.sent_after_approval(id);
                                    }
                                    if let Some(id) = id {
                                        out.expect(id, request_sha, "approved");
                                    }
                                    let _ = upstream.send(line, &out).await;
                                }
                                (false, Some(id)) => {
                                    if let Ok(mut f) = out.firewall.lock() {
                                        f.answered_locally(&id);
                                    }
                                    out.reply_with_receipt(
                                        denied,
                                        &id,
                                        &request_sha,
                                        "not approved",
                                    )
                                    .await
                                }
                                (false, None) => {
                                    let _ = out.tx.send(denied).await;
                                }
                            }
                        });
                    }
                }
            }
        }
    };
    drop(to_caller);
    // A server process that exits (or closes its output) ends the session: the caller sees
    // the channel close, as it would see a local stdio server's pipe close, instead of
    // waiting for answers that cannot come.
    let mut server_task = server_task;
    let mut server_ended = false;
    let service = out.session.service.clone();
    let caller_result = {
        let server_done = async {
            match server_task.as_mut() {
                Some(task) => {
                    let _ = task.await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = caller_task => result,
            () = server_done => {
                server_ended = true;
                let status = child.as_mut().and_then(|c| c.try_wait().ok().flatten());
                tracing::warn!(%service, ?status, "the MCP server ended the session (its output closed); closing the channel");
                Ok(())
            }
        }
    };
    drop(awaiting);
    // Only the server task and requests in flight may still write to the caller.
    drop(out);
    // The caller is done sending: let the server finish what it was asked, then stop it.
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while requests.join_next().await.is_some() {}
    })
    .await;
    drop(requests);
    // The end of the caller's input: a stdio server's stdin closes with the drop; an
    // in-process server's stream needs its write side shut.
    if let Upstream::Pipe(input) = &upstream {
        let _ = input.lock().await.shutdown().await;
    }
    drop(upstream);
    if let Some(mut task) = server_task.filter(|_| !server_ended) {
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut task).await;
    }
    if let Some(child) = child.as_mut() {
        let sandboxed = matches!(
            upstream_spec,
            UpstreamSpec::Stdio {
                sandbox: Some(_),
                ..
            }
        );
        crate::services::exec::end_process(child, sandboxed).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), &mut write_task).await;
    caller_result
}

/// Reads a server's output (a process's stdout, an in-process server's stream) and delivers
/// it through the firewall to the caller, until it ends or the caller is gone.
fn server_output(
    output: Box<dyn AsyncRead + Send + Unpin>,
    out: Outbound,
    stderr_task: Option<OwnedTask<()>>,
) -> OwnedTask<()> {
    OwnedTask::spawn(async move {
        let _stderr = stderr_task;
        let mut output = BufReader::new(output);
        loop {
            match read_line(&mut output, 64 << 20).await {
                Ok(Line::Message(line)) => {
                    if !out.deliver(&line).await {
                        return;
                    }
                }
                Ok(Line::TooLong) => {
                    tracing::warn!("dropping an oversize message from the MCP server")
                }
                Ok(Line::End) | Err(_) => return,
            }
        }
    })
}
