//! `exec`: each channel is a process (its stdin and stdout), started with a clean environment
//! in a process group of its own, killed with the group when the channel ends.

use crate::tasks::OwnedTask;
use std::io;
use std::process::Stdio;
use std::time::Duration;

use nullport_protocol::DenyReason;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::process::{Child, Command};

use super::io::Counted;
use super::{Caller, Kind, Ready};
use crate::sandbox::Sandbox;

/// An `exec` service.
#[derive(Debug)]
pub struct Exec<'a> {
    /// Program and arguments.
    pub command: &'a [String],
    /// The process's whole environment.
    pub env: Vec<(String, String)>,
    /// Run it in this sandbox.
    pub sandbox: Option<&'a Sandbox>,
}

/// A process started for one channel.
pub struct Started {
    child: Child,
    service: String,
    sandboxed: bool,
}

impl Kind for Exec<'_> {
    type Ready = Started;

    async fn prepare(&self, caller: &Caller<'_>) -> Result<Started, DenyReason> {
        let child = spawn_exec(self.command, &self.env, self.sandbox).map_err(|e| {
            tracing::warn!("cannot start {:?}: {e}", self.command);
            DenyReason::Unavailable
        })?;
        Ok(Started {
            child,
            service: caller.service.to_owned(),
            sandboxed: self.sandbox.is_some(),
        })
    }
}

impl Ready for Started {
    async fn run(self, channel: Counted<nullport_node::Channel>) -> io::Result<()> {
        run_exec(channel, self.child, &self.service, self.sandboxed).await
    }
}

/// Starts an `exec` service's process for one channel, with exactly `env` as its
/// environment (nothing is inherited from the daemon), in `sandbox` if there is one.
pub fn spawn_exec(
    command: &[String],
    env: &[(String, String)],
    sandbox: Option<&Sandbox>,
) -> io::Result<Child> {
    if let Some(sandbox) = sandbox {
        // Checked again for each process: a path may have changed since it was configured
        // (a symlink planted, a directory made unwritable).
        let program = command.first().map(String::as_str).unwrap_or_default();
        let path_var = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_str());
        sandbox.check(program, path_var).map_err(io::Error::other)?;
        return sandbox
            .command(command, env)
            .map_err(io::Error::other)?
            .spawn();
    }
    let (program, args) = command
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
    Command::new(program)
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        // Its own process group: when the channel ends, everything it started (background
        // jobs included) ends with it.
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
}

/// Runs one channel against a spawned process: channel -> stdin, stdout -> channel, stderr
/// to the log. The process is killed when the channel is done or fails (an aborted channel
/// fails its reads and writes at once).
pub async fn run_exec<C>(
    channel: C,
    mut child: Child,
    name: &str,
    sandboxed: bool,
) -> io::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let (mut stdin, mut stdout) = match (child.stdin.take(), child.stdout.take()) {
        (Some(i), Some(o)) => (i, o),
        _ => return Err(io::Error::other("child without pipes")),
    };
    // The child's stderr, logged for as long as this channel is served.
    let _stderr = child.stderr.take().map(|stderr| {
        let name = name.to_owned();
        OwnedTask::spawn(async move { crate::services::io::log_stderr(stderr, &name).await })
    });
    let (mut r, mut w) = tokio::io::split(channel);
    let to_child = async {
        let r = tokio::io::copy(&mut r, &mut stdin).await;
        drop(stdin);
        r
    };
    let from_child = async {
        let r = tokio::io::copy(&mut stdout, &mut w).await;
        let _ = w.shutdown().await;
        r
    };
    tokio::pin!(to_child, from_child);
    // The channel is done when the process's output ends (its input may stay open: a peer
    // that never half-closes must not keep the process alive).
    let mut input_done = false;
    let result = loop {
        tokio::select! {
            r = &mut to_child, if !input_done => {
                input_done = true;
                if let Err(e) = r {
                    break Err(e);
                }
            }
            r = &mut from_child => break r.map(drop),
        }
    };
    end_process(&mut child, sandboxed).await;
    result
}

/// Ends a service's process and what it started: its process group, or its whole sandbox
/// (waited for until nothing in it is left).
pub async fn end_process(child: &mut Child, sandboxed: bool) {
    if sandboxed {
        crate::sandbox::end(child).await;
        return;
    }
    super::process_group::kill(child);
    let _ = child.start_kill();
    let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
}
