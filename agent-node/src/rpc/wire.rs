//! The I/O both sides share: one writer task per channel fed by a queue of encoded frames,
//! a frame reader, and each call's half of the flow control.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use nullport_protocol::rpc::{Frame, Hello, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, Semaphore, mpsc};

use super::error::RpcError;
use crate::rpc::Code;

/// Frames queued for the writer, per channel.
pub(crate) const OUT_QUEUE: usize = 256;
/// Bytes gathered into one write.
const BATCH: usize = 256 * 1024;
/// Most credit a call may hold (a peer granting more is capped, never overflowed).
const MAX_CREDIT: usize = 1 << 20;
/// How long a new channel waits for the peer's HELLO.
pub(crate) const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Encodes `frame` for the writer queue.
pub(crate) fn frame_bytes(frame: &Frame) -> Result<Vec<u8>, RpcError> {
    let mut out = Vec::new();
    frame
        .encode(&mut out)
        .map_err(|e| RpcError::new(Code::ResourceExhausted, e.to_string()))?;
    Ok(out)
}

/// Writes queued frames, gathered into batches, until every sender is gone or a write
/// fails; then shuts the write side down.
pub(crate) async fn run_writer<W: AsyncWrite + Unpin>(mut io: W, mut rx: mpsc::Receiver<Vec<u8>>) {
    let mut batch = Vec::with_capacity(64 * 1024);
    while let Some(first) = rx.recv().await {
        batch.clear();
        batch.extend_from_slice(&first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(more) => batch.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if io.write_all(&batch).await.is_err() || io.flush().await.is_err() {
            return;
        }
    }
    let _ = io.shutdown().await;
}

/// Reads frames off a channel's read half.
pub(crate) struct FrameReader<R> {
    io: R,
    buf: Vec<u8>,
    start: usize,
    max_message: u32,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub(crate) fn new(io: R, max_message: u32) -> Self {
        Self {
            io,
            buf: Vec::with_capacity(64 * 1024),
            start: 0,
            max_message,
        }
    }

    /// The next frame; `Ok(None)` at a clean end of the stream between frames.
    pub(crate) async fn next(&mut self) -> Result<Option<Frame>, RpcError> {
        loop {
            match Frame::decode(&self.buf[self.start..], self.max_message) {
                Ok(Some((frame, used))) => {
                    self.start += used;
                    return Ok(Some(frame));
                }
                Ok(None) => {}
                Err(e) => return Err(RpcError::new(Code::Unavailable, format!("peer sent {e}"))),
            }
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            self.buf.reserve(64 * 1024);
            match self.io.read_buf(&mut self.buf).await {
                Ok(0) if self.buf.is_empty() => return Ok(None),
                Ok(0) => {
                    return Err(RpcError::unavailable(
                        "channel ended in the middle of a frame",
                    ));
                }
                Ok(_) => {}
                Err(e) => return Err(RpcError::unavailable(format!("channel failed: {e}"))),
            }
        }
    }

    /// The peer's HELLO, which must come first.
    pub(crate) async fn hello(&mut self) -> Result<Hello, RpcError> {
        match tokio::time::timeout(HELLO_TIMEOUT, self.next()).await {
            Ok(Ok(Some(Frame::Hello(hello)))) => Ok(hello),
            Ok(Ok(Some(_))) => Err(RpcError::unavailable("peer did not start with HELLO")),
            Ok(Ok(None)) => Err(RpcError::unavailable("peer closed before HELLO")),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(RpcError::unavailable("no HELLO from the peer in time")),
        }
    }
}

/// Bytes a callee holds for one caller's channel and has not handed to a handler yet. Over
/// the limit, the channel is not read until handlers catch up (backpressure, no error), so
/// what a caller can make the callee buffer is bounded whatever its credit allows.
#[derive(Debug)]
pub(crate) struct Budget {
    bytes: AtomicUsize,
    limit: usize,
    freed: Notify,
}

impl Budget {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            bytes: AtomicUsize::new(0),
            limit,
            freed: Notify::new(),
        })
    }

    /// Whether the channel should wait before reading more.
    pub(crate) fn over(&self) -> bool {
        self.bytes.load(Ordering::Acquire) >= self.limit
    }

    /// Resolves after some held bytes were released.
    pub(crate) async fn freed(&self) {
        self.freed.notified().await;
    }
}

/// One received value, counted against its channel's [`Budget`] until it is taken or
/// dropped.
#[derive(Debug)]
pub(crate) struct Held {
    body: Vec<u8>,
    len: usize,
    budget: Option<Arc<Budget>>,
}

impl Held {
    pub(crate) fn new(body: Vec<u8>, budget: Option<Arc<Budget>>) -> Self {
        let len = body.len();
        if let Some(b) = &budget {
            b.bytes.fetch_add(len, Ordering::AcqRel);
        }
        Self { body, len, budget }
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.body
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(b) = &self.budget {
            b.bytes.fetch_sub(self.len, Ordering::AcqRel);
            b.freed.notify_one();
        }
    }
}

/// What the reader hands to a call.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// One value.
    Message(Held),
    /// The peer sends no more values.
    End,
    /// The callee's last word (caller side only).
    Status(Status),
    /// The channel is gone.
    Lost(RpcError),
}

