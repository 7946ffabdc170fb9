//! Resumed opens: a channel without identity proofs between two nodes that completed a full
//! handshake a few minutes ago.
//!
//! ```text
//! initiator (caller)                                    responder (callee)
//!   R1 -> ticket id (16) || counter (u64 BE) || psk, e + service + blob
//!         responder: finds the ticket (none: answers REFUSED, one byte, and the caller
//!         runs the full handshake on the same stream), authenticates R1, checks that the
//!         counter was never used
//!   R2 <- e, ee                                         (exactly 48 bytes, at once)
//!   frame -> Confirm                                    (first transport frame, empty)
//!         responder: the caller is live; only now does the application see the request
//!   frame <- Accept | Deny(reason)                      (first transport frame)
//! ```
//!
//! `Noise_NNpsk0_25519_AESGCM_SHA256` with the ticket's secret as the PSK. The secret is
//! derived by both sides from the split keys of a completed full handshake (HKDF-SHA256,
//! salted with its handshake hash) that the callee accepted, and never travels; its ticket id
//! is derived the same way and is only a name. The prologue binds the version, both NodeIds,
//! the relay session, the ticket id and the counter, so a resumed open cannot be moved to
//! another session, pair or counter. Fresh ephemeral keys on both sides (`ee`) make every
//! resumed channel's keys forward secret; the ticket's lifetime (default 10 minutes from the
//! full handshake, never extended) bounds how long a stolen secret could open channels, and
//! the callee's replay window makes each counter usable once. R1 alone is not enough for the
//! callee to act on: a relay could withhold it and deliver it later, so the application sees
//! the request only after the caller's `Confirm`, which only the live caller (holder of the
//! ephemeral key behind R1) can make. The callee's policy then decides every resumed open
//! exactly as it decides a full one. `docs/protocol.md` has the reasoning.

pub(crate) mod tickets;

use std::time::Instant;

pub use crate::limits::DEFAULT_RESUME_LIFETIME;
use tickets::Lookup;
pub use tickets::{MAX_RESUMPTIONS, REPLAY_WINDOW, SessionCache, TICKET_ID_LEN, TicketId};

use crate::channel::Channel;
use crate::error::Error;
use crate::frame::write_prefixed;
use crate::handshake::{
    AwaitingVerdict, DialRequest, HandshakeKeys, Initiator, Request, SessionId, handshake_hash,
};
use crate::limits::{
    HANDSHAKE_MSG1_LEN, Limits, MAX_HELLO_BLOB, MAX_SERVICE_NAME, PROTOCOL_VERSION, TAG_LEN,
};
use crate::node_id::NodeId;
use crate::noise;
use crate::wire::{FrameType, decode_service_blob, encode_service_blob};

/// Label that starts the prologue of a resumed open.
const PROLOGUE_LABEL: &[u8] = b"nullport/e2e-resume";
/// The responder's whole answer when it holds no such ticket: run the full handshake.
pub const REFUSED: u8 = 0x01;
/// Bytes in front of the Noise message of R1: ticket id and counter.
pub const R1_HEADER_LEN: usize = TICKET_ID_LEN + 8;
/// Smallest R1: header, ephemeral key, the shortest request (1-byte service, empty blob), tag.
pub const MIN_R1_LEN: usize = R1_HEADER_LEN + 32 + (1 + 1 + 2) + TAG_LEN;
/// Largest R1.
pub const MAX_R1_LEN: usize =
    R1_HEADER_LEN + 32 + (1 + MAX_SERVICE_NAME + 2 + MAX_HELLO_BLOB) + TAG_LEN;
/// Size of R2: the responder's ephemeral key and an empty encrypted payload.
pub const R2_LEN: usize = 32 + TAG_LEN;

/// The prologue: `label || version || initiator || responder || session || ticket || counter`.
fn prologue(
    initiator: &NodeId,
    responder: &NodeId,
    session: SessionId,
    id: &TicketId,
    counter: u64,
) -> Vec<u8> {
    let mut p = Vec::with_capacity(PROLOGUE_LABEL.len() + 1 + 64 + 8 + TICKET_ID_LEN + 8);
    p.extend_from_slice(PROLOGUE_LABEL);
    p.push(PROTOCOL_VERSION);
    p.extend_from_slice(initiator.as_bytes());
    p.extend_from_slice(responder.as_bytes());
    p.extend_from_slice(&session.0.to_be_bytes());
    p.extend_from_slice(id);
    p.extend_from_slice(&counter.to_be_bytes());
    p
}

/// The prologue of a resumed open (fuzz targets build genuine R1 messages with it).
#[cfg(feature = "fuzzing")]
pub fn prologue_for_fuzzing(
    initiator: &NodeId,
    responder: &NodeId,
    session: SessionId,
    id: &TicketId,
    counter: u64,
) -> Vec<u8> {
    prologue(initiator, responder, session, id, counter)
}

