//! The services a daemon exposes: `tcp` (forward to a local address) and `exec` (a command's
//! stdin/stdout, one process per channel).

use std::io;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// Byte counters shared with `nullport status`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Bytes read from the channel.
    pub bytes_in: AtomicU64,
    /// Bytes written to the channel.
    pub bytes_out: AtomicU64,
}

/// A stream that counts what passes through it.
pub struct Counted<S> {
    inner: S,
    counters: Arc<Counters>,
}

impl<S> Counted<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, counters: Arc<Counters>) -> Self {
        Self { inner, counters }
    }

    /// The wrapped stream.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.counters
            .bytes_in
            .fetch_add(n as u64, Ordering::Relaxed);
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = &r {
            self.counters
                .bytes_out
                .fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Connects to a `tcp` service's target (before the channel is accepted, so an unreachable
/// target is a clean "unavailable" to the caller).
pub async fn connect_tcp(target: &str) -> io::Result<TcpStream> {
    let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(target))
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connecting to {target} timed out"),
            )
        })??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Forwards bytes both ways until both directions are done; a half-close propagates as a
/// half-close. Unlike `copy_bidirectional`, a failed write in one direction (say, the peer
/// stopped reading after it finished) does not cut off bytes still arriving in the other.
/// A channel (`a`) that fails (aborted, truncated, tampered with) ends both directions at
/// once, with its error.
pub async fn forward<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    forward_until(a, b, false).await
}

/// [`forward`] for a local pipe: done as soon as the channel (`a`) is done sending (cleanly or
/// not), whether or not the local side still has input, as `ssh` is when the remote end
/// closes.
pub async fn forward_pipe<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    forward_until(a, b, true).await
}

async fn forward_until<A, B>(a: &mut A, b: &mut B, until_a_done: bool) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut a_read, mut a_write) = tokio::io::split(a);
    let (mut b_read, mut b_write) = tokio::io::split(b);
    let a_to_b = async {
        let r = tokio::io::copy(&mut a_read, &mut b_write).await;
        let _ = b_write.shutdown().await;
        r
    };
    let b_to_a = async {
        let r = tokio::io::copy(&mut b_read, &mut a_write).await;
        let _ = a_write.shutdown().await;
        r
    };
    tokio::pin!(a_to_b, b_to_a);
    let mut to_a = None;
    let to_b = loop {
        tokio::select! {
            r = &mut a_to_b => break r,
            r = &mut b_to_a, if to_a.is_none() => to_a = Some(r),
        }
    };
    // The channel (`a`) failed: it is over both ways; do not wait for `b` to finish.
    let to_b = to_b?;
    // Callers pass the channel as `a`: what it delivered to `b` decides the outcome; a write
    // towards a peer that already finished is not a failure.
    let to_a = match to_a {
        Some(r) => r,
        None if until_a_done => Ok(0),
        None => b_to_a.await,
    };
    Ok((to_b, to_a.unwrap_or(0)))
}

/// Starts an `exec` service's process for one channel, with exactly `env` as its
/// environment (nothing is inherited from the daemon).
pub fn spawn_exec(command: &[String], env: &[(String, String)]) -> io::Result<Child> {
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
pub async fn run_exec<C>(channel: C, mut child: Child, name: &str) -> io::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let (mut stdin, mut stdout) = match (child.stdin.take(), child.stdout.take()) {
        (Some(i), Some(o)) => (i, o),
        _ => return Err(io::Error::other("child without pipes")),
    };
    if let Some(stderr) = child.stderr.take() {
        let name = name.to_owned();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::info!(service = %name, "stderr: {line}");
            }
        });
    }
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
    kill_group(&child);
    let _ = child.start_kill();
    let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
    result
}

/// Kills the process group a child leads (see [`spawn_exec`]): the child and whatever it
/// started, daemons that did not leave the group included.
pub fn kill_group(child: &Child) {
    if let Some(pid) = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

/// PROXY protocol v2 TLV type carrying the caller's NodeId (the application-specific range).
pub const PP2_TYPE_NULLPORT_PEER: u8 = 0xE0;
/// PROXY protocol v2 TLV type carrying the caller's alias on this node, if it has one.
pub const PP2_TYPE_NULLPORT_ALIAS: u8 = 0xE1;
/// PROXY protocol v2 `PP2_TYPE_UNIQUE_ID`: also the caller's NodeId, for receivers that log
/// only the standard TLVs.
pub const PP2_TYPE_UNIQUE_ID: u8 = 0x05;

/// A PROXY protocol v2 header for a connection made on behalf of `peer`: command PROXY,
/// family UNSPEC (there is no caller address: the caller is a key), and TLVs naming the
/// caller (its NodeId as `PP2_TYPE_UNIQUE_ID` and [`PP2_TYPE_NULLPORT_PEER`], its alias as
/// [`PP2_TYPE_NULLPORT_ALIAS`]).
pub fn proxy_v2_header(peer: &nullport_protocol::NodeId, alias: Option<&str>) -> Vec<u8> {
    const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
    let id = peer.to_string();
    let mut tlvs = Vec::new();
    let mut tlv = |kind: u8, value: &[u8]| {
        let value = &value[..value.len().min(255)];
        tlvs.push(kind);
        tlvs.extend_from_slice(&(value.len() as u16).to_be_bytes());
        tlvs.extend_from_slice(value);
    };
    tlv(PP2_TYPE_UNIQUE_ID, id.as_bytes());
    tlv(PP2_TYPE_NULLPORT_PEER, id.as_bytes());
    if let Some(alias) = alias {
        tlv(PP2_TYPE_NULLPORT_ALIAS, alias.as_bytes());
    }
    let mut header = Vec::with_capacity(16 + tlvs.len());
    header.extend_from_slice(&SIGNATURE);
    header.push(0x21); // version 2, command PROXY
    header.push(0x00); // AF_UNSPEC, UNSPEC
    header.extend_from_slice(&(tlvs.len() as u16).to_be_bytes());
    header.extend_from_slice(&tlvs);
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_v2_header_layout() {
        let peer = nullport_protocol::Identity::from_seed([5; 32]).node_id();
        let h = proxy_v2_header(&peer, Some("laptop"));
        assert_eq!(&h[..12], b"\r\n\r\n\0\r\nQUIT\n");
        assert_eq!(h[12], 0x21);
        assert_eq!(h[13], 0x00);
        let len = usize::from(u16::from_be_bytes([h[14], h[15]]));
        assert_eq!(len, h.len() - 16);
        let id = peer.to_string();
        let mut tlvs = &h[16..];
        let mut seen = Vec::new();
        while let [kind, a, b, rest @ ..] = tlvs {
            let n = usize::from(u16::from_be_bytes([*a, *b]));
            seen.push((*kind, String::from_utf8_lossy(&rest[..n]).into_owned()));
            tlvs = &rest[n..];
        }
        assert_eq!(
            seen,
            vec![(0x05, id.clone()), (0xE0, id), (0xE1, "laptop".to_owned())]
        );
    }
}
