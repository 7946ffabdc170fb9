//! [`Channel`]: an end-to-end authenticated, encrypted byte stream (tokio `AsyncRead` +
//! `AsyncWrite`) over a relayed QUIC stream.
//!
//! Reading yields only authenticated bytes; a tampered, replayed, reordered or dropped frame
//! is an `InvalidData` error and nothing after it is delivered; a stream that ends without
//! the peer's close frame is `UnexpectedEof` (truncation), never a clean end. The precise
//! cause is a [`nullport_protocol::Error`] inside the `io::Error` (`get_ref()` +
//! `downcast_ref`). `shutdown()` sends the close frame; dropping a channel without it resets
//! the stream, which the peer sees as an error, not as a clean end.
//!
//! An [`AbortHandle`] ends a channel from outside the task that uses it (the callee withdrew
//! what authorised it): the next read or write, including one already waiting, sends an
//! abort frame with the reason, which the peer reads as `ConnectionAborted`
//! ([`nullport_protocol::Error::Aborted`]), and fails locally the same way.

use crate::drain::Drain;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker, ready};

use nullport_protocol::channel::{FRAME_OVERHEAD, OPENED_DATA_OFFSET, max_sealed_len};
use nullport_protocol::limits::{MAX_FRAME_DATA, MAX_NOISE_MESSAGE};
use nullport_protocol::{Deframer, DenyReason, NodeId, Received, ServiceName};

/// Ends a [`Channel`] with a reason from another task (see the module doc). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct AbortHandle {
    shared: Arc<Mutex<AbortState>>,
}

#[derive(Debug, Default)]
struct AbortState {
    reason: Option<DenyReason>,
    close: bool,
    wakers: Vec<Waker>,
}

/// What was asked of a channel from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// End it with an abort frame carrying this reason.
    Abort(DenyReason),
    /// End it cleanly: a close frame, as if the local side had finished.
    Close,
}

impl AbortHandle {
    /// Ends the channel for `reason` (the first reason given wins). Wakes any task waiting on
    /// it, so the abort frame goes out even if nothing else happens on the channel.
    pub fn abort(&self, reason: DenyReason) {
        self.request(|s| {
            s.reason.get_or_insert(reason);
        });
    }

    /// Ends the channel cleanly from outside: a close frame, so the peer reads a clean end
    /// (for a callee shutting down in an orderly way). An abort asked before wins.
    pub fn close(&self) {
        self.request(|s| s.close = true);
    }

    fn request(&self, change: impl FnOnce(&mut AbortState)) {
        let wakers = match self.shared.lock() {
            Ok(mut s) => {
                change(&mut s);
                std::mem::take(&mut s.wakers)
            }
            Err(_) => Vec::new(),
        };
        for w in wakers {
            w.wake();
        }
    }

    /// The reason, once aborted.
    pub fn reason(&self) -> Option<DenyReason> {
        self.shared.lock().ok().and_then(|s| s.reason)
    }

    /// What was asked, if anything; if nothing, `cx` is woken when something is.
    fn poll_requested(&self, cx: &Context<'_>) -> Option<Ending> {
        let mut s = self.shared.lock().ok()?;
        if let Some(reason) = s.reason {
            return Some(Ending::Abort(reason));
        }
        if s.close {
            return Some(Ending::Close);
        }
        if !s.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            // The read and write halves may be polled from different tasks; a few wakers
            // cover that, and old ones are dropped.
            if s.wakers.len() >= 4 {
                s.wakers.remove(0);
            }
            s.wakers.push(cx.waker().clone());
        }
        None
    }
}
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Largest slice of one `poll_write` sealed at once (4 full frames).
const MAX_WRITE: usize = 4 * MAX_FRAME_DATA;

