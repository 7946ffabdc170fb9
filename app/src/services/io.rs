//! Moving bytes for services: counters shown by `status`, and forwarding between a channel
//! and a local stream with half-close semantics.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

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
