//! [`Channel`]: an end-to-end authenticated, encrypted byte stream (tokio `AsyncRead` +
//! `AsyncWrite`) over a relayed QUIC stream.
//!
//! Reading yields only authenticated bytes; a tampered, replayed, reordered or dropped frame
//! is an `InvalidData` error and nothing after it is delivered; a stream that ends without
//! the peer's close frame is `UnexpectedEof` (truncation), never a clean end. The precise
//! cause is a [`nullport_protocol::Error`] inside the `io::Error` (`get_ref()` +
//! `downcast_ref`). `shutdown()` sends the close frame; dropping a channel without it resets
//! the stream, which the peer sees as an error, not as a clean end.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use nullport_protocol::limits::MAX_FRAME_DATA;
use nullport_protocol::{Deframer, NodeId, Received, ServiceName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Largest slice of one `poll_write` sealed at once (4 full frames).
const MAX_WRITE: usize = 4 * MAX_FRAME_DATA;

/// An established end-to-end channel.
pub struct Channel {
    inner: nullport_protocol::Channel,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    deframer: Deframer,
    plain: Vec<u8>,
    plain_pos: usize,
    out: Vec<u8>,
    out_pos: usize,
    read_done: bool,
    failed: Option<(io::ErrorKind, String, Option<nullport_protocol::Error>)>,
    close_sent: bool,
    write_failed: Option<String>,
    bytes_in: u64,
    bytes_out: u64,
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
    ) -> Self {
        Self {
            inner,
            send,
            recv,
            deframer,
            plain: Vec::with_capacity(MAX_FRAME_DATA),
            plain_pos: 0,
            out: first_out,
            out_pos: 0,
            read_done: false,
            failed: None,
            close_sent: false,
            write_failed: None,
            bytes_in: 0,
            bytes_out: 0,
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

    fn poll_flush_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_pos < self.out.len() {
            let n = match ready!(Pin::new(&mut self.send).poll_write(cx, &self.out[self.out_pos..]))
            {
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
        self.out.clear();
        self.out_pos = 0;
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
        loop {
            if this.plain_pos < this.plain.len() {
                let n = (this.plain.len() - this.plain_pos).min(buf.remaining());
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
            this.plain.clear();
            this.plain_pos = 0;
            let next = match this.deframer.next_message() {
                Ok(Some(message)) => Some(this.inner.open(message, &mut this.plain)),
                Ok(None) => None,
                Err(e) => {
                    let kind = kind_of(&e);
                    return Poll::Ready(Err(this.fail(kind, Some(e.clone()), e.to_string())));
                }
            };
            match next {
                Some(Ok(Received::Data(n))) => {
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
        if let Some(e) = this.failure() {
            return Poll::Ready(Err(e));
        }
        if let Some(msg) = &this.write_failed {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, msg.clone())));
        }
        ready!(this.poll_flush_out(cx))?;
        let n = data.len().min(MAX_WRITE);
        if let Err(e) = this.inner.seal(&data[..n], &mut this.out) {
            let kind = kind_of(&e);
            return Poll::Ready(Err(this.fail(kind, Some(e.clone()), e.to_string())));
        }
        this.bytes_out += n as u64;
        // Start sending now; the bytes are accepted either way (at most MAX_WRITE buffered).
        if let Poll::Ready(Err(e)) = this.poll_flush_out(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_flush_out(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(msg) = &this.write_failed {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, msg.clone())));
        }
        if !this.close_sent {
            ready!(this.poll_flush_out(cx))?;
            if let Err(e) = this.inner.seal_close(&mut this.out) {
                let kind = kind_of(&e);
                return Poll::Ready(Err(this.fail(kind, Some(e.clone()), e.to_string())));
            }
            this.close_sent = true;
        }
        ready!(this.poll_flush_out(cx))?;
        let _ = this.send.finish();
        Poll::Ready(Ok(()))
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        if !self.close_sent {
            let _ = self.send.reset(0u32.into());
        }
    }
}
