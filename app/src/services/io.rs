//! Moving bytes for services: counters shown by `status`, a stream with several handles, and
//! forwarding between a channel and a local stream with half-close semantics.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

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

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
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

/// A stream with several handles: each poll locks it for that poll only. For handing a
/// stream to a library that owns its I/O (hyper) while keeping a handle to close it
/// properly once the library is done with it, whatever way it finished.
pub struct Shared<S>(Arc<std::sync::Mutex<S>>);

impl<S> Clone for Shared<S> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<S: AsyncWrite + Unpin> Shared<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self(Arc::new(std::sync::Mutex::new(inner)))
    }

    /// Shuts the stream's write side down (for a channel: its close frame).
    pub async fn shutdown(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| Pin::new(&mut *self.lock()).poll_shutdown(cx)).await
    }
}

impl<S> Shared<S> {
    fn lock(&self) -> std::sync::MutexGuard<'_, S> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Shared<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.lock()).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Shared<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.lock()).poll_write(cx, data)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.lock()).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.lock()).poll_shutdown(cx)
    }
}

/// Forwards bytes both ways until both directions are done; a half-close propagates as a
/// half-close. Unlike `copy_bidirectional`, a failed write in one direction (say, the peer
/// stopped reading after it finished) does not cut off bytes still arriving in the other.
/// A failure is never passed on as a clean end: a channel (`a`) that fails (aborted,
/// truncated, tampered with) ends both directions at once with its error, and `b` is not
/// shut down (the caller closes it as failed, e.g. [`reset_on_drop`]); a local side (`b`)
/// whose read fails (the client reset its connection) ends both directions with that error,
/// and the channel gets no close frame (dropped without one, its peer reads a reset).
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

/// Makes dropping `tcp` send a reset instead of a clean end (`SO_LINGER` 0): for a
/// connection whose other side failed, so that its peer does not take a cut stream for a
/// complete one.
pub fn reset_on_drop(tcp: &TcpStream) {
    if let Err(e) = tcp.set_zero_linger() {
        tracing::debug!("could not make the connection reset on close: {e}");
    }
}

/// How one direction of a forward ended.
enum Copied {
    /// The source ended cleanly; this many bytes went through.
    Done(u64),
    /// Reading the source failed.
    ReadFailed(io::Error),
    /// Writing to the destination failed.
    WriteFailed(io::Error),
}

/// Copies `from` into `to` until `from` ends, saying which side failed if one did. The
/// destination is shut down (a half-close) only after a clean end.
async fn copy_direction<R, W>(from: &mut R, to: &mut W) -> Copied
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => return Copied::ReadFailed(e),
        };
        if let Err(e) = async {
            to.write_all(&buf[..n]).await?;
            to.flush().await
        }
        .await
        {
            return Copied::WriteFailed(e);
        }
        total += n as u64;
    }
    let _ = to.shutdown().await;
    Copied::Done(total)
}

/// The buffer of one forwarding direction (tokio's `copy` uses 8 KiB).
const COPY_BUFFER: usize = 16 * 1024;

async fn forward_until<A, B>(a: &mut A, b: &mut B, until_a_done: bool) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut a_read, mut a_write) = tokio::io::split(a);
    let (mut b_read, mut b_write) = tokio::io::split(b);
    let a_to_b = copy_direction(&mut a_read, &mut b_write);
    let b_to_a = copy_direction(&mut b_read, &mut a_write);
    tokio::pin!(a_to_b, b_to_a);
    let mut to_a = None;
    let to_b = loop {
        tokio::select! {
            r = &mut a_to_b => break r,
            r = &mut b_to_a, if to_a.is_none() => {
                // The local side failed: the channel must not end as if it were complete.
                if let Copied::ReadFailed(e) = r {
                    return Err(e);
                }
                to_a = Some(r);
            }
        }
    };
    // The channel (`a`) failed, or `b` stopped taking its bytes: over both ways; do not
    // wait for `b` to finish.
    let to_b = match to_b {
        Copied::Done(n) => n,
        Copied::ReadFailed(e) | Copied::WriteFailed(e) => return Err(e),
    };
    // Callers pass the channel as `a`: what it delivered to `b` decides the outcome; a write
    // towards a peer that already finished is not a failure.
    let to_a = match to_a {
        Some(r) => r,
        None if until_a_done => Copied::Done(0),
        None => b_to_a.await,
    };
    match to_a {
        Copied::ReadFailed(e) => Err(e),
        Copied::Done(n) => Ok((to_b, n)),
        Copied::WriteFailed(_) => Ok((to_b, 0)),
    }
}

/// Longest stderr line of a service process that is logged; the rest of a longer line is
/// read and dropped (a process that writes without newlines cannot grow the daemon).
pub const MAX_LOGGED_LINE: usize = 1024;

/// Logs a service process's stderr, line by line at debug (it may carry what the process
/// read from the channel), each line cut at [`MAX_LOGGED_LINE`] bytes, until it closes.
pub async fn log_stderr(stderr: impl tokio::io::AsyncRead + Unpin, service: &str) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::with_capacity(MAX_LOGGED_LINE + 1);
    loop {
        line.clear();
        let limit = (MAX_LOGGED_LINE + 1) as u64;
        let read = (&mut reader).take(limit).read_until(b'\n', &mut line).await;
        let n = match read {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let whole = line.ends_with(b"\n");
        let mut dropped = 0usize;
        if !whole && n > MAX_LOGGED_LINE {
            // Skip to the end of this line, a bounded chunk at a time.
            loop {
                let buf = match reader.fill_buf().await {
                    Ok([]) | Err(_) => break,
                    Ok(buf) => buf,
                };
                match buf.iter().position(|&b| b == b'\n') {
                    Some(at) => {
                        dropped += at + 1;
                        reader.consume(at + 1);
                        break;
                    }
                    None => {
                        let len = buf.len();
                        dropped += len;
                        reader.consume(len);
                    }
                }
            }
        }
        let shown = String::from_utf8_lossy(&line[..line.len().min(MAX_LOGGED_LINE)]);
        let shown = shown.trim_end_matches(['\n', '\r']);
        if dropped > 0 || n > MAX_LOGGED_LINE {
            tracing::debug!(%service, "stderr: {shown} ... ({} more bytes not logged)", dropped + n.saturating_sub(MAX_LOGGED_LINE));
        } else if shown.starts_with("nullport sandbox:") || shown.starts_with("bwrap:") {
            // The sandbox refused to start the process: the operator needs to see why.
            tracing::warn!(%service, "{shown}");
        } else {
            tracing::debug!(%service, "stderr: {shown}");
        }
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

#[cfg(test)]
mod log_tests {
    use super::*;

    #[tokio::test]
    async fn a_line_without_end_is_read_in_bounded_pieces() {
        // 50 MB with no newline, then a short line: read to the end without holding it all.
        let mut input = vec![b'A'; 50 << 20];
        input.extend_from_slice(b"\nshort\n");
        let started = std::time::Instant::now();
        log_stderr(&input[..], "x").await;
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
    }
}
