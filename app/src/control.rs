//! The daemon's control protocol on its Unix socket (mode 0600, in the node's home).
//!
//! One JSON request line, one JSON response line. After a successful `pipe` response the
//! connection carries the channel's raw bytes both ways. An `attach` request line carries
//! file descriptors (`SCM_RIGHTS`, see [`crate::fdpass`]) that the daemon splices to the
//! channel itself: the connection then carries only the outcome.

use serde::{Deserialize, Serialize};

/// A request from the CLI.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum ControlRequest {
    /// The daemon's state.
    Status,
    /// Re-read config, policy and trust store.
    Reload,
    /// Stop the daemon cleanly (`nullport down`): channels closed with a close frame, the
    /// relay link closed, the control socket removed.
    Stop,
    /// Publish a signed revocation list through the relay.
    PublishRevocations {
        /// The list.
        list: nullport_protocol::relay_link::SignedRevocations,
    },
    /// Publish this node's key rotation through the relay.
    PublishRotation {
        /// The statement.
        rotation: nullport_protocol::relay_link::SignedRotation,
    },
    /// The latest audit checkpoint the relay witnessed for this node.
    AuditWitness,
    /// Tool calls waiting for a human's approval.
    Approvals,
    /// Approve or deny a waiting call.
    Answer {
        /// The approval id.
        id: String,
        /// Approve (true) or deny.
        approve: bool,
        /// Why, if the person said.
        #[serde(default)]
        reason: Option<String>,
        /// With an approval: a standing grant beyond this call.
        #[serde(default)]
        grant: Option<crate::mcp::approvals::GrantScope>,
    },
    /// Accept the held manifest of an MCP tool (it is pinned as the server presents it).
    AcceptPin {
        /// The service (or `peer/service` on a caller).
        scope: String,
        /// The tool.
        tool: String,
    },
    /// End a standing approval grant now.
    RevokeGrant {
        /// The grant's id.
        id: String,
    },
    /// Stream approval events (one JSON line each) until the client goes away.
    WatchApprovals,
    /// Start the local console (if it is not running) and issue a one-time login URL.
    Console {
        /// The loopback port (none: any free port; ignored if the console runs).
        #[serde(default)]
        port: Option<u16>,
    },
    /// How the pipe `id` (from a `pipe` answer) ended: answered once it has ended (`note`:
    /// the reason, if it did not end cleanly).
    PipeEnded {
        /// The pipe's id.
        id: u64,
    },
    /// Open a channel to `peer`/`service` and splice it to this connection.
    Pipe {
        /// Alias or NodeId.
        peer: String,
        /// Service name.
        service: String,
        /// An MCP session: sign tool calls and check the callee's receipts.
        #[serde(default)]
        mcp: bool,
        /// An MCP session: pin the callee's tool manifests on this side too (changed or new
        /// tools are hidden and refused here until accepted).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        pin: bool,
        /// A capability token (text form) to present in the handshake.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    /// Open a channel to `peer`/`service` and splice it, inside the daemon, to the file
    /// descriptors sent with this line: answered once the channel is open (or refused,
    /// with the same errors as `pipe`); for [`Local::Stdio`], answered again when it has
    /// ended (`ok`, or not with `note`: why), and closed if this connection closes first.
    Attach {
        /// Alias or NodeId.
        peer: String,
        /// Service name.
        service: String,
        /// What the descriptors are.
        local: Local,
        /// An MCP session (as for `pipe`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        mcp: bool,
        /// Pin the callee's tool manifests on this side too (as for `pipe`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        pin: bool,
        /// A capability token (text form) to present in the handshake.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
}

/// What the descriptors sent with an `attach` request are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Local {
    /// One connected stream socket (`connect`), served until both directions are done.
    Socket,
    /// Standard input, then standard output (`pipe`), served until the channel is done
    /// sending.
    Stdio,
    /// One listening stream socket (`connect --listen`): the daemon accepts on it and
    /// serves each connection as a [`Local::Socket`] of its own. Answered once (`ok`:
    /// serving), then with one line (`ok: false`, `error`) per connection whose channel was
    /// refused; the daemon stops accepting when this control connection closes (connections
    /// already served go on).
    Listener,
}

/// The daemon's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControlResponse {
    /// Whether the request succeeded.
    pub ok: bool,
    /// The error, if not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Status, for `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// Waiting approvals, for `approvals` (and the one answered, for `answer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvals: Option<Vec<crate::mcp::approvals::PendingApproval>>,
    /// The console's one-time login URL, for `console`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console: Option<String>,
    /// Standing approval grants, for `approvals` (and the one revoked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grants: Option<Vec<crate::mcp::approvals::Grant>>,
    /// The witnessed checkpoint, for `auditwitness`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witness: Option<serde_json::Value>,
    /// Something the user should know about a request that succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The id of a pipe just opened (ask `pipeended` with it for how it ended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipe: Option<u64>,
}

