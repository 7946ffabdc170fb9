//! [`Channel`]: the end-to-end encrypted, framed transport that a finished handshake yields.
//!
//! Driving contract: call [`Channel::seal`] with application bytes and write what it appends
//! to the byte stream; feed every message the [`crate::Deframer`] yields to
//! [`Channel::open`]; at the end of your own data call [`Channel::seal_close`]. At the end of
//! the incoming stream call [`Channel::finish`]: a stream that ended without a close frame is
//! [`Error::Truncated`], never a clean end. Any error is final: the channel refuses every
//! later call with [`Error::Closed`], so no byte after a bad frame is ever delivered.

use std::fmt;

use crate::error::Error;
use crate::frame::write_prefixed;
use crate::limits::{Limits, MAX_FRAME_DATA, MAX_NOISE_MESSAGE, TAG_LEN};
use crate::node_id::NodeId;
use crate::wire::{DenyReason, FrameType, ServiceName};

/// What one incoming message turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// This many application bytes were appended to the output buffer.
    Data(usize),
    /// The peer closed its direction cleanly; nothing more will arrive.
    Close,
    /// A control frame (rekey) that carried no application bytes.
    Control,
}

/// An established end-to-end channel.
pub struct Channel {
    pub(crate) transport: snow::TransportState,
    peer: NodeId,
    service: ServiceName,
    handshake_hash: [u8; 32],
    pub(crate) limits: Limits,
    scratch: Vec<u8>,
    sent: u64,
    received: u64,
    sent_since_rekey: u64,
    send_closed: bool,
    recv_closed: bool,
    failed: bool,
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("peer", &self.peer)
            .field("service", &self.service)
            .field("sent", &self.sent)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

impl Channel {
    pub(crate) fn new(
        transport: snow::TransportState,
        peer: NodeId,
        service: ServiceName,
        handshake_hash: [u8; 32],
        limits: Limits,
    ) -> Self {
        Self {
            transport,
            peer,
            service,
            handshake_hash,
            limits,
            scratch: vec![0u8; MAX_NOISE_MESSAGE],
            sent: 0,
            received: 0,
            sent_since_rekey: 0,
            send_closed: false,
            recv_closed: false,
            failed: false,
        }
    }

    /// The peer's identity, proven by the handshake.
    pub fn peer(&self) -> NodeId {
        self.peer
    }

    /// The service this channel was opened for.
    pub fn service(&self) -> &ServiceName {
        &self.service
    }

    /// The Noise handshake hash: unique to this channel, for binding receipts to it.
    pub fn handshake_hash(&self) -> &[u8; 32] {
        &self.handshake_hash
    }

    /// Messages sent and received so far (including control frames).
    pub fn message_counts(&self) -> (u64, u64) {
        (self.sent, self.received)
    }

    /// True once the peer's close frame was received.
    pub fn is_recv_closed(&self) -> bool {
        self.recv_closed
    }

    /// Encrypts `data` as one or more data frames (at most 65518 bytes of data each),
    /// appending `len || ciphertext` for each to `out`. Rekeys when due.
    pub fn seal(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        self.check_can_send()?;
        for chunk in data.chunks(MAX_FRAME_DATA) {
            if self.sent_since_rekey >= self.limits.rekey_after {
                self.write_frame(FrameType::Rekey, &[], out)?;
                self.transport.rekey_outgoing();
                self.sent_since_rekey = 0;
            }
            self.write_frame(FrameType::Data, chunk, out)?;
        }
        Ok(())
    }

    /// Appends the close frame. Nothing can be sent afterwards.
    pub fn seal_close(&mut self, out: &mut Vec<u8>) -> Result<(), Error> {
        self.check_can_send()?;
        self.write_frame(FrameType::Close, &[], out)?;
        self.send_closed = true;
        Ok(())
    }

    /// Appends an abort frame: the channel ends, both directions, for `reason` (the peer's
    /// next read fails with [`Error::Aborted`]). Nothing can be sent afterwards.
    pub fn seal_abort(&mut self, reason: DenyReason, out: &mut Vec<u8>) -> Result<(), Error> {
        self.check_can_send()?;
        self.write_frame(FrameType::Abort, &[reason.code()], out)?;
        self.send_closed = true;
        Ok(())
    }

