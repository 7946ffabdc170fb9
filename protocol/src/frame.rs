//! Length-prefixed framing of Noise messages on a byte stream, and the [`Deframer`] that
//! splits a stream back into messages.
//!
//! On the wire every Noise message (handshake or transport) is `len(2, big-endian) || message`
//! with `1 <= len <= 65535`. The deframer owns one buffer that starts small and grows, only
//! when a message does not fit, to one maximal message plus its prefix: memory is bounded
//! whatever the peer sends, and a stream of small messages (a handshake, an idle or
//! interactive channel) holds little. The caller reads from its socket straight into
//! [`Deframer::spare`].

use crate::error::Error;
use crate::limits::{LENGTH_PREFIX, MAX_NOISE_MESSAGE};

/// Appends `len || message` to `out`, where the message is written by `write` into the
/// `capacity` bytes reserved for it, and returns the message length it reported.
pub(crate) fn write_prefixed(
    out: &mut Vec<u8>,
    capacity: usize,
    write: impl FnOnce(&mut [u8]) -> Result<usize, Error>,
) -> Result<usize, Error> {
    let start = out.len();
    out.resize(start + LENGTH_PREFIX + capacity, 0);
    let written = match write(&mut out[start + LENGTH_PREFIX..]) {
        Ok(n) if (1..=MAX_NOISE_MESSAGE).contains(&n) => n,
        Ok(n) => {
            out.truncate(start);
            return Err(Error::TooLarge {
                what: "noise message",
                len: n,
                max: MAX_NOISE_MESSAGE,
            });
        }
        Err(e) => {
            out.truncate(start);
            return Err(e);
        }
    };
    out[start..start + LENGTH_PREFIX].copy_from_slice(&(written as u16).to_be_bytes());
    out.truncate(start + LENGTH_PREFIX + written);
    Ok(written)
}

/// The message size a [`Deframer`] has room for before its first large message.
const INITIAL_MESSAGE: usize = 4096;

/// Splits a byte stream into length-prefixed messages, with a hard bound on message size.
#[derive(Debug)]
pub struct Deframer {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max_message: usize,
}

impl Deframer {
    /// A deframer that rejects messages longer than `max_message` (at most 65535).
    pub fn new(max_message: usize) -> Self {
        let max_message = max_message.min(MAX_NOISE_MESSAGE);
        Self {
            buf: vec![0u8; LENGTH_PREFIX + max_message.min(INITIAL_MESSAGE)],
            start: 0,
            end: 0,
            max_message,
        }
    }

    /// Lowers (or raises, up to 65535) the size bound, e.g. from handshake to transport.
    /// Buffered bytes are kept.
    pub fn set_max_message(&mut self, max_message: usize) {
        self.max_message = max_message.min(MAX_NOISE_MESSAGE);
    }