/// An established end-to-end channel.
pub struct Channel {
    inner: nullport_protocol::Channel,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    deframer: Deframer,
    /// The last message opened (`type || body`), reused: the bytes not yet read are
    /// `plain[plain_pos..plain_end]`. Grown to the largest message read so far (at most
    /// one Noise message), so a channel that carries small messages holds little.
    plain: Vec<u8>,
    plain_pos: usize,
    plain_end: usize,
    /// Sealed frames, reused: `out[out_pos..out_end]` still to send. Grown to the largest
    /// write sealed so far (at most one `poll_write`'s frames and a close or abort frame).
    out: Vec<u8>,
    out_pos: usize,
    out_end: usize,
    read_done: bool,
    failed: Option<(io::ErrorKind, String, Option<nullport_protocol::Error>)>,
    close_sent: bool,
    write_failed: Option<String>,
    bytes_in: u64,
    bytes_out: u64,
    abort: AbortHandle,
    abort_sent: bool,
    drain: Drain,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("peer", &self.inner.peer())
            .field("service", self.inner.service())
            .field("bytes_in", &self.bytes_in)
            .field("bytes_out", &self.bytes_out)
            .finish_non_exhaustive()
    }
}

fn io_error(kind: io::ErrorKind, e: nullport_protocol::Error) -> io::Error {
    io::Error::new(kind, e)
}

fn kind_of(e: &nullport_protocol::Error) -> io::ErrorKind {
    use nullport_protocol::Error as E;
    match e {
        E::Truncated => io::ErrorKind::UnexpectedEof,
        E::Closed => io::ErrorKind::BrokenPipe,
        E::Aborted { .. } => io::ErrorKind::ConnectionAborted,
        _ => io::ErrorKind::InvalidData,
    }
}

impl Channel {
    pub(crate) fn new(
        inner: nullport_protocol::Channel,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
        deframer: Deframer,
        first_out: Vec<u8>,
        drain: Drain,
    ) -> Self {
        let out = first_out;
        let out_end = out.len();
        Self {
            inner,
            send,
            recv,
            deframer,
            plain: Vec::new(),
            plain_pos: 0,
            plain_end: 0,
            out,
            out_pos: 0,
            out_end,
            read_done: false,
            failed: None,
            close_sent: false,
            write_failed: None,
            bytes_in: 0,
            bytes_out: 0,
            abort: AbortHandle::default(),
            abort_sent: false,
            drain,
        }
    }

    /// Counts `n` application bytes sent before the channel existed (a dial's first bytes).
    pub(crate) fn count_sent(&mut self, n: usize) {
        self.bytes_out += n as u64;
    }

    /// Makes `first` (the first bytes a resumed open's R1 carried) the first data this
    /// channel reads. Only on a fresh channel, before any read.
    pub(crate) fn preload(&mut self, first: Vec<u8>) {
        if first.is_empty() {
            return;
        }
        self.bytes_in += first.len() as u64;
        self.plain_pos = 0;
        self.plain_end = first.len();
        self.plain = first;
    }

    /// A handle that ends this channel with a reason from anywhere (see [`AbortHandle`]).
    pub fn abort_handle(&self) -> AbortHandle {
        self.abort.clone()
    }

    /// Makes `handle` the one that ends this channel (a handle made before the channel
    /// existed; if it was already used, the channel ends at its first read or write).
    pub fn use_abort_handle(&mut self, handle: AbortHandle) {
        self.abort = handle;
    }

    /// Ends the channel now for `reason`: sends the abort frame and finishes the stream.
    pub async fn abort(&mut self, reason: DenyReason) -> io::Result<()> {
        self.abort.abort(reason);
        std::future::poll_fn(|cx| match self.poll_abort(cx) {
            Poll::Ready(Some(_)) => Poll::Ready(Ok(())),
            Poll::Ready(None) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        })
        .await
    }

