//! `attach`: a channel spliced, inside the daemon, to descriptors the client handed over
//! with its request ([`crate::fdpass`]): `nullport connect`'s listening socket (the daemon
//! accepts on it; a local connection each, for daemons' clients that hand over one at a
//! time) or the caller's standard input and output (`nullport pipe`). The bytes go from the local socket
//! to the channel in this one process; the client only waits for the outcome.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;

use crate::control::{ControlResponse, Local};
use crate::daemon::State;
use crate::daemon::outgoing::{OutChannel, open_channel, respond};
use crate::fdpass::{FdPassError, LocalListener, LocalSocket, LocalStdio};
use crate::mcp::Session;
use crate::services::io::{forward, forward_pipe};
use nullport_node::FirstBytes;

/// Most handed-over connections the daemon serves at once (each holds one or two
/// descriptors); beyond it, `attach` is refused with [`FdPassError::Busy`].
pub const MAX_ATTACHED: usize = 4096;

static ATTACHED: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_ATTACHED);

/// An `attach` request.
pub(crate) struct Attach {
    pub(crate) peer: String,
    pub(crate) service: String,
    pub(crate) mcp: bool,
    pub(crate) pin: bool,
    pub(crate) token: Option<String>,
    pub(crate) local: Local,
}

/// What was handed over, ready to serve.
enum LocalEnd {
    Socket(LocalSocket),
    Stdio(LocalStdio),
}

fn take_local(local: Local, mut fds: Vec<OwnedFd>) -> Result<LocalEnd, FdPassError> {
    let expected = match local {
        Local::Socket | Local::Listener => 1,
        Local::Stdio => 2,
    };
    if fds.len() != expected {
        return Err(FdPassError::Count {
            expected,
            got: fds.len(),
        });
    }
    Ok(match (fds.pop(), fds.pop()) {
        (Some(fd), None) => LocalEnd::Socket(LocalSocket::from_fd(fd)?),
        (Some(output), Some(input)) => LocalEnd::Stdio(LocalStdio::new(input, output)?),
        _ => return Err(FdPassError::Count { expected, got: 0 }),
    })
}

/// Serves one `attach` request: answers on `control` whether the channel opened (with the
/// same messages as `pipe`); a socket is then served on its own (the client may go), while
/// standard streams are served until the channel is done or the client goes away (then the
/// channel is closed), and the outcome is the second answer.
pub(crate) async fn attach(
    state: &Arc<State>,
    mut control: UnixStream,
    request: Attach,
    mut fds: Vec<OwnedFd>,
) {
    if request.local == Local::Listener {
        let listener = match (fds.pop(), fds.is_empty()) {
            (Some(fd), true) => LocalListener::from_fd(fd),
            (fd, _) => Err(FdPassError::Count {
                expected: 1,
                got: fds.len() + usize::from(fd.is_some()),
            }),
        };
        match listener {
            Ok(listener) => serve_listener(state, control, request, listener).await,
            Err(e) => {
                let _ = respond(&mut control, &ControlResponse::error(e)).await;
            }
        }
        return;
    }
    let Ok(_permit) = ATTACHED.try_acquire() else {
        drop(fds);
        let busy = FdPassError::Busy(MAX_ATTACHED);
        let _ = respond(&mut control, &ControlResponse::error(busy)).await;
        return;
    };
    let local = match take_local(request.local, fds) {
        Ok(local) => local,
        Err(e) => {
            let _ = respond(&mut control, &ControlResponse::error(e)).await;
            return;
        }
    };
    // What a `pipe`'s standard input already holds goes out with the handshake's last
    // message (not through the MCP caller side, which must read every message first).
    let first = match &local {
        LocalEnd::Stdio(stdio) if !request.mcp => {
            FirstBytes::Ready(Box::new(|buf| stdio.take_ready(buf)))
        }
        _ => FirstBytes::Bytes(Vec::new()),
    };
    let out = match open_channel(
        state,
        (&request.peer, &request.service),
        request.token,
        first,
    )
    .await
    {
        Ok(out) => out,
        Err(message) => {
            drop(local);
            let _ = respond(&mut control, &ControlResponse::error(message)).await;
            return;
        }
    };
    if respond(&mut control, &ControlResponse::ok()).await.is_err() {
        return;
    }
    let mcp = (request.mcp, request.pin);
    match local {
        LocalEnd::Socket(socket) => {
            drop(control);
            splice(state, out, socket, &request.service, mcp, false).await;
        }
        LocalEnd::Stdio(stdio) => {
            let run = splice(state, out, stdio, &request.service, mcp, true);
            let mut byte = [0u8; 1];
            let gone = async {
                // The client sends nothing more: the end of the stream is its going away.
                while matches!(control.read(&mut byte).await, Ok(n) if n > 0) {}
            };
            let reason = tokio::select! {
                reason = run => reason,
                () = gone => {
                    tracing::info!("pipe: the client went away; channel closed");
                    return;
                }
            };
            let mut ended = ControlResponse::ok();
            ended.ok = reason.is_none();
            ended.note = reason;
            let _ = respond(&mut control, &ended).await;
        }
    }
}

