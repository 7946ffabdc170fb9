//! [`Channel`]: the end-to-end encrypted, framed transport that a finished handshake yields.
//!
//! Driving contract: call [`Channel::seal`] with application bytes and write what it appends
//! to the byte stream; feed every message the [`crate::Deframer`] yields to
//! [`Channel::open`]; at the end of your own data call [`Channel::seal_close`]. At the end of
//! the incoming stream call [`Channel::finish`]: a stream that ended without a close frame is
//! [`Error::Truncated`], never a clean end. Any error is final: the channel refuses every
//! later call with [`Error::Closed`], so no byte after a bad frame is ever delivered.
//!
//! [`Channel::seal_into`] and [`Channel::open_into`] do the same into buffers the caller
//! keeps (initialised once, reused): no zero-fill of the output and, on open, no copy
//! through the channel's own scratch buffer. The Noise library still copies the plaintext
//! once into the output before it encrypts there (its API has no in-place form).

use std::fmt;

use crate::error::Error;
use crate::limits::{LENGTH_PREFIX, Limits, MAX_FRAME_DATA, MAX_NOISE_MESSAGE, TAG_LEN};
use crate::node_id::NodeId;
use crate::transport::Transport;
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

/// Bytes one frame adds on the wire around its body: length prefix, frame type, tag.
pub const FRAME_OVERHEAD: usize = LENGTH_PREFIX + 1 + TAG_LEN;

/// Where [`Channel::open_into`] puts a data frame's application bytes in its output
/// buffer (after the frame type).
pub const OPENED_DATA_OFFSET: usize = 1;

/// The most bytes [`Channel::seal_into`] writes for `data_len` bytes of data: one frame per
/// 65518 bytes, each possibly preceded by a rekey frame.
pub const fn max_sealed_len(data_len: usize) -> usize {
    data_len + data_len.div_ceil(MAX_FRAME_DATA) * 2 * FRAME_OVERHEAD
}

