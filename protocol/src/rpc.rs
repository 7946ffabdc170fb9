//! Typed RPC between nodes: the frames that carry many calls over one end-to-end channel.
//!
//! One channel carries every call between one caller and one callee service, so a call costs
//! no handshake of its own. Inside the channel's encrypted byte stream every frame is
//!
//! ```text
//! len (u32, big-endian; bytes after this field, >= 5) || call (u32, big-endian) || kind (u8) || body
//! ```
//!
//! | kind | name    | body                                              | sent by          |
//! |------|---------|---------------------------------------------------|------------------|
//! | 0    | HELLO   | postcard [`Hello`] (call 0)                       | both, first      |
//! | 1    | OPEN    | postcard [`Open`]                                 | caller           |
//! | 2    | MESSAGE | one value, postcard-encoded by the typed layer    | both             |
//! | 3    | END     | empty: this side sends no more messages           | both             |
//! | 4    | CANCEL  | empty: the caller gave up; the handler stops      | caller           |
//! | 5    | CREDIT  | u32 big-endian: the peer may send that many more  | both             |
//! | 6    | STATUS  | postcard [`Status`]: the call's end (ok or error) | callee           |
//!
//! Flow control is per call and counted in messages: each side starts with the window the
//! other announced in its HELLO and may send a MESSAGE only while it holds credit, so a
//! receiver never buffers more than `window` messages of `max_message` bytes for any call,
//! and one call that is not read cannot stall the others. The decoder here is sans-IO: bytes
//! in, frames out, every bound checked before anything is allocated.

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The RPC wire version this crate speaks.
pub const RPC_VERSION: u8 = 1;
/// Bytes of the length prefix.
pub const LEN_PREFIX: usize = 4;
/// Bytes of the header after the length prefix (call id and kind).
pub const HEADER: usize = 5;
/// The largest OPEN or STATUS body (method names and error messages are short).
pub const MAX_CONTROL_BODY: usize = 4096;
/// The largest message any node accepts, whatever it announces (16 MiB).
pub const MAX_MESSAGE_LIMIT: u32 = 16 << 20;

/// What one side announces first: its limits, which bind the other side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`RPC_VERSION`].
    pub version: u8,
    /// The largest MESSAGE body this side accepts.
    pub max_message: u32,
    /// Calls this side serves at once for this caller (0 from a caller).
    pub max_in_flight: u32,
    /// Messages the other side may send on each call before it needs CREDIT.
    pub window: u32,
}

/// How many messages each direction of a call carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Shape {
    /// One request, one response.
    Unary,
    /// One request, a stream of responses.
    ServerStream,
    /// A stream of requests, one response.
    ClientStream,
    /// Streams both ways.
    Bidi,
}

/// The first frame of a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Open {
    /// The method's name.
    pub method: String,
    /// The call's shape, checked against the method's.
    pub shape: Shape,
    /// Milliseconds the caller will wait, if it set a deadline; the callee stops the handler
    /// when they have passed.
    pub deadline_ms: Option<u32>,
}

/// Why a call ended. The numbers are gRPC's, so they read the same in logs and bridges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum Code {
    /// Success.
    Ok = 0,
    /// The caller cancelled the call.
    Cancelled = 1,
    /// The request was malformed (it did not decode as the method's type, or the call's
    /// shape does not match the method's).
    InvalidArgument = 3,
    /// The deadline passed before the call finished.
    DeadlineExceeded = 4,
    /// The service has no such method.
    NotFound = 5,
    /// The callee's policy does not allow this caller this method (or a human did not
    /// approve it).
    Denied = 7,
    /// A bound was hit: too many calls in flight, a quota, a message over the limit.
    ResourceExhausted = 8,
    /// The handler failed.
    Internal = 13,
    /// The peer or the channel went away.
    Unavailable = 14,
}

impl Code {
    /// The code's name, as errors print it.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Ok => "ok",
            Code::Cancelled => "cancelled",
            Code::InvalidArgument => "invalid argument",
            Code::DeadlineExceeded => "deadline exceeded",
            Code::NotFound => "not found",
            Code::Denied => "denied",
            Code::ResourceExhausted => "resource exhausted",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The callee's last word on a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Ok, or why not.
    pub code: Code,
    /// A human-readable reason (empty when ok).
    pub message: String,
}