    /// Free space to read into; call [`Deframer::commit`] with the count read. Empty only
    /// while a complete message is buffered (take it with [`Deframer::next_message`] first).
    pub fn spare(&mut self) -> &mut [u8] {
        if self.start > 0 && (self.start == self.end || self.end == self.buf.len()) {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        // Full with an incomplete message: grow to the largest message allowed (a longer
        // one is refused by `next_message`, so this happens at most once).
        let full_size = LENGTH_PREFIX + self.max_message;
        if self.end == self.buf.len() && self.buf.len() < full_size && !self.head_complete() {
            self.buf.resize(full_size, 0);
        }
        &mut self.buf[self.end..]
    }

    /// Whether a whole message is buffered at the front.
    fn head_complete(&self) -> bool {
        let avail = &self.buf[self.start..self.end];
        avail.get(..LENGTH_PREFIX).is_some_and(|prefix| {
            avail.len() >= LENGTH_PREFIX + usize::from(u16::from_be_bytes([prefix[0], prefix[1]]))
        })
    }

    /// Records that `n` bytes were written into [`Deframer::spare`].
    pub fn commit(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Copies as much of `bytes` as fits (growing the buffer for an incomplete message, as
    /// [`Deframer::spare`] does) and returns how many were taken: everything, unless complete
    /// messages fill the buffer first.
    pub fn push(&mut self, bytes: &[u8]) -> usize {
        let mut taken = 0;
        while taken < bytes.len() {
            let spare = self.spare();
            if spare.is_empty() {
                break;
            }
            let n = spare.len().min(bytes.len() - taken);
            spare[..n].copy_from_slice(&bytes[taken..taken + n]);
            self.commit(n);
            taken += n;
        }
        taken
    }

    /// The next complete message, if one is buffered. A zero or oversize length is an error
    /// (and stays one: the stream cannot be resynchronised).
    pub fn next_message(&mut self) -> Result<Option<&[u8]>, Error> {
        let avail = &self.buf[self.start..self.end];
        let Some(prefix) = avail.get(..LENGTH_PREFIX) else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([prefix[0], prefix[1]]));
        if len == 0 {
            return Err(Error::Malformed {
                what: "frame length (zero)",
            });
        }
        if len > self.max_message {
            return Err(Error::TooLarge {
                what: "frame",
                len,
                max: self.max_message,
            });
        }
        if avail.len() < LENGTH_PREFIX + len {
            return Ok(None);
        }
        let from = self.start + LENGTH_PREFIX;
        self.start = from + len;
        Ok(Some(&self.buf[from..from + len]))
    }

    /// Bytes buffered but not yet returned as a message.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Call at end of stream: a partial message left over means the stream was cut.
    pub fn finish(&self) -> Result<(), Error> {
        if self.buffered() == 0 {
            Ok(())
        } else {
            Err(Error::Truncated)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(messages: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in messages {
            let r = write_prefixed(&mut out, m.len(), |buf| {
                buf.copy_from_slice(m);
                Ok(m.len())
            });
            assert!(r.is_ok());
        }
        out
    }

    fn decode_in_chunks(bytes: &[u8], chunk: usize, max: usize) -> Result<Vec<Vec<u8>>, Error> {
        let mut d = Deframer::new(max);
        let mut got = Vec::new();
        let mut rest = bytes;
        loop {
            while let Some(m) = d.next_message()? {
                got.push(m.to_vec());
            }
            if rest.is_empty() {
                d.finish()?;
                return Ok(got);
            }
            let take = chunk.min(rest.len());
            let n = d.push(&rest[..take]);
            rest = &rest[n..];
        }
    }

    #[test]
    fn zero_length_and_oversize_are_errors() {
        let mut d = Deframer::new(100);
        d.push(&[0, 0]);
        assert!(matches!(d.next_message(), Err(Error::Malformed { .. })));
        let mut d = Deframer::new(100);
        d.push(&[0, 101]);
        assert_eq!(
            d.next_message(),
            Err(Error::TooLarge {
                what: "frame",
                len: 101,
                max: 100
            })
        );
    }

    #[test]
    fn cut_stream_is_truncated() {
        let bytes = encode(&[vec![1; 10]]);
        assert_eq!(decode_in_chunks(&bytes[..5], 3, 100), Err(Error::Truncated));
        assert_eq!(decode_in_chunks(&bytes[..1], 3, 100), Err(Error::Truncated));
    }

    #[test]
    fn full_size_message_fits() {
        let big = vec![7u8; MAX_NOISE_MESSAGE];
        let bytes = encode(&[big.clone(), vec![1]]);
        assert_eq!(
            decode_in_chunks(&bytes, 4096, MAX_NOISE_MESSAGE),
            Ok(vec![big, vec![1]])
        );
    }

    #[test]
    fn small_messages_keep_the_buffer_small_and_a_large_one_grows_it_once() {
        let mut d = Deframer::new(MAX_NOISE_MESSAGE);
        let small = encode(&vec![vec![3u8; 100]; 200]);
        for chunk in small.chunks(700) {
            let mut rest = chunk;
            while !rest.is_empty() {
                let n = d.push(rest);
                rest = &rest[n..];
                while let Ok(Some(_)) = d.next_message() {}
            }
        }
        assert_eq!(d.buf.len(), LENGTH_PREFIX + INITIAL_MESSAGE);
        let big = encode(&[vec![9u8; 20_000]]);
        assert_eq!(d.push(&big), big.len(), "grew to take the whole message");
        assert_eq!(d.buf.len(), LENGTH_PREFIX + MAX_NOISE_MESSAGE);
        assert_eq!(d.next_message(), Ok(Some(&vec![9u8; 20_000][..])));
        // An oversize length never grows it past the bound, and stays an error.
        let mut d = Deframer::new(5000);
        let mut oversize = vec![0x13, 0x89]; // 5001
        oversize.resize(LENGTH_PREFIX + INITIAL_MESSAGE, 0);
        d.push(&oversize);
        assert!(d.spare().len() <= LENGTH_PREFIX + 5000 - oversize.len());
        assert!(matches!(
            d.next_message(),
            Err(Error::TooLarge { len: 5001, .. })
        ));
    }

    proptest! {
        #[test]
        fn round_trip_any_chunking_through_growth(
            messages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..12_000), 0..8),
            chunk in 1usize..20_000,
        ) {
            let bytes = encode(&messages);
            prop_assert_eq!(decode_in_chunks(&bytes, chunk, MAX_NOISE_MESSAGE), Ok(messages));
        }

        #[test]
        fn round_trip_any_chunking(
            messages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..600), 0..20),
            chunk in 1usize..700,
        ) {
            let bytes = encode(&messages);
            let expected_len: usize = messages.iter().map(|m| m.len() + 2).sum();
            prop_assert_eq!(bytes.len(), expected_len);
            prop_assert_eq!(decode_in_chunks(&bytes, chunk, 600), Ok(messages));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000), chunk in 1usize..64) {
            let _ = decode_in_chunks(&bytes, chunk, 512);
        }
    }
}