    /// If an abort was requested: sends the abort frame (once), finishes the stream and
    /// yields the error every later call returns. A close request sends the close frame and
    /// finishes the stream instead; the channel then reads as ended. `Ready(None)`: nothing
    /// requested.
    fn poll_abort(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Error>> {
        let ending = match self.abort.poll_requested(cx) {
            None => return Poll::Ready(None),
            Some(ending) => ending,
        };
        let error = |reason: DenyReason| {
            io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!("channel ended by this side: {reason}"),
            )
        };
        if self.failed.is_some() || self.write_failed.is_some() {
            return Poll::Ready(match ending {
                Ending::Abort(reason) => Some(error(reason)),
                Ending::Close => self.failure(),
            });
        }
        if !self.abort_sent {
            self.abort_sent = true;
            if !self.close_sent {
                let mut frame = Vec::with_capacity(FRAME_OVERHEAD + 1);
                let sealed = match ending {
                    Ending::Abort(reason) => self.inner.seal_abort(reason, &mut frame),
                    Ending::Close => self.inner.seal_close(&mut frame),
                };
                self.close_sent = sealed.is_ok();
                self.queue(&frame);
            }
        }
        if self.poll_flush_out(cx).is_pending() {
            return Poll::Pending;
        }
        let _ = self.send.finish();
        let _ = self.recv.stop(0u32.into());
        match ending {
            Ending::Abort(reason) => {
                self.failed = Some((
                    io::ErrorKind::ConnectionAborted,
                    error(reason).to_string(),
                    None,
                ));
                Poll::Ready(Some(error(reason)))
            }
            Ending::Close => {
                self.read_done = true;
                self.write_failed = Some("channel closed by this side".into());
                Poll::Ready(None)
            }
        }
    }

    /// The peer, as proven by the end-to-end handshake.
    pub fn peer(&self) -> NodeId {
        self.inner.peer()
    }

    /// The service this channel is for.
    pub fn service(&self) -> &ServiceName {
        self.inner.service()
    }

    /// The handshake hash (unique per channel).
    pub fn handshake_hash(&self) -> &[u8; 32] {
        self.inner.handshake_hash()
    }

    /// Application bytes received and sent so far.
    pub fn byte_counts(&self) -> (u64, u64) {
        (self.bytes_in, self.bytes_out)
    }

    fn fail(
        &mut self,
        kind: io::ErrorKind,
        e: Option<nullport_protocol::Error>,
        msg: String,
    ) -> io::Error {
        if self.failed.is_none() {
            self.failed = Some((kind, msg.clone(), e.clone()));
            let _ = self.send.reset(0u32.into());
            let _ = self.recv.stop(0u32.into());
        }
        match e {
            Some(e) => io_error(kind, e),
            None => io::Error::new(kind, msg),
        }
    }

    fn failure(&self) -> Option<io::Error> {
        self.failed.as_ref().map(|(kind, msg, e)| match e {
            Some(e) => io_error(*kind, e.clone()),
            None => io::Error::new(*kind, msg.clone()),
        })
    }

    /// Appends already sealed bytes to what is waiting to go out.
    fn queue(&mut self, sealed: &[u8]) {
        let end = self.out_end + sealed.len();
        if end > self.out.len() {
            self.out.resize(end, 0);
        }
        self.out[self.out_end..end].copy_from_slice(sealed);
        self.out_end = end;
    }

