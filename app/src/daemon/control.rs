//! The daemon's control socket: one JSON request line, one JSON response line (and, after a
//! successful `pipe`, the channel's bytes; an `attach` is served by [`super::attach`]). The socket is created with a 0077 umask inside
//! the node's home, which must be a directory of this user with no access for others.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::control::{
    ChannelStatus, ControlRequest, ControlResponse, ListStatus, ServiceStatus, Status,
};
use crate::daemon::outgoing::{OutChannel, open_channel, respond};
use crate::daemon::{DaemonError, State, lists};
use crate::mcp::Session;
use crate::services::io::forward_pipe;
use nullport_node::FirstBytes;

/// Largest control request line (a signed revocation list of the largest size, as JSON).
const MAX_CONTROL_LINE: usize = 4 << 20;

/// Binds the control socket at `path`: the home must be ours and closed to others, and the
/// socket is created under a 0077 umask, so there is no moment when another user can connect.
pub(crate) fn bind(path: &std::path::Path) -> Result<UnixListener, DaemonError> {
    let socket_error = |error: std::io::Error| DaemonError::Socket {
        path: path.display().to_string(),
        error,
    };
    if let Some(dir) = path.parent() {
        nullport_keyring::fs::check_private_dir(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let previous = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let bound = UnixListener::bind(path);
    rustix::process::umask(previous);
    let listener = bound.map_err(socket_error)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(socket_error)?;
    Ok(listener)
}

pub(crate) async fn serve(state: Arc<State>, listener: UnixListener) {
    let mut running = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    running.spawn(connection(state.clone(), stream));
                }
                Err(e) => {
                    // Out of file descriptors, say: wait a moment instead of spinning.
                    tracing::debug!("control socket: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = running.join_next(), if !running.is_empty() => {}
        }
    }
}

async fn connection(state: Arc<State>, stream: UnixStream) {
    // Read with `recvmsg`: an `attach` line carries descriptors, which a plain read drops.
    let read = tokio::time::timeout(
        Duration::from_secs(10),
        crate::fdpass::read_line_with_fds(&stream, MAX_CONTROL_LINE),
    )
    .await;
    let mut stream = stream;
    let (line, fds) = match read {
        Ok(Ok((line, fds))) if !line.is_empty() => (line, fds),
        Ok(Err(e)) => {
            let _ = respond(
                &mut stream,
                &ControlResponse::error(format!("bad request: {e}")),
            )
            .await;
            return;
        }
        _ => return,
    };
    let request: ControlRequest = match serde_json::from_slice(&line) {
        Ok(r) => r,
        Err(e) => {
            let _ = respond(
                &mut stream,
                &ControlResponse::error(format!("bad request: {e}")),
            )
            .await;
            return;
        }
    };
    if let ControlRequest::Attach {
        peer,
        service,
        local,
        mcp,
        pin,
        token,
    } = request
    {
        let request = crate::daemon::attach::Attach {
            peer,
            service,
            mcp,
            pin,
            token,
            local,
        };
        crate::daemon::attach::attach(&state, stream, request, fds).await;
        return;
    }
    if !fds.is_empty() {
        let e = crate::fdpass::FdPassError::Count {
            expected: 0,
            got: fds.len(),
        };
        drop(fds);
        let _ = respond(
            &mut stream,
            &ControlResponse::error(format!("bad request: {e}")),
        )
        .await;
        return;
    }
    let mut reader = BufReader::new(stream);
    if let ControlRequest::Pipe {
        peer,
        service,
        mcp,
        pin,
        token,
    } = request
    {
        pipe(&state, reader, peer, service, (mcp, pin), token).await;
        return;
    }
    if let ControlRequest::WatchApprovals = request {
        watch_approvals(&state, reader.get_mut()).await;
        return;
    }
    let stopping = matches!(request, ControlRequest::Stop);
    let response = handle(&state, request).await;
    let _ = respond(reader.get_mut(), &response).await;
    if stopping {
        // Held open until the daemon's shutdown ends this task: the caller (`nullport
        // down`) reads the end of this stream as "stopped".
        std::future::pending::<()>().await;
    }
}

/// Every request but `pipe`.
async fn handle(state: &Arc<State>, request: ControlRequest) -> ControlResponse {
    match request {
        ControlRequest::Status => {
            let mut response = ControlResponse::ok();
            response.status = Some(status(state));
            response
        }
        ControlRequest::PublishRotation { rotation } => {
            match state.node.publish_rotation(rotation).await {
                Ok(()) => ControlResponse::ok(),
                Err(e) => ControlResponse::error(e),
            }
        }
        ControlRequest::PublishRevocations { list } => {
            // This node's own list applies here at once, whatever the relay does with it.
            if let Err(e) = lists::apply_list(state, &list) {
                return ControlResponse::error(format!("list not applied here: {e}"));
            }
            match state.node.publish_revocations(list).await {
                Ok(()) => ControlResponse::ok(),
                Err(e) => {
                    let mut r = ControlResponse::ok();
                    r.note = Some(format!(
                        "applied on this node, but not published through the relay: {e}"
                    ));
                    r
                }
            }
        }
        ControlRequest::AuditWitness => match state.node.witnessed().await {
            Ok(cp) => {
                let mut r = ControlResponse::ok();
                r.witness = cp.map(|c| nullport_audit::witness::to_json(&c));
                r
            }
            Err(e) => ControlResponse::error(e),
        },
        ControlRequest::Approvals => {
            let mut response = ControlResponse::ok();
            response.approvals = Some(state.approvals.list());
            response.grants = Some(state.approvals.grants());
            response
        }
        ControlRequest::Console { port } => {
            match crate::daemon::console::open(state, port.unwrap_or(0)).await {
                Ok(url) => {
                    let mut r = ControlResponse::ok();
                    r.console = Some(url);
                    r
                }
                Err(e) => ControlResponse::error(e),
            }
        }
        ControlRequest::AcceptPin { scope, tool } => match state.pins.accept(&scope, &tool) {
            Ok(_) => ControlResponse::ok(),
            Err(e) => ControlResponse::error(e),
        },
        ControlRequest::RevokeGrant { id } => {
            match state
                .approvals
                .revoke_grant(&id, crate::mcp::approvals::Decider::Cli)
            {
                Ok(grant) => {
                    let mut r = ControlResponse::ok();
                    r.grants = Some(vec![grant]);
                    r
                }
                Err(e) => ControlResponse::error(e),
            }
        }
        ControlRequest::Answer {
            id,
            approve,
            reason,
            grant,
        } => match state.approvals.answer(
            &id,
            crate::mcp::approvals::Answer {
                approve,
                by: crate::mcp::approvals::Decider::Cli,
                reason,
                grant,
            },
        ) {
            Ok(info) => {
                let mut r = ControlResponse::ok();
                r.approvals = Some(vec![info]);
                r
            }
            Err(e) => ControlResponse::error(e),
        },
        ControlRequest::Reload => match state.reload() {
            Ok(()) => ControlResponse::ok(),
            Err(e) => ControlResponse::error(e),
        },
        ControlRequest::Stop => {
            tracing::info!("stop requested on the control socket");
            state.stop.send_replace(true);
            ControlResponse::ok()
        }
        ControlRequest::PipeEnded { id } => {
            let mut endings = state.pipe_endings.subscribe();
            let ended = tokio::time::timeout(
                Duration::from_secs(5),
                endings.wait_for(|e| e.ending(id).is_some()),
            )
            .await;
            let mut r = ControlResponse::ok();
            r.note = match ended {
                Ok(Ok(e)) => e.ending(id).cloned().flatten(),
                _ => Some("the daemon does not know how this pipe ended".into()),
            };
            r
        }
        ControlRequest::Pipe { .. }
        | ControlRequest::Attach { .. }
        | ControlRequest::WatchApprovals => ControlResponse::error("streams are handled elsewhere"),
    }
}

async fn pipe(
    state: &Arc<State>,
    mut reader: BufReader<UnixStream>,
    peer: String,
    service: String,
    (mcp, pin): (bool, bool),
    token: Option<String>,
) {
    let OutChannel {
        mut channel,
        target,
        handshake,
        registered: _registered,
    } = match open_channel(
        state,
        (&peer, &service),
        token,
        FirstBytes::Bytes(Vec::new()),
    )
    .await
    {
        Ok(out) => out,
        Err(message) => {
            let _ = respond(reader.get_mut(), &ControlResponse::error(message)).await;
            return;
        }
    };
    let mut pipe_id = 0;
    state
        .pipe_endings
        .send_modify(|endings| pipe_id = endings.open());
    let mut opened = ControlResponse::ok();
    opened.pipe = Some(pipe_id);
    if respond(reader.get_mut(), &opened).await.is_err() {
        return;
    }
    let mut local = reader;
    let run = async {
        let ended: std::io::Result<()> = if mcp {
            let session = Session {
                caller: state.node.node_id(),
                service: service.clone(),
                handshake,
                signer: state.identity.clone(),
                caller_alias: None,
            };
            // This side's pins for the callee's service: `<NodeId>/<service>`.
            let pins = pin.then(|| (state.pins.clone(), format!("{target}/{service}")));
            crate::mcp::caller_pipe(local, channel, session, target, state.audit.clone(), pins)
                .await
        } else {
            forward_pipe(&mut channel, &mut local).await.map(drop)
        };
        if let Err(e) = &ended {
            tracing::info!("pipe ended: {e}");
        }
        ended.err().map(|e| e.to_string())
    };
    let reason = run.await;
    state
        .pipe_endings
        .send_modify(|endings| endings.end(pipe_id, reason));
}

/// Streams approval events as JSON lines (the calls waiting now first) until the client
/// goes away or the daemon stops.
async fn watch_approvals(state: &Arc<State>, stream: &mut UnixStream) {
    use crate::mcp::approvals::ApprovalEvent;
    let mut events = state.approvals.subscribe();
    let waiting = state.approvals.list();
    if respond(stream, &ControlResponse::ok()).await.is_err() {
        return;
    }
    let send = |event: &ApprovalEvent| {
        let mut line = serde_json::to_vec(event).unwrap_or_default();
        line.push(b'\n');
        line
    };
    for approval in waiting {
        if stream
            .write_all(&send(&ApprovalEvent::Pending { approval }))
            .await
            .is_err()
        {
            return;
        }
    }
    loop {
        match events.recv().await {
            Ok(event) => {
                if stream.write_all(&send(&event)).await.is_err() {
                    return;
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// What changed on disk that only a restart applies (the relay, `[link]`), if anything.
fn restart_needed(state: &State) -> Option<String> {
    let files = state.files.read().ok()?;
    let mut changed = Vec::new();
    if files
        .config
        .relay
        .as_deref()
        .is_some_and(|r| r != state.relay.to_string())
    {
        changed.push("relay");
    }
    if files.config.link != state.started_link {
        changed.push("[link]");
    }
    (!changed.is_empty()).then(|| {
        format!(
            "{} changed in config.toml: takes effect when the daemon restarts",
            changed.join(" and ")
        )
    })
}

fn status(state: &State) -> Status {
    let access = state.access();
    let name_of = |id: &nullport_protocol::NodeId| {
        access
            .trust
            .alias_of(id)
            .map(str::to_owned)
            .unwrap_or_else(|| id.to_string())
    };
    let services = access
        .services
        .iter()
        .map(|(n, s)| ServiceStatus {
            name: n.clone(),
            target: s.to_string(),
            sandbox: s.sandbox.as_ref().map(ToString::to_string),
        })
        .collect();
    let mut channels: Vec<ChannelStatus> = state.channels.with_each(|ch| ChannelStatus {
        direction: ch.direction.as_str().to_owned(),
        peer: name_of(&ch.peer),
        service: ch.service.clone(),
        bytes_in: ch
            .counters
            .bytes_in
            .load(std::sync::atomic::Ordering::Relaxed),
        bytes_out: ch
            .counters
            .bytes_out
            .load(std::sync::atomic::Ordering::Relaxed),
        age_secs: ch.opened.elapsed().as_secs(),
    });
    channels.sort_by_key(|c| std::cmp::Reverse(c.age_secs));
    let revocations = access
        .revocations
        .lists()
        .map(|l| ListStatus {
            signer: l.signer.to_string(),
            alias: access.trust.alias_of(&l.signer).map(str::to_owned),
            version: l.version,
            keys: l.keys.len(),
            tokens: l.tokens.len(),
            applies: access
                .scope_of(&l.signer)
                .unwrap_or_else(|| "nothing".into()),
        })
        .collect();
    let link = state.node.state().to_string();
    Status {
        node_id: state.node.node_id().to_string(),
        relay: state.relay.to_string(),
        link,
        services,
        channels,
        revocations,
        retired_keys: access.rotations.len(),
        config_error: state.reload_error.lock().ok().and_then(|r| r.clone()),
        restart_needed: restart_needed(state),
        fleet: state.relay.admin().map(|_| crate::control::FleetStatus {
            home: state.node.home_relay().map(|r| r.to_string()),
            map_version: state.node.relay_map_in_force().map(|(map, _)| map.version),
            links: state
                .node
                .relay_links()
                .into_iter()
                .map(|(r, up)| (r.to_string(), up))
                .collect(),
        }),
    }
}