/// The flow-control state a call shares with the channel's reader.
#[derive(Debug)]
pub(crate) struct Credit {
    /// Messages this side may still send.
    send: Semaphore,
    /// Messages the peer may still send (checked by the reader: more is a violation).
    allowance: AtomicU32,
}

impl Credit {
    pub(crate) fn new(send: u32, receive: u32) -> Arc<Self> {
        Arc::new(Self {
            send: Semaphore::new((send as usize).min(MAX_CREDIT)),
            allowance: AtomicU32::new(receive),
        })
    }

    /// The peer granted `n` more messages.
    pub(crate) fn grant_send(&self, n: u32) {
        let room = MAX_CREDIT.saturating_sub(self.send.available_permits());
        self.send.add_permits((n as usize).min(room));
    }

    /// Counts one message received; false if the peer had no credit for it.
    pub(crate) fn take_receive(&self) -> bool {
        self.allowance
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |a| a.checked_sub(1))
            .is_ok()
    }

    /// Wakes every sender waiting for credit with an error (the call ended).
    pub(crate) fn close(&self) {
        self.send.close();
    }
}

/// The reader's entry for one live call.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) inbox: mpsc::UnboundedSender<Inbound>,
    pub(crate) credit: Arc<Credit>,
}

impl Slot {
    /// Hands `inbound` to the call. An error is a flow-control violation (the channel must
    /// close).
    pub(crate) fn deliver(&self, call: u32, inbound: Inbound) -> Result<(), RpcError> {
        if matches!(inbound, Inbound::Message(_)) && !self.credit.take_receive() {
            return Err(RpcError::new(
                Code::ResourceExhausted,
                format!("peer sent past its credit on call {call}"),
            ));
        }
        let _ = self.inbox.send(inbound);
        Ok(())
    }
}

/// Routes a frame to its call; frames for calls that already ended are dropped.
pub(crate) fn route(
    slots: &HashMap<u32, Slot>,
    call: u32,
    inbound: Inbound,
) -> Result<(), RpcError> {
    match slots.get(&call) {
        Some(slot) => slot.deliver(call, inbound),
        None => Ok(()),
    }
}

/// The sending half of one call: frames with this call's id, messages within credit.
#[derive(Debug, Clone)]
pub(crate) struct CallSender {
    pub(crate) id: u32,
    pub(crate) out: mpsc::Sender<Vec<u8>>,
    pub(crate) credit: Arc<Credit>,
    /// The largest message the peer accepts.
    pub(crate) peer_max_message: u32,
}

impl CallSender {
    pub(crate) async fn send_frame(&self, frame: &Frame) -> Result<(), RpcError> {
        let bytes = frame_bytes(frame)?;
        self.out
            .send(bytes)
            .await
            .map_err(|_| RpcError::unavailable("channel closed"))
    }

    /// One encoded value as a MESSAGE frame, once the peer's limit allows it and credit is
    /// taken for it (waits for credit): for callers that queue it with other frames.
    pub(crate) async fn message_bytes(
        &self,
        body: Vec<u8>,
        what: &str,
    ) -> Result<Vec<u8>, RpcError> {
        if body.len() > self.peer_max_message as usize {
            return Err(RpcError::new(
                Code::ResourceExhausted,
                format!(
                    "{what} of {} bytes exceeds the peer's limit of {} bytes",
                    body.len(),
                    self.peer_max_message
                ),
            ));
        }
        match self.credit.send.acquire().await {
            Ok(permit) => permit.forget(),
            Err(_) => return Err(RpcError::unavailable("call ended")),
        }
        frame_bytes(&Frame::Message {
            call: self.id,
            body,
        })
    }

    /// Sends one encoded value, waiting for credit.
    pub(crate) async fn send_message(&self, body: Vec<u8>, what: &str) -> Result<(), RpcError> {
        let bytes = self.message_bytes(body, what).await?;
        self.out
            .send(bytes)
            .await
            .map_err(|_| RpcError::unavailable("channel closed"))
    }
}

/// One side of one call: its sender, and its inbox that grants credit back as it is read.
#[derive(Debug)]
pub(crate) struct CallIo {
    pub(crate) tx: CallSender,
    pub(crate) inbox: mpsc::UnboundedReceiver<Inbound>,
    /// The window this side announced (credit is granted back in halves of it).
    pub(crate) window: u32,
    consumed: u32,
}

impl CallIo {
    pub(crate) fn new(
        tx: CallSender,
        inbox: mpsc::UnboundedReceiver<Inbound>,
        window: u32,
    ) -> Self {
        Self {
            tx,
            inbox,
            window,
            consumed: 0,
        }
    }

    /// The next inbound item; grants credit back as messages are consumed.
    pub(crate) async fn recv(&mut self) -> Inbound {
        let item = self
            .inbox
            .recv()
            .await
            .unwrap_or_else(|| Inbound::Lost(RpcError::unavailable("channel closed")));
        if matches!(item, Inbound::Message(_)) {
            self.consumed += 1;
            if self.consumed >= (self.window / 2).max(1) {
                let n = std::mem::take(&mut self.consumed);
                self.tx.credit.allowance.fetch_add(n, Ordering::AcqRel);
                let _ = self
                    .tx
                    .send_frame(&Frame::Credit {
                        call: self.tx.id,
                        credit: n,
                    })
                    .await;
            }
        }
        item
    }
}