/// One frame of an RPC channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Limits, first on each side (call 0).
    Hello(Hello),
    /// A new call.
    Open {
        /// The call's id, chosen by the caller.
        call: u32,
        /// What is called.
        open: Open,
    },
    /// One value.
    Message {
        /// The call.
        call: u32,
        /// The postcard-encoded value.
        body: Vec<u8>,
    },
    /// The sender sends no more messages on this call.
    End {
        /// The call.
        call: u32,
    },
    /// The caller gave up.
    Cancel {
        /// The call.
        call: u32,
    },
    /// The receiver grants `credit` more messages.
    Credit {
        /// The call.
        call: u32,
        /// How many.
        credit: u32,
    },
    /// The call's end.
    Status {
        /// The call.
        call: u32,
        /// How it ended.
        status: Status,
    },
}

const HELLO: u8 = 0;
const OPEN: u8 = 1;
const MESSAGE: u8 = 2;
const END: u8 = 3;
const CANCEL: u8 = 4;
const CREDIT: u8 = 5;
const STATUS: u8 = 6;

impl Frame {
    /// The call this frame belongs to (0 for HELLO).
    pub fn call(&self) -> u32 {
        match self {
            Frame::Hello(_) => 0,
            Frame::Open { call, .. }
            | Frame::Message { call, .. }
            | Frame::End { call }
            | Frame::Cancel { call }
            | Frame::Credit { call, .. }
            | Frame::Status { call, .. } => *call,
        }
    }

    /// Appends the frame's encoding to `out`. A MESSAGE body over [`MAX_MESSAGE_LIMIT`], or
    /// an OPEN or STATUS over [`MAX_CONTROL_BODY`], is refused and nothing is written.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        let start = out.len();
        out.extend_from_slice(&[0; LEN_PREFIX]);
        out.extend_from_slice(&self.call().to_be_bytes());
        let result = match self {
            Frame::Hello(hello) => put(out, HELLO, hello, MAX_CONTROL_BODY),
            Frame::Open { open, .. } => put(out, OPEN, open, MAX_CONTROL_BODY),
            Frame::Status { status, .. } => put(out, STATUS, status, MAX_CONTROL_BODY),
            Frame::Message { body, .. } => {
                if body.len() > MAX_MESSAGE_LIMIT as usize {
                    Err(Error::TooLarge {
                        what: "rpc message",
                        len: body.len(),
                        max: MAX_MESSAGE_LIMIT as usize,
                    })
                } else {
                    out.push(MESSAGE);
                    out.extend_from_slice(body);
                    Ok(())
                }
            }
            Frame::End { .. } => {
                out.push(END);
                Ok(())
            }
            Frame::Cancel { .. } => {
                out.push(CANCEL);
                Ok(())
            }
            Frame::Credit { credit, .. } => {
                out.push(CREDIT);
                out.extend_from_slice(&credit.to_be_bytes());
                Ok(())
            }
        };
        if let Err(e) = result {
            out.truncate(start);
            return Err(e);
        }
        let len = (out.len() - start - LEN_PREFIX) as u32;
        out[start..start + LEN_PREFIX].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }

    /// Decodes one frame from the front of `buf`. `Ok(None)`: more bytes are needed (never
    /// more than `max_message` + [`HEADER`] + [`LEN_PREFIX`] of them). `Ok(Some((frame, n)))`:
    /// the frame and the bytes it took. A frame whose declared length is over the bound is
    /// refused as soon as its prefix is read, before anything is buffered.
    pub fn decode(buf: &[u8], max_message: u32) -> Result<Option<(Frame, usize)>, Error> {
        let Some(prefix) = buf.first_chunk::<LEN_PREFIX>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*prefix) as usize;
        if len < HEADER {
            return Err(Error::Malformed {
                what: "rpc frame (shorter than its header)",
            });
        }
        let max = max_message.min(MAX_MESSAGE_LIMIT) as usize + HEADER;
        if len > max {
            return Err(Error::TooLarge {
                what: "rpc frame",
                len,
                max,
            });
        }
        let Some(frame) = buf.get(LEN_PREFIX..LEN_PREFIX + len) else {
            return Ok(None);
        };
        let call = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
        let kind = frame[4];
        let body = &frame[HEADER..];
        let control = |body: &[u8]| {
            if body.len() > MAX_CONTROL_BODY {
                Err(Error::TooLarge {
                    what: "rpc control frame",
                    len: body.len(),
                    max: MAX_CONTROL_BODY,
                })
            } else {
                Ok(())
            }
        };
        let empty = |what: &'static str| {
            if body.is_empty() {
                Ok(())
            } else {
                Err(Error::Malformed { what })
            }
        };
        let decoded = match kind {
            HELLO => {
                control(body)?;
                if call != 0 {
                    return Err(Error::Malformed {
                        what: "rpc hello (not on call 0)",
                    });
                }
                Frame::Hello(take(body, "rpc hello")?)
            }
            OPEN => {
                control(body)?;
                Frame::Open {
                    call,
                    open: take(body, "rpc open")?,
                }
            }
            STATUS => {
                control(body)?;
                Frame::Status {
                    call,
                    status: take(body, "rpc status")?,
                }
            }
            MESSAGE => Frame::Message {
                call,
                body: body.to_vec(),
            },
            END => {
                empty("rpc end (with a body)")?;
                Frame::End { call }
            }
            CANCEL => {
                empty("rpc cancel (with a body)")?;
                Frame::Cancel { call }
            }
            CREDIT => {
                let credit = <[u8; 4]>::try_from(body).map_err(|_| Error::Malformed {
                    what: "rpc credit (body is not 4 bytes)",
                })?;
                Frame::Credit {
                    call,
                    credit: u32::from_be_bytes(credit),
                }
            }
            _ => {
                return Err(Error::Malformed {
                    what: "rpc frame (unknown kind)",
                });
            }
        };
        if decoded.call() == 0 && !matches!(decoded, Frame::Hello(_)) {
            return Err(Error::Malformed {
                what: "rpc frame (call 0 is reserved for hello)",
            });
        }
        Ok(Some((decoded, LEN_PREFIX + len)))
    }
}

