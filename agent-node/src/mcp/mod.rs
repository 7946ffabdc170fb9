//! MCP over nullport: a stdio MCP server exposed per caller session, behind the JSON-RPC
//! firewall that enforces the callee's per-caller policy.

pub mod approvals;
pub mod firewall;
pub mod http;

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nullport_keyring::McpGrant;
use nullport_protocol::NodeId;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;

use crate::audit::Audit;
use approvals::Approvals;
use firewall::{Firewall, MAX_MESSAGE, Verdict};
use http::{HttpTarget, HttpUpstream};

/// Where a caller session's messages go.
#[derive(Debug, Clone)]
pub enum UpstreamSpec {
    /// A stdio server command, one process per session.
    Stdio(Vec<String>),
    /// A local Streamable HTTP server.
    Http(HttpTarget),
}

/// The live upstream of one session.
#[derive(Clone)]
enum Upstream {
    Stdio(Arc<tokio::sync::Mutex<tokio::process::ChildStdin>>),
    Http(Arc<HttpUpstream>),
}

impl Upstream {
    /// Delivers one allowed message; answers (HTTP) go through the firewall to the caller.
    async fn send(
        &self,
        line: Vec<u8>,
        firewall: &Arc<Mutex<Firewall>>,
        to_caller: &mpsc::Sender<Vec<u8>>,
    ) -> std::io::Result<()> {
        match self {
            Upstream::Stdio(stdin) => stdin.lock().await.write_all(&line).await,
            Upstream::Http(http) => {
                let mut answers = Vec::new();
                let result = http.post(&line, |m| answers.push(m)).await;
                for m in answers {
                    let filtered = firewall.lock().ok().and_then(|mut f| f.from_server(&m));
                    if let Some(l) = filtered {
                        let _ = to_caller.send(l).await;
                    }
                }
                if let Err(e) = &result {
                    // Answer the request so the caller does not wait forever.
                    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&line)
                        && let Some(id) = v.get("id").filter(|_| v.get("method").is_some())
                    {
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

/// One line read with a bound.
enum Line {
    Message(Vec<u8>),
    TooLong,
    End,
}

/// Reads one `\n`-terminated line of at most `max` bytes; a longer one is consumed and
/// reported as `TooLong` so the stream stays in sync.
async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R, max: usize) -> std::io::Result<Line> {
    let mut line = Vec::new();
    let mut too_long = false;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(if line.is_empty() && !too_long {
                Line::End
            } else if too_long {
                Line::TooLong
            } else {
                Line::Message(line)
            });
        }
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        if !too_long {
            if line.len() + chunk.len() > max {
                too_long = true;
                line = Vec::new();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        let consumed = done.unwrap_or(buf.len());
        reader.consume(consumed);
        if done.is_some() {
            return Ok(if too_long {
                Line::TooLong
            } else {
                Line::Message(line)
            });
        }
    }
}

/// Looks up the caller's MCP rules in the policy in force (None: no longer allowed).
pub type GrantSource = Arc<dyn Fn() -> Option<McpGrant> + Send + Sync>;

/// The grant of a caller whose access was removed: nothing but errors.
fn revoked() -> McpGrant {
    McpGrant {
        rule: "(access removed)".into(),
        rules: nullport_keyring::McpRules::default(),
        approve: Vec::new(),
    }
}

/// Who is calling, for decisions and the audit log.
#[derive(Debug, Clone)]
pub struct Session {
    /// The caller proven by the handshake.
    pub caller: NodeId,
    /// The MCP service name.
    pub service: String,
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
) -> std::io::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let initial = grant().ok_or_else(|| std::io::Error::other("no MCP grant for this caller"))?;
    let firewall = Arc::new(Mutex::new(Firewall::new(initial)));
    let (reader, mut writer) = tokio::io::split(channel);
    // One writer towards the caller: server output and firewall replies.
    let (to_caller, mut outbox) = mpsc::channel::<Vec<u8>>(64);
    let write_task = tokio::spawn(async move {
        while let Some(line) = outbox.recv().await {
            if writer.write_all(&line).await.is_err() {
                return;
            }
        }
        let _ = writer.shutdown().await;
    });
    let (upstream, mut child, server_task) = match upstream {
        UpstreamSpec::Http(target) => (
            Upstream::Http(Arc::new(HttpUpstream::new(target.clone()))),
            None,
            None,
        ),
        UpstreamSpec::Stdio(command) => {
            let (program, args) = command
                .split_first()
                .ok_or_else(|| std::io::Error::other("empty MCP command"))?;
            let mut child = Command::new(program)
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()?;
            let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                return Err(std::io::Error::other("MCP server without pipes"));
            };
            if let Some(stderr) = child.stderr.take() {
                let service = session.service.clone();
                tokio::spawn(async move {
                    let mut lines = BufReader::new(stderr).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        tracing::debug!(%service, "mcp server stderr: {line}");
                    }
                });
            }
            // Server -> caller, filtered.
            let fw = firewall.clone();
            let tx = to_caller.clone();
            let server_task = tokio::spawn(async move {
                let mut out = BufReader::new(stdout);
                loop {
                    match read_line(&mut out, 64 << 20).await {
                        Ok(Line::Message(line)) => {
                            let filtered = fw.lock().ok().and_then(|mut f| f.from_server(&line));
                            if let Some(line) = filtered
                                && tx.send(line).await.is_err()
                            {
                                return;
                            }
                        }
                        Ok(Line::TooLong) => {
                            tracing::warn!("dropping an oversize message from the MCP server")
                        }
                        Ok(Line::End) | Err(_) => return,
                    }
                }
            });
            (
                Upstream::Stdio(Arc::new(tokio::sync::Mutex::new(stdin))),
                Some(child),
                Some(server_task),
            )
        }
    };
    // Caller -> server, through the firewall.
    let caller_task = {
        let upstream = upstream.clone();
        let firewall = firewall.clone();
        let tx = to_caller.clone();
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
                        audit.mcp(&session, &decision, started.elapsed());
                        match &upstream {
                            Upstream::Stdio(_) => upstream.send(line, &firewall, &tx).await?,
                            // HTTP: initialize first and alone (it creates the session); the
                            // rest concurrently, so a slow call does not hold up a ping.
                            Upstream::Http(_) if decision.method == "initialize" => {
                                let _ = upstream.send(line, &firewall, &tx).await;
                            }
                            Upstream::Http(_) => {
                                let (upstream, firewall, tx) =
                                    (upstream.clone(), firewall.clone(), tx.clone());
                                tokio::spawn(async move {
                                    let _ = upstream.send(line, &firewall, &tx).await;
                                });
                            }
                        }
                    }
                    Verdict::Reply(line) => {
                        audit.mcp(&session, &decision, started.elapsed());
                        tracing::info!(peer = %session.caller.fmt_short(), method = %decision.method, target = ?decision.target, "mcp denied: {}", decision.reason);
                        let _ = tx.send(line).await;
                    }
                    Verdict::Drop => audit.mcp(&session, &decision, started.elapsed()),
                    Verdict::Approve {
                        line,
                        denied,
                        tool,
                        args_digest,
                    } => {
                        audit.mcp(&session, &decision, started.elapsed());
                        let (approvals, session, audit, upstream, firewall, tx) = (
                            approvals.clone(),
                            session.clone(),
                            audit.clone(),
                            upstream.clone(),
                            firewall.clone(),
                            tx.clone(),
                        );
                        tokio::spawn(async move {
                            let approved = approvals
                                .ask(session.caller, &session.service, &tool, &args_digest)
                                .await;
                            let mut d = decision;
                            d.outcome = if approved { "approved" } else { "not approved" };
                            audit.mcp(&session, &d, started.elapsed());
                            if approved {
                                let _ = upstream.send(line, &firewall, &tx).await;
                            } else {
                                let _ = tx.send(denied).await;
                            }
                        });
                    }
                }
            }
        }
    };
    drop(to_caller);
    let caller_result = caller_task.await;
    // The caller is done sending: let the server finish what it was asked, then stop it.
    drop(upstream);
    if let Some(task) = server_task {
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
    if let Some(child) = child.as_mut() {
        let _ = child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), write_task).await;
    caller_result
}