    fn poll_flush_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_pos < self.out_end {
            let pending = &self.out[self.out_pos..self.out_end];
            let n = match ready!(Pin::new(&mut self.send).poll_write(cx, pending)) {
                Ok(n) => n,
                Err(e) => {
                    // The peer stopped reading (or the stream broke) on our sending side:
                    // writing is over, but bytes already received stay readable.
                    let msg = format!("channel stream failed: {e}");
                    self.write_failed = Some(msg.clone());
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, msg)));
                }
            };
            self.out_pos += n;
        }
        self.out_pos = 0;
        self.out_end = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Channel {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = ready!(this.poll_abort(cx)) {
            return Poll::Ready(Err(e));
        }
        loop {
            if this.plain_pos < this.plain_end {
                let n = (this.plain_end - this.plain_pos).min(buf.remaining());
                buf.put_slice(&this.plain[this.plain_pos..this.plain_pos + n]);
                this.plain_pos += n;
                return Poll::Ready(Ok(()));
            }
            if this.read_done {
                return Poll::Ready(Ok(()));
            }
            if let Some(e) = this.failure() {
                return Poll::Ready(Err(e));
            }
            this.plain_pos = 0;
            this.plain_end = 0;
            let next = match this.deframer.next_message() {
                Ok(Some(message)) => {
                    if this.plain.len() < message.len() {
                        this.plain.resize(message.len().min(MAX_NOISE_MESSAGE), 0);
                    }
                    Some(this.inner.open_into(message, &mut this.plain))
                }
                Ok(None) => None,
                Err(e) => {
                    let kind = kind_of(&e);
                    return Poll::Ready(Err(this.fail(kind, Some(e.clone()), e.to_string())));
                }
            };
            match next {
                Some(Ok(Received::Data(n))) => {
                    this.plain_pos = OPENED_DATA_OFFSET;
                    this.plain_end = OPENED_DATA_OFFSET + n;
                    this.bytes_in += n as u64;
                    continue;
                }
                Some(Ok(Received::Close)) => {
                    this.read_done = true;
                    continue;
                }
                Some(Ok(Received::Control)) => continue,
                Some(Err(e)) => {
                    let kind = kind_of(&e);
                    return Poll::Ready(Err(this.fail(kind, Some(e.clone()), e.to_string())));
                }
                None => {}
            }
            let spare = this.deframer.spare();
            let mut read_buf = ReadBuf::new(spare);
            match Pin::new(&mut this.recv).poll_read(cx, &mut read_buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) => {
                    let n = read_buf.filled().len();
                    if n == 0 {
                        // End of stream: clean only after the close frame.
                        let e = this.deframer.finish().and_then(|()| this.inner.finish());
                        if let Err(e) = e {
                            return Poll::Ready(Err(this.fail(
                                io::ErrorKind::UnexpectedEof,
                                Some(e.clone()),
                                e.to_string(),
                            )));
                        }
                        this.read_done = true;
                    } else {
                        this.deframer.commit(n);
                    }
                }
                Poll::Ready(Err(e)) => {
                    let msg = format!("channel stream broken before the close frame: {e}");
                    return Poll::Ready(Err(this.fail(
                        io::ErrorKind::ConnectionReset,
                        Some(nullport_protocol::Error::Truncated),
                        msg,
                    )));
                }
            }
        }
    }
}

impl AsyncWrite for Channel {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = ready!(this.poll_abort(cx)) {
            return Poll::Ready(Err(e));
        }
        if let Some(e) = this.failure() {
            return Poll::Ready(Err(e));
        }
        if let Some(msg) = &this.write_failed {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, msg.clone())));
        }
        ready!(this.poll_flush_out(cx))?;
        let n = data.len().min(MAX_WRITE);
        // Everything earlier went out: the frames go to the start of the buffer, one QUIC
        // write below if the stream's window takes them.
        let need = max_sealed_len(n);
        if this.out.len() < need {
            this.out.resize(need, 0);
        }
        match this.inner.seal_into(&data[..n], &mut this.out) {
            Ok(written) => this.out_end = written,
            Err(e) => {
                let kind = kind_of(&e);
                return Poll::Ready(Err(this.fail(kind, Some(e.clone()), e.to_string())));
            }
        }
        this.bytes_out += n as u64;
        // Start sending now; the bytes are accepted either way (at most MAX_WRITE buffered).
        if let Poll::Ready(Err(e)) = this.poll_flush_out(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = ready!(this.poll_abort(cx)) {
            return Poll::Ready(Err(e));
        }
        this.poll_flush_out(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = ready!(this.poll_abort(cx)) {
            return Poll::Ready(Err(e));
        }
        if let Some(msg) = &this.write_failed {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, msg.clone())));
        }
        if !this.close_sent {
            ready!(this.poll_flush_out(cx))?;
            let mut frame = Vec::with_capacity(FRAME_OVERHEAD);
            if let Err(e) = this.inner.seal_close(&mut frame) {
                let kind = kind_of(&e);
                return Poll::Ready(Err(this.fail(kind, Some(e.clone()), e.to_string())));
            }
            this.queue(&frame);
            this.close_sent = true;
        }
        ready!(this.poll_flush_out(cx))?;
        let _ = this.send.finish();
        Poll::Ready(Ok(()))
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        if self.close_sent {
            // The close (or abort) frame may still be in flight: the node waits for it
            // before closing its connection.
            self.drain.hand_over(&self.send);
        } else {
            let _ = self.send.reset(0u32.into());
        }
    }
}