/// An established end-to-end channel.
pub struct Channel {
    pub(crate) transport: Transport,
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
        transport: Transport,
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
            scratch: Vec::new(),
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
                self.rekey_outgoing()?;
            }
            self.write_frame(FrameType::Data, chunk, out)?;
        }
        Ok(())
    }

    /// [`Channel::seal`] into a caller-kept buffer: writes `len || ciphertext` for each frame
    /// to the start of `out` and returns the bytes written. `out` must hold
    /// [`max_sealed_len`]`(data.len())` bytes, or nothing happens and the error is
    /// [`Error::TooLarge`] (its `len` is what is needed, `max` what `out` has).
    pub fn seal_into(&mut self, data: &[u8], out: &mut [u8]) -> Result<usize, Error> {
        self.check_can_send()?;
        let need = max_sealed_len(data.len());
        if out.len() < need {
            return Err(Error::TooLarge {
                what: "sealed output for the buffer",
                len: need,
                max: out.len(),
            });
        }
        let mut at = 0;
        for chunk in data.chunks(MAX_FRAME_DATA) {
            if self.sent_since_rekey >= self.limits.rekey_after {
                at += self.write_frame_into(FrameType::Rekey, &[], &mut out[at..])?;
                self.rekey_outgoing()?;
            }
            at += self.write_frame_into(FrameType::Data, chunk, &mut out[at..])?;
        }
        Ok(at)
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
        self.grow_scratch(message.len());
        let mut buf = std::mem::take(&mut self.scratch);
        let result = self.open_into(message, &mut buf);
        if let Ok(Received::Data(n)) = result {
            out.extend_from_slice(&buf[OPENED_DATA_OFFSET..OPENED_DATA_OFFSET + n]);
        }
        self.scratch = buf;
        result
    }

    /// [`Channel::open`] into a caller-kept buffer of at least `message.len()` bytes: the
    /// message is decrypted there, and a data frame's application bytes are
    /// `out[OPENED_DATA_OFFSET..OPENED_DATA_OFFSET + n]` for [`Received::Data`]`(n)`. A buffer
    /// shorter than the message is [`Error::TooLarge`] and changes nothing.
    pub fn open_into(&mut self, message: &[u8], out: &mut [u8]) -> Result<Received, Error> {
        let (frame_type, body_len) = self.read_frame_into(message, out)?;
        let result = match frame_type {
            FrameType::Data => Ok(Received::Data(body_len)),
            FrameType::Close if body_len == 0 => {
                self.recv_closed = true;
                Ok(Received::Close)
            }
            FrameType::Rekey if body_len == 0 => {
                self.transport.rekey_incoming().map(|()| Received::Control)
            }
            FrameType::Abort if body_len == 1 => Err(Error::Aborted {
                reason: DenyReason::from_code(out[OPENED_DATA_OFFSET]),
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

    fn rekey_outgoing(&mut self) -> Result<(), Error> {
        if let Err(e) = self.transport.rekey_outgoing() {
            self.failed = true;
            return Err(e);
        }
        self.sent_since_rekey = 0;
        Ok(())
    }

    fn check_can_send(&self) -> Result<(), Error> {
        if self.failed || self.send_closed {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// Encrypts `type || body` as one message, appended to `out` with its length prefix.
    pub(crate) fn write_frame(
        &mut self,
        frame_type: FrameType,
        body: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), Error> {
        let start = out.len();
        out.resize(start + FRAME_OVERHEAD + body.len(), 0);
        match self.write_frame_into(frame_type, body, &mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                Ok(())
            }
            Err(e) => {
                out.truncate(start);
                Err(e)
            }
        }
    }

    /// Encrypts `type || body` as one message, written with its length prefix to the start
    /// of `out` (at least [`FRAME_OVERHEAD`] + `body.len()` bytes); returns the bytes written.
    fn write_frame_into(
        &mut self,
        frame_type: FrameType,
        body: &[u8],
        out: &mut [u8],
    ) -> Result<usize, Error> {
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
        let message_len = plain_len + TAG_LEN;
        if message_len > MAX_NOISE_MESSAGE {
            self.failed = true;
            return Err(Error::TooLarge {
                what: "noise message",
                len: message_len,
                max: MAX_NOISE_MESSAGE,
            });
        }
        let Some(message) = out.get_mut(LENGTH_PREFIX..LENGTH_PREFIX + message_len) else {
            return Err(Error::TooLarge {
                what: "frame for the output buffer",
                len: LENGTH_PREFIX + message_len,
                max: out.len(),
            });
        };
        self.grow_scratch(plain_len);
        self.scratch[0] = frame_type as u8;
        self.scratch[1..plain_len].copy_from_slice(body);
        let written = match self
            .transport
            .write_message(&self.scratch[..plain_len], message)
        {
            Ok(n) if n == message_len => n,
            Ok(n) => {
                self.failed = true;
                return Err(Error::TooLarge {
                    what: "noise message",
                    len: n,
                    max: message_len,
                });
            }
            Err(e) => {
                self.failed = true;
                return Err(e);
            }
        };
        out[..LENGTH_PREFIX].copy_from_slice(&(written as u16).to_be_bytes());
        self.sent += 1;
        self.sent_since_rekey += 1;
        Ok(LENGTH_PREFIX + written)
    }

    /// Decrypts one message into the scratch buffer: its frame type and body length.
    pub(crate) fn read_frame(&mut self, message: &[u8]) -> Result<(FrameType, usize), Error> {
        self.grow_scratch(message.len());
        let mut buf = std::mem::take(&mut self.scratch);
        let result = self.read_frame_into(message, &mut buf);
        self.scratch = buf;
        result
    }

    /// Decrypts one message into `out` (`type || body`): its frame type and body length.
    fn read_frame_into(
        &mut self,
        message: &[u8],
        out: &mut [u8],
    ) -> Result<(FrameType, usize), Error> {
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
        if out.len() < message.len() {
            // The caller's buffer, not the peer's bytes: nothing changes, it may try again.
            return Err(Error::TooLarge {
                what: "message for the output buffer",
                len: message.len(),
                max: out.len(),
            });
        }
        let n = match self.transport.read_message(message, out) {
            Ok(n) => n,
            Err(e) => {
                self.failed = true;
                return Err(e);
            }
        };
        self.received += 1;
        let frame_type = match out.first().filter(|_| n >= 1) {
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

    /// Makes the scratch buffer hold at least `len` bytes (at most one Noise message): it
    /// grows with the largest frame seen, so a channel of small frames holds little.
    fn grow_scratch(&mut self, len: usize) {
        let len = len.min(MAX_NOISE_MESSAGE);
        if self.scratch.len() < len {
            self.scratch.resize(len, 0);
        }
    }

    pub(crate) fn poison(&mut self) {
        self.failed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{Tap, TestNode, connect, messages};

    fn pair() -> (Channel, Channel) {
        connect(&TestNode::new(1), &TestNode::new(2), &mut Tap::default())
    }

    /// Seals with `seal_into` and opens with `open_into`, both into reused buffers.
    fn through_buffers(a: &mut Channel, b: &mut Channel, data: &[u8]) -> (usize, Vec<u8>) {
        let mut wire = vec![0xEE; max_sealed_len(data.len())];
        let n = a.seal_into(data, &mut wire).unwrap();
        let mut plain = vec![0xEE; MAX_NOISE_MESSAGE];
        let mut got = Vec::new();
        for m in messages(&wire[..n]) {
            match b.open_into(&m, &mut plain).unwrap() {
                Received::Data(k) => {
                    got.extend_from_slice(&plain[OPENED_DATA_OFFSET..OPENED_DATA_OFFSET + k])
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        (n, got)
    }

    #[test]
    fn buffers_round_trip_byte_exact_at_the_frame_boundaries() {
        let (mut a, mut b) = pair();
        for len in [
            0,
            1,
            64,
            MAX_FRAME_DATA - 1,
            MAX_FRAME_DATA,
            MAX_FRAME_DATA + 1,
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            let (wire_len, got) = through_buffers(&mut a, &mut b, &data);
            assert_eq!(got, data, "{len} bytes");
            let frames = len.div_ceil(MAX_FRAME_DATA);
            assert_eq!(wire_len, len + frames * FRAME_OVERHEAD, "{len} bytes");
            // And back, across the two forms: buffers one way, vectors the other.
            let mut wire = Vec::new();
            b.seal(&data, &mut wire).unwrap();
            assert_eq!(wire.len(), wire_len);
            let mut plain = vec![0; MAX_NOISE_MESSAGE];
            let mut back = Vec::new();
            for m in messages(&wire) {
                let Received::Data(k) = a.open_into(&m, &mut plain).unwrap() else {
                    panic!("not data");
                };
                back.extend_from_slice(&plain[OPENED_DATA_OFFSET..OPENED_DATA_OFFSET + k]);
            }
            assert_eq!(back, data, "{len} bytes back");
        }
        // Nothing at all for no data: no empty frame on the wire.
        let mut wire = [0u8; 4];
        assert_eq!(a.seal_into(&[], &mut wire), Ok(0));
    }

    #[test]
    fn a_frame_over_the_maximum_is_refused_on_both_sides() {
        let (mut a, mut b) = pair();
        let mut out = Vec::new();
        assert_eq!(
            a.write_frame(FrameType::Data, &vec![1; MAX_FRAME_DATA + 1], &mut out),
            Err(Error::TooLarge {
                what: "noise message",
                len: MAX_NOISE_MESSAGE + 1,
                max: MAX_NOISE_MESSAGE
            })
        );
        assert!(out.is_empty());
        let mut plain = vec![0; MAX_NOISE_MESSAGE + 1];
        assert_eq!(
            b.open_into(&vec![0; MAX_NOISE_MESSAGE + 1], &mut plain),
            Err(Error::Malformed {
                what: "transport message length"
            })
        );
    }

    #[test]
    fn a_short_buffer_changes_nothing() {
        let (mut a, mut b) = pair();
        let data = [9u8; 100];
        let mut small = vec![0; max_sealed_len(data.len()) - 1];
        assert_eq!(
            a.seal_into(&data, &mut small),
            Err(Error::TooLarge {
                what: "sealed output for the buffer",
                len: max_sealed_len(100),
                max: max_sealed_len(100) - 1
            })
        );
        // No nonce was spent: the next frame opens with the peer's first nonce.
        let mut wire = vec![0; max_sealed_len(data.len())];
        let n = a.seal_into(&data, &mut wire).unwrap();
        let message = &wire[LENGTH_PREFIX..n];
        let mut short = vec![0; message.len() - 1];
        assert!(matches!(
            b.open_into(message, &mut short),
            Err(Error::TooLarge { .. })
        ));
        let mut plain = vec![0; message.len()];
        assert_eq!(b.open_into(message, &mut plain), Ok(Received::Data(100)));
        assert_eq!(
            &plain[OPENED_DATA_OFFSET..OPENED_DATA_OFFSET + 100],
            &data[..]
        );
    }

    #[test]
    fn a_flipped_byte_is_rejected_and_nothing_after_it_opens() {
        for at in [0, 1, 40, 1 + 64 + TAG_LEN - 1] {
            let (mut a, mut b) = pair();
            let mut wire = vec![0; 2 * max_sealed_len(64)];
            let n = a.seal_into(&[3; 64], &mut wire).unwrap();
            let m = a.seal_into(&[4; 64], &mut wire[n..]).unwrap();
            let (first, second) = wire[..n + m].split_at_mut(n);
            first[LENGTH_PREFIX + at] ^= 0x01;
            let mut plain = vec![0xAA; MAX_NOISE_MESSAGE];
            assert_eq!(
                b.open_into(&first[LENGTH_PREFIX..], &mut plain),
                Err(Error::Authentication),
                "flip at {at}"
            );
            assert_eq!(
                b.open_into(&second[LENGTH_PREFIX..], &mut plain),
                Err(Error::Closed)
            );
        }
    }

    #[test]
    fn buffers_rekey_on_schedule_and_close_still_goes_out() {
        let (mut a, mut b) = pair();
        a.limits.rekey_after = 2;
        let mut wire = vec![0; max_sealed_len(10 * 5)];
        let mut plain = vec![0; MAX_NOISE_MESSAGE];
        let mut got = Vec::new();
        let mut controls = 0;
        for i in 0..10u8 {
            let n = a.seal_into(&[i; 5], &mut wire).unwrap();
            for msg in messages(&wire[..n]) {
                match b.open_into(&msg, &mut plain).unwrap() {
                    Received::Data(k) => got.extend_from_slice(&plain[1..1 + k]),
                    Received::Control => controls += 1,
                    Received::Close => panic!("close"),
                }
            }
        }
        // 10 data frames, a rekey before every frame after each 2.
        assert_eq!(controls, 4);
        assert_eq!(got, (0..10u8).flat_map(|i| [i; 5]).collect::<Vec<_>>());
        let mut close = Vec::new();
        a.seal_close(&mut close).unwrap();
        assert_eq!(
            b.open_into(&close[LENGTH_PREFIX..], &mut plain),
            Ok(Received::Close)
        );
        assert_eq!(b.finish(), Ok(()));
        assert_eq!(a.seal_into(&[1], &mut wire), Err(Error::Closed));
    }
}
