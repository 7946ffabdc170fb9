//! What both sides of an MCP session share: who is calling ([`Session`]), where the grant
//! comes from ([`GrantSource`]), the upstream ([`UpstreamSpec`]), bounded line reading, and
//! the audit events of the session.

use super::{firewall, receipt};
use std::sync::Arc;

use nullport_keyring::McpGrant;
use nullport_protocol::NodeId;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite};

use super::http::HttpTarget;
use nullport_audit::Event;

/// Where a caller session's messages go.
#[derive(Debug, Clone)]
pub enum UpstreamSpec {
    /// A stdio server command, one process per session, started with exactly this
    /// environment (nothing inherited from the daemon).
    Stdio {
        /// Program and arguments.
        command: Vec<String>,
        /// The process's whole environment.
        env: Vec<(String, String)>,
        /// Run it in this sandbox.
        sandbox: Option<crate::sandbox::Sandbox>,
    },
    /// A local Streamable HTTP server.
    Http(HttpTarget),
    /// A server living in this process (an embedding program's own MCP server): one byte
    /// stream of newline-delimited JSON-RPC per caller session, from its factory.
    Embedded(Embedded),
}

/// A byte stream to an in-process MCP server (one per caller session).
pub trait EmbeddedIo: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> EmbeddedIo for T {}

/// The factory of an in-process upstream: for each caller session (after the access
/// decision, before the first message), one stream whose other end the embedder's server
/// serves. Shutting down this side's writes is the end of the caller's session; the server
/// closing its end ends the session, as a stdio server exiting would.
#[derive(Clone)]
pub struct Embedded(Arc<EmbeddedFactory>);

/// What an [`Embedded`] upstream calls per caller session.
pub type EmbeddedFactory = dyn Fn(&Session) -> std::io::Result<Box<dyn EmbeddedIo>> + Send + Sync;

impl Embedded {
    /// An upstream whose sessions `factory` opens.
    pub fn new(
        factory: impl Fn(&Session) -> std::io::Result<Box<dyn EmbeddedIo>> + Send + Sync + 'static,
    ) -> Self {
        Self(Arc::new(factory))
    }

    /// Opens the stream of one caller session.
    pub fn open(&self, session: &Session) -> std::io::Result<Box<dyn EmbeddedIo>> {
        (self.0)(session)
    }
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Embedded(..)")
    }
}

/// One line read with a bound.
pub(super) enum Line {
    Message(Vec<u8>),
    TooLong,
    End,
}

/// Reads one `\n`-terminated line of at most `max` bytes; a longer one is consumed and
/// reported as `TooLong` so the stream stays in sync.
pub(super) async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> std::io::Result<Line> {
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

/// The id of a `tools/call` request line, if it is one (for receipts; the decision itself is
/// made by the firewall on its own parse).
pub(super) fn raw_tool_call_id(line: &[u8]) -> Option<serde_json::Value> {
    if !line.windows(10).any(|w| w == b"tools/call") {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(line).ok()?;
    (v["method"] == "tools/call")
        .then(|| v.get("id").cloned())
        .flatten()
}

/// Looks up the caller's MCP rules in the policy in force (None: no longer allowed).
pub type GrantSource = Arc<dyn Fn() -> Option<McpGrant> + Send + Sync>;

/// Who is calling, for decisions and the audit log.
#[derive(Debug, Clone)]
pub struct Session {
    /// The caller proven by the handshake.
    pub caller: NodeId,
    /// The MCP service name.
    pub service: String,
    /// The channel's Noise handshake hash (receipts are bound to it).
    pub handshake: [u8; 32],
    /// This node's identity, which signs receipts.
    pub signer: Arc<nullport_protocol::Identity>,
    /// The caller's alias here, if any (shown to whoever approves its calls).
    pub caller_alias: Option<String>,
}

/// The audit event of a firewall decision.
pub(super) fn decision_event(
    session: &Session,
    d: &firewall::Decision,
    latency: std::time::Duration,
) -> Event {
    Event::Mcp {
        caller: session.caller,
        service: session.service.clone(),
        method: d.method.clone(),
        target: d.target.clone(),
        args_sha256: d.args_digest.clone(),
        outcome: d.outcome.to_owned(),
        reason: d.reason.clone(),
        latency_us: u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
    }
}

/// The audit event of a receipt issued (callee) or received and checked (caller).
pub(super) fn receipt_event(r: &receipt::Receipt, role: &'static str, valid: bool) -> Event {
    Event::Receipt {
        role,
        valid,
        receipt: serde_json::to_value(r).unwrap_or_default(),
    }
}

/// The audit event of a caller's request signature, made (caller) or checked (callee).
pub(super) fn signature_event(
    session: &Session,
    s: Option<&receipt::RequestSignature>,
    valid: bool,
) -> Event {
    Event::RequestSignature {
        caller: session.caller,
        service: session.service.clone(),
        request_sha256: s.map(|s| s.request_sha256.clone()),
        sig: s.map(|s| s.sig.clone()),
        valid,
    }
}

pub(super) use super::firewall::id_key;