/// True when a dial's first handshake message is a resumed open (R1) rather than message 1
/// of the full handshake (exactly 32 bytes).
pub fn is_resumption(first_message: &[u8]) -> bool {
    first_message.len() != HANDSHAKE_MSG1_LEN
}

/// A channel being opened by the caller: resumed when this process holds a live ticket for
/// the callee, full otherwise.
pub enum Opening {
    /// The full handshake (message 1 sent).
    Full(Initiator),
    /// A resumed open (R1 sent).
    Resumed(ResumeInitiator),
}

/// What a caller's open became after the responder's answer.
#[allow(clippy::large_enum_variant)] // one per open, moved once or twice
pub enum Answered {
    /// Authenticated both ways; waiting for the responder's accept or deny.
    Verdict(AwaitingVerdict),
    /// The responder held no such ticket: the full handshake started on the same stream
    /// (its message 1 appended to `out`); hand it the next answer.
    Retry(Box<Opening>),
}

impl Opening {
    /// Starts the cheapest open allowed and appends its first message to `out`.
    pub fn start(
        keys: &HandshakeKeys,
        request: DialRequest,
        limits: Limits,
        now: Instant,
        out: &mut Vec<u8>,
    ) -> Result<Self, Error> {
        if limits.resume_lifetime.is_zero() || request.expected == keys.node_id() {
            return Initiator::start(keys, request, limits, now, out).map(Self::Full);
        }
        match keys.sessions().lease(&request.expected, now) {
            Some(lease) => {
                ResumeInitiator::start(keys, lease, request, limits, now, out).map(Self::Resumed)
            }
            None => Initiator::start(keys, request, limits, now, out).map(Self::Full),
        }
    }

    /// True for a resumed open.
    pub fn is_resumed(&self) -> bool {
        matches!(self, Self::Resumed(_))
    }

    /// When this open times out.
    pub fn deadline(&self) -> Instant {
        match self {
            Self::Full(i) => i.deadline(),
            Self::Resumed(r) => r.deadline,
        }
    }

    /// Handles the responder's first answer (message 2, R2, or REFUSED).
    pub fn handle_response(
        self,
        keys: &HandshakeKeys,
        message: &[u8],
        now: Instant,
        out: &mut Vec<u8>,
    ) -> Result<Answered, Error> {
        match self {
            Self::Full(init) => init
                .handle_response(message, now, out)
                .map(Answered::Verdict),
            Self::Resumed(r) => r.handle_response(keys, message, now, out),
        }
    }
}

/// The caller's side of a resumed open, after R1.
pub struct ResumeInitiator {
    hs: snow::HandshakeState,
    request: DialRequest,
    deadline: Instant,
    limits: Limits,
}

impl ResumeInitiator {
    fn start(
        keys: &HandshakeKeys,
        lease: tickets::Lease,
        request: DialRequest,
        limits: Limits,
        now: Instant,
        out: &mut Vec<u8>,
    ) -> Result<Self, Error> {
        if request.blob.len() > MAX_HELLO_BLOB {
            return Err(Error::TooLarge {
                what: "handshake blob",
                len: request.blob.len(),
                max: MAX_HELLO_BLOB,
            });
        }
        let prologue = prologue(
            &keys.node_id(),
            &request.expected,
            request.session,
            &lease.id,
            lease.counter,
        );
        let mut hs = noise::resume_builder()
            .prologue(&prologue)?
            .psk(0, &lease.secret)?
            .build_initiator()?;
        let mut plain = Vec::with_capacity(3 + MAX_SERVICE_NAME + request.blob.len());
        encode_service_blob(&request.service, &request.blob, &mut plain);
        write_prefixed(out, R1_HEADER_LEN + 32 + plain.len() + TAG_LEN, |buf| {
            let (header, body) = buf.split_at_mut(R1_HEADER_LEN);
            header[..TICKET_ID_LEN].copy_from_slice(&lease.id);
            header[TICKET_ID_LEN..].copy_from_slice(&lease.counter.to_be_bytes());
            let n = hs.write_message(&plain, body).map_err(Error::from)?;
            Ok(R1_HEADER_LEN + n)
        })?;
        Ok(Self {
            hs,
            request,
            deadline: now + limits.handshake_timeout,
            limits,
        })
    }

    fn handle_response(
        mut self,
        keys: &HandshakeKeys,
        message: &[u8],
        now: Instant,
        out: &mut Vec<u8>,
    ) -> Result<Answered, Error> {
        if now > self.deadline {
            return Err(Error::Timeout);
        }
        if message == [REFUSED] {
            // No such ticket at the callee (restarted, expired, evicted, forgotten), or a
            // relay claiming so: either way the full handshake decides, on the same stream.
            keys.sessions().forget_outgoing(&self.request.expected);
            let init = Initiator::start(keys, self.request, self.limits, now, out)?;
            return Ok(Answered::Retry(Box::new(Opening::Full(init))));
        }
        if message.len() != R2_LEN {
            return Err(Error::Malformed {
                what: "resumed open answer (wrong length)",
            });
        }
        let mut payload = [0u8; R2_LEN];
        let n = self.hs.read_message(message, &mut payload)?;
        if n != 0 {
            return Err(Error::Malformed {
                what: "resumed open answer payload",
            });
        }
        let hash = handshake_hash(&self.hs);
        let transport = self.hs.into_transport_mode()?;
        let mut channel = Channel::new(
            transport,
            self.request.expected,
            self.request.service,
            hash,
            self.limits,
        );
        // Proof that this caller is live, for the callee to act on the request.
        channel.write_frame(FrameType::Confirm, &[], out)?;
        Ok(Answered::Verdict(AwaitingVerdict::new(
            channel,
            self.deadline,
        )))
    }
}