    /// Decrypts one message (without its length prefix), appending application bytes to
    /// `out`. An abort frame is [`Error::Aborted`].
    pub fn open(&mut self, message: &[u8], out: &mut Vec<u8>) -> Result<Received, Error> {
        let (frame_type, body_len) = self.read_frame(message)?;
        let result = match frame_type {
            FrameType::Data => {
                out.extend_from_slice(&self.scratch[1..1 + body_len]);
                Ok(Received::Data(body_len))
            }
            FrameType::Close if body_len == 0 => {
                self.recv_closed = true;
                Ok(Received::Close)
            }
            FrameType::Rekey if body_len == 0 => {
                self.transport.rekey_incoming();
                Ok(Received::Control)
            }
            FrameType::Abort if body_len == 1 => Err(Error::Aborted {
                reason: DenyReason::from_code(self.scratch[1]),
            }),
            FrameType::Close | FrameType::Rekey | FrameType::Abort => Err(Error::Malformed {
                what: "control frame",
            }),
            other => Err(Error::UnexpectedFrame { what: other.name() }),
        };
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    /// Call when the incoming byte stream ended: `Ok` only if the close frame was received.
    pub fn finish(&self) -> Result<(), Error> {
        if self.recv_closed {
            Ok(())
        } else {
            Err(Error::Truncated)
        }
    }

    fn check_can_send(&self) -> Result<(), Error> {
        if self.failed || self.send_closed {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// Encrypts `type || body` as one message.
    pub(crate) fn write_frame(
        &mut self,
        frame_type: FrameType,
        body: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), Error> {
        // Keep one message in reserve so that a close frame can always be sent.
        let budget = if frame_type == FrameType::Close {
            self.limits.max_messages
        } else {
            self.limits.max_messages.saturating_sub(1)
        };
        if self.sent >= budget {
            self.failed = true;
            return Err(Error::NonceExhausted);
        }
        let plain_len = 1 + body.len();
        self.scratch[0] = frame_type as u8;
        self.scratch[1..plain_len].copy_from_slice(body);
        let transport = &mut self.transport;
        let scratch = &self.scratch[..plain_len];
        let written = write_prefixed(out, plain_len + TAG_LEN, |buf| {
            transport.write_message(scratch, buf).map_err(Error::from)
        });
        if let Err(e) = written {
            self.failed = true;
            return Err(e);
        }
        self.sent += 1;
        self.sent_since_rekey += 1;
        Ok(())
    }

    /// Decrypts one message into the scratch buffer: its frame type and body length.
    pub(crate) fn read_frame(&mut self, message: &[u8]) -> Result<(FrameType, usize), Error> {
        if self.failed {
            return Err(Error::Closed);
        }
        if self.recv_closed {
            self.failed = true;
            return Err(Error::UnexpectedFrame {
                what: "after close",
            });
        }
        if self.received >= self.limits.max_messages {
            self.failed = true;
            return Err(Error::NonceExhausted);
        }
        if message.len() < TAG_LEN + 1 || message.len() > MAX_NOISE_MESSAGE {
            self.failed = true;
            return Err(Error::Malformed {
                what: "transport message length",
            });
        }
        let n = match self.transport.read_message(message, &mut self.scratch) {
            Ok(n) => n,
            Err(e) => {
                self.failed = true;
                return Err(Error::from(e));
            }
        };
        self.received += 1;
        let frame_type = match self.scratch.first().filter(|_| n >= 1) {
            Some(&byte) => FrameType::from_byte(byte),
            None => Err(Error::Malformed { what: "frame" }),
        };
        match frame_type {
            Ok(t) => Ok((t, n - 1)),
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }

    /// The body of the last frame read by [`Channel::read_frame`].
    pub(crate) fn last_body(&self, len: usize) -> &[u8] {
        &self.scratch[1..1 + len]
    }

    pub(crate) fn poison(&mut self) {
        self.failed = true;
    }
}