fn put<T: Serialize>(out: &mut Vec<u8>, kind: u8, value: &T, max: usize) -> Result<(), Error> {
    out.push(kind);
    let start = out.len();
    let bytes = postcard::to_allocvec(value).map_err(|_| Error::Malformed {
        what: "rpc control frame (unencodable)",
    })?;
    if bytes.len() > max {
        return Err(Error::TooLarge {
            what: "rpc control frame",
            len: bytes.len(),
            max,
        });
    }
    out.truncate(start);
    out.extend_from_slice(&bytes);
    Ok(())
}

/// Decodes a whole postcard body: trailing bytes are an error, like a short one, and so is
/// any encoding but the canonical one (postcard reads over-long varints): a frame has exactly
/// one encoding, the one [`Frame::encode`] writes.
fn take<'a, T: Deserialize<'a> + Serialize>(
    body: &'a [u8],
    what: &'static str,
) -> Result<T, Error> {
    match postcard::take_from_bytes::<T>(body) {
        Ok((value, [])) if postcard::to_allocvec(&value).is_ok_and(|again| again == body) => {
            Ok(value)
        }
        _ => Err(Error::Malformed { what }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(frame: Frame) {
        let mut out = Vec::new();
        frame.encode(&mut out).unwrap();
        let (back, used) = Frame::decode(&out, 1 << 20).unwrap().unwrap();
        assert_eq!(back, frame);
        assert_eq!(used, out.len());
        // Every strict prefix asks for more bytes and decodes nothing.
        for cut in 0..out.len() {
            assert_eq!(
                Frame::decode(&out[..cut], 1 << 20).unwrap(),
                None,
                "cut {cut}"
            );
        }
    }

    #[test]
    fn every_kind_round_trips() {
        round_trip(Frame::Hello(Hello {
            version: RPC_VERSION,
            max_message: 1 << 20,
            max_in_flight: 64,
            window: 16,
        }));
        round_trip(Frame::Open {
            call: 7,
            open: Open {
                method: "work.run".into(),
                shape: Shape::Bidi,
                deadline_ms: Some(1500),
            },
        });
        round_trip(Frame::Message {
            call: u32::MAX,
            body: vec![0xAB; 300],
        });
        round_trip(Frame::Message {
            call: 1,
            body: vec![],
        });
        round_trip(Frame::End { call: 2 });
        round_trip(Frame::Cancel { call: 3 });
        round_trip(Frame::Credit { call: 4, credit: 9 });
        round_trip(Frame::Status {
            call: 5,
            status: Status {
                code: Code::Denied,
                message: "method \"x\" is not allowed".into(),
            },
        });
    }

    #[test]
    fn oversize_is_refused_from_the_prefix_alone() {
        let mut out = Vec::new();
        Frame::Message {
            call: 1,
            body: vec![1; 2000],
        }
        .encode(&mut out)
        .unwrap();
        // Only the prefix: refused before the body arrives.
        assert_eq!(
            Frame::decode(&out[..4], 1000),
            Err(Error::TooLarge {
                what: "rpc frame",
                len: 2005,
                max: 1005
            })
        );
        // A claimed 4 GiB frame is refused, not awaited.
        assert!(matches!(
            Frame::decode(&[0xFF, 0xFF, 0xFF, 0xFF], u32::MAX),
            Err(Error::TooLarge { .. })
        ));
    }

    #[test]
    fn malformed_frames_are_typed_errors() {
        let cases: &[&[u8]] = &[
            &[0, 0, 0, 4, 0, 0, 0, 1],                  // shorter than the header
            &[0, 0, 0, 5, 0, 0, 0, 1, 9],               // unknown kind
            &[0, 0, 0, 6, 0, 0, 0, 1, END, 0],          // END with a body
            &[0, 0, 0, 6, 0, 0, 0, 1, CANCEL, 0],       // CANCEL with a body
            &[0, 0, 0, 7, 0, 0, 0, 1, CREDIT, 0, 0],    // short credit
            &[0, 0, 0, 5, 0, 0, 0, 0, END],             // call 0 for a call frame
            &[0, 0, 0, 6, 0, 0, 0, 1, OPEN, 0xFF],      // truncated postcard
            &[0, 0, 0, 5, 0, 0, 0, 3, HELLO],           // hello off call 0
            &[0, 0, 0, 8, 0, 0, 0, 1, STATUS, 0, 0, 0], // status: trailing byte
            &[0, 0, 0, 7, 0, 0, 0, 1, STATUS, 99, 0],   // unknown code
            // An over-long varint (4 as 0x84 0x00): postcard reads it, the decoder refuses
            // it (found by the rpc_frame fuzz target).
            &[0, 0, 0, 10, 0, 0, 0, 0, HELLO, 1, 0x84, 0x00, 0, 0],
        ];
        for case in cases {
            assert!(
                matches!(Frame::decode(case, 1 << 20), Err(Error::Malformed { .. })),
                "{case:?}: {:?}",
                Frame::decode(case, 1 << 20)
            );
        }
    }

    #[test]
    fn the_canonical_twin_of_the_overlong_case_decodes() {
        let ok = [0, 0, 0, 9, 0, 0, 0, 0, HELLO, 1, 0x04, 0, 0];
        assert!(matches!(
            Frame::decode(&ok, 1 << 20),
            Ok(Some((Frame::Hello(_), 13)))
        ));
    }

    #[test]
    fn encode_refuses_oversize_control_and_writes_nothing() {
        let mut out = vec![1, 2, 3];
        let open = Frame::Open {
            call: 1,
            open: Open {
                method: "m".repeat(MAX_CONTROL_BODY),
                shape: Shape::Unary,
                deadline_ms: None,
            },
        };
        assert!(matches!(open.encode(&mut out), Err(Error::TooLarge { .. })));
        assert_eq!(out, [1, 2, 3]);
    }
}