/// The callee's answer to R1.
pub enum Resumed {
    /// Authenticated: R2 was appended to `out` (send it now); the caller's `Confirm` comes
    /// next ([`AwaitingConfirm::handle_confirm`]).
    Confirming(Box<AwaitingConfirm>),
    /// No such ticket: REFUSED was appended to `out`; the caller's message 1 of the full
    /// handshake comes next on the same stream.
    Refused,
}

/// The callee's side of a resumed open after R2: waiting for the caller's `Confirm`.
pub struct AwaitingConfirm {
    channel: Channel,
    blob: Vec<u8>,
    deadline: Instant,
}

impl AwaitingConfirm {
    /// When this open times out.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The service R1 asked for (for tests and fuzzing; act on [`Request`] only).
    pub fn service(&self) -> &crate::ServiceName {
        self.channel.service()
    }

    /// The blob R1 carried (for tests and fuzzing; act on [`Request`] only).
    pub fn blob(&self) -> &[u8] {
        &self.blob
    }

    /// Handles the caller's first transport frame, which must be `Confirm`: the request, for
    /// the application's decision.
    pub fn handle_confirm(mut self, message: &[u8], now: Instant) -> Result<Request, Error> {
        if now > self.deadline {
            return Err(Error::Timeout);
        }
        match self.channel.read_frame(message)? {
            (FrameType::Confirm, 0) => Ok(Request::new(self.channel, self.blob, None)),
            (FrameType::Confirm, _) => Err(Error::Malformed {
                what: "confirm frame",
            }),
            (other, _) => {
                self.channel.poison();
                Err(Error::UnexpectedFrame { what: other.name() })
            }
        }
    }
}

/// Handles R1 of a dial the relay says comes from `caller` in `session`.
pub fn respond(
    keys: &HandshakeKeys,
    caller: NodeId,
    session: SessionId,
    limits: Limits,
    message: &[u8],
    now: Instant,
    out: &mut Vec<u8>,
) -> Result<Resumed, Error> {
    if message.len() > MAX_R1_LEN {
        return Err(Error::TooLarge {
            what: "resumed open",
            len: message.len(),
            max: MAX_R1_LEN,
        });
    }
    if message.len() < MIN_R1_LEN {
        return Err(Error::Malformed {
            what: "resumed open (too short)",
        });
    }
    let (header, body) = message.split_at(R1_HEADER_LEN);
    let mut id = [0u8; TICKET_ID_LEN];
    id.copy_from_slice(&header[..TICKET_ID_LEN]);
    let mut counter = [0u8; 8];
    counter.copy_from_slice(&header[TICKET_ID_LEN..]);
    let counter = u64::from_be_bytes(counter);
    let sessions = keys.sessions();
    let (ticket_caller, secret) = match sessions.lookup(&id, now) {
        Lookup::Found { caller, secret } => (caller, secret),
        Lookup::Unknown => {
            write_prefixed(out, 1, |buf| {
                buf[0] = REFUSED;
                Ok(1)
            })?;
            return Ok(Resumed::Refused);
        }
    };
    let prologue = prologue(&ticket_caller, &keys.node_id(), session, &id, counter);
    let mut hs = noise::resume_builder()
        .prologue(&prologue)?
        .psk(0, &secret)?
        .build_responder()?;
    let mut plain = vec![0u8; body.len()];
    let n = hs.read_message(body, &mut plain)?;
    // Authenticated: only the holder of the secret made R1 for this session and counter.
    if ticket_caller != caller {
        return Err(Error::CallerMismatch {
            relay_said: caller,
            proven: ticket_caller,
        });
    }
    if !sessions.mark_used(&id, counter) {
        return Err(Error::Replayed);
    }
    let (service, blob) = decode_service_blob(&plain[..n], "resumed open payload")?;
    write_prefixed(out, R2_LEN, |buf| {
        hs.write_message(&[], buf).map_err(Error::from)
    })?;
    let hash = handshake_hash(&hs);
    let transport = hs.into_transport_mode()?;
    let channel = Channel::new(transport, ticket_caller, service, hash, limits);
    Ok(Resumed::Confirming(Box::new(AwaitingConfirm {
        channel,
        blob,
        deadline: now + limits.handshake_timeout,
    })))
}

#[cfg(test)]
mod tests;