/// Serves `connect --listen`'s listening socket: accepts on it, and serves each connection
/// as a handed-over socket (dial, then splice, in this process), until the client closes
/// `control`. A connection whose channel is refused is closed and reported on `control`
/// (`peer address: message`), which the client prints. Connections already served outlive
/// the client, as handed-over sockets do.
async fn serve_listener(
    state: &Arc<State>,
    mut control: UnixStream,
    request: Attach,
    listener: LocalListener,
) {
    if respond(&mut control, &ControlResponse::ok()).await.is_err() {
        return;
    }
    let (mut from_client, mut to_client) = control.into_split();
    let (refused, mut notes) = tokio::sync::mpsc::channel::<String>(64);
    let mut byte = [0u8; 1];
    let gone = async { while matches!(from_client.read(&mut byte).await, Ok(n) if n > 0) {} };
    tokio::pin!(gone);
    loop {
        tokio::select! {
            () = &mut gone => break,
            Some(note) = notes.recv() => {
                let line = ControlResponse::error(note);
                if respond(&mut to_client, &line).await.is_err() {
                    break;
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((socket, from)) => {
                    let Ok(permit) = ATTACHED.try_acquire() else {
                        let _ = refused.try_send(format!("{from}: {}", FdPassError::Busy(MAX_ATTACHED)));
                        continue;
                    };
                    let (state, refused) = (state.clone(), refused.clone());
                    let (peer, service, token) =
                        (request.peer.clone(), request.service.clone(), request.token.clone());
                    tokio::spawn(async move {
                        let _permit = permit;
                        // What the client has sent when the dial starts goes out in a
                        // resumed open's R1 (one round trip to the first answer), or else
                        // what it sent while the handshake ran goes out with its last
                        // message. It is peeked, and taken from the socket only once the
                        // channel is open.
                        let mut peeked = 0;
                        let ready = FirstBytes::Ready(Box::new(|buf| {
                            peeked = socket.peek_ready(buf);
                            peeked
                        }));
                        let opened = open_channel(&state, (&peer, &service), token, ready).await;
                        let opened = opened.and_then(|out| match socket.discard_peeked(peeked) {
                            Ok(()) => Ok(out),
                            Err(e) => Err(format!("the local connection failed: {e}")),
                        });
                        match opened {
                            Ok(out) => {
                                splice(&state, out, socket, &service, (false, false), false).await;
                            }
                            Err(message) => {
                                // A reset, not a clean end, even if the client sent nothing.
                                socket.reset_on_drop();
                                drop(socket);
                                let _ = refused.try_send(format!("{from}: {message}"));
                            }
                        }
                    });
                }
                Err(e) => {
                    // Out of descriptors or memory for a moment: let some connections end.
                    tracing::warn!("connect --listen: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
        }
    }
    tracing::debug!("connect --listen: the client went away; no longer accepting");
}

/// How a local end is closed when its channel failed.
trait LocalEnding {
    /// Makes the coming close read as a failure where the transport can say so.
    fn close_as_failed(&self);
}

impl LocalEnding for LocalSocket {
    fn close_as_failed(&self) {
        self.reset_on_drop();
    }
}

impl LocalEnding for LocalStdio {
    /// Pipes and terminals have no reset; `pipe` reports the failure and exits 1.
    fn close_as_failed(&self) {}
}

/// Forwards between the channel and `local` (until the channel is done sending, for a
/// pipe), through the MCP caller side if asked; returns why it did not end cleanly.
async fn splice<L>(
    state: &Arc<State>,
    out: OutChannel,
    mut local: L,
    service: &str,
    (mcp, pin): (bool, bool),
    pipe: bool,
) -> Option<String>
where
    L: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + LocalEnding,
{
    let OutChannel {
        mut channel,
        target,
        handshake,
        registered: _registered,
    } = out;
    let ended: std::io::Result<()> = if mcp {
        let session = Session {
            caller: state.node.node_id(),
            service: service.to_owned(),
            handshake,
            signer: state.identity.clone(),
            caller_alias: None,
        };
        let pins = pin.then(|| (state.pins.clone(), format!("{target}/{service}")));
        crate::mcp::caller_pipe(local, channel, session, target, state.audit.clone(), pins).await
    } else {
        let forwarded = if pipe {
            forward_pipe(&mut channel, &mut local).await
        } else {
            forward(&mut channel, &mut local).await
        };
        if forwarded.is_err() {
            local.close_as_failed();
        }
        forwarded.map(drop)
    };
    if let Err(e) = &ended {
        tracing::info!("attached channel ended: {e}");
    }
    ended.err().map(|e| e.to_string())
}