impl ControlResponse {
    /// Success without data.
    pub fn ok() -> Self {
        Self {
            ok: true,
            error: None,
            status: None,
            approvals: None,
            grants: None,
            console: None,
            witness: None,
            note: None,
            pipe: None,
        }
    }

    /// Failure.
    pub fn error(e: impl std::fmt::Display) -> Self {
        Self {
            ok: false,
            error: Some(e.to_string()),
            status: None,
            approvals: None,
            grants: None,
            console: None,
            witness: None,
            note: None,
            pipe: None,
        }
    }
}

/// What `nullport status` shows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// This node.
    pub node_id: String,
    /// The relay address.
    pub relay: String,
    /// The relay link state.
    pub link: String,
    /// Exposed services.
    pub services: Vec<ServiceStatus>,
    /// Open channels.
    pub channels: Vec<ChannelStatus>,
    /// Revocation lists held, and what each applies to here.
    #[serde(default)]
    pub revocations: Vec<ListStatus>,
    /// Keys retired by rotations (refused for good).
    #[serde(default)]
    pub retired_keys: usize,
    /// Why the files on disk are not in force (a reload failed; the previous configuration
    /// runs), if they are not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_error: Option<String>,
    /// What changed on disk that only a restart applies, if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_needed: Option<String>,
    /// A fleet node: where it is homed, the relay map it holds, its relay links.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetStatus>,
}

/// The fleet side of a node's status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetStatus {
    /// The relay the node is homed on (none while no link is up).
    pub home: Option<String>,
    /// The version of the relay map held (none: not received yet).
    pub map_version: Option<u64>,
    /// Every relay link: the relay's NodeId and whether the link is up.
    pub links: Vec<(String, bool)>,
}

/// One revocation list held.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListStatus {
    /// The signer's NodeId.
    pub signer: String,
    /// Its alias here, if any.
    pub alias: Option<String>,
    /// The list's version.
    pub version: u64,
    /// Keys it revokes.
    pub keys: usize,
    /// Tokens it revokes.
    pub tokens: usize,
    /// What it applies to here.
    pub applies: String,
}

/// One exposed service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// Name.
    pub name: String,
    /// What it forwards to.
    pub target: String,
    /// What its processes are isolated by, if it is sandboxed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// One open channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChannelStatus {
    /// "in" (a peer called us) or "out".
    pub direction: String,
    /// The peer (alias if known).
    pub peer: String,
    /// The service.
    pub service: String,
    /// Application bytes received.
    pub bytes_in: u64,
    /// Application bytes sent.
    pub bytes_out: u64,
    /// Seconds open.
    pub age_secs: u64,
}

/// Sends one request to the daemon listening on `socket`; returns its answer and the
/// connection (which carries the channel's bytes after a successful `pipe`). The same as
/// [`request_with_fds`] without descriptors.
pub async fn request(
    socket: &std::path::Path,
    request: &ControlRequest,
) -> std::io::Result<(
    ControlResponse,
    tokio::io::BufReader<tokio::net::UnixStream>,
)> {
    request_with_fds(socket, request, &[]).await
}

/// [`request`] with file descriptors sent along with the request line (`attach`).
pub async fn request_with_fds(
    socket: &std::path::Path,
    request: &ControlRequest,
    fds: &[std::os::fd::BorrowedFd<'_>],
) -> std::io::Result<(
    ControlResponse,
    tokio::io::BufReader<tokio::net::UnixStream>,
)> {
    let stream = tokio::net::UnixStream::connect(socket).await?;
    let mut line = serde_json::to_vec(request).map_err(std::io::Error::other)?;
    line.push(b'\n');
    crate::fdpass::send_with_fds(&stream, &line, fds).await?;
    let mut reader = tokio::io::BufReader::new(stream);
    let response = read_response(&mut reader).await?;
    Ok((response, reader))
}

/// Reads the daemon's next answer on a control connection (`attach` on standard streams
/// answers twice). The end of the stream instead is an `UnexpectedEof` error.
pub async fn read_response(
    reader: &mut tokio::io::BufReader<tokio::net::UnixStream>,
) -> std::io::Result<ControlResponse> {
    use tokio::io::AsyncBufReadExt;
    let mut answer = String::new();
    if reader.read_line(&mut answer).await? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    serde_json::from_str(&answer)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}
