//! Resumed opens: a channel without identity proofs between two nodes that completed a full
//! handshake a few minutes ago, in one round trip.
//!
//! ```text
//! initiator (caller)                                    responder (callee)
//!   R1 -> ticket id (16) || counter (u64 BE) || kind || sealed: age, given-up opens,
//!         service, blob, first bytes
//!         responder: finds the ticket (none: answers REFUSED, one byte, and the caller
//!         runs the full handshake on the same stream), authenticates R1, checks that R1 is
//!         fresh (the caller's age of the secret against its own), that the counter was
//!         never used, and burns the given-up opens' counters; the application decides
//!   K2 <- an empty AEAD message (keyed), or R2 <- e, ee (with a DH), at once
//!   frame <- Accept | Deny(reason)                      (first transport frame)
//! ```
//!
//! The secret is derived by both sides from the split keys of a completed full handshake
//! (HKDF-SHA256, salted with its handshake hash) that the callee accepted, and never
//! travels; its ticket id is derived the same way and is only a name. Two kinds of open:
//! - **keyed** ([`KIND_KEYED`], the default): every key of the open and its channel comes
//!   from the secret and the prologue by HKDF (`keyed.rs`); no public-key operation.
//!   Forward secrecy is bounded by the secret's lifetime.
//! - **with a DH** ([`KIND_DH`], [`Limits::resume_dh`]): `Noise_NNpsk0_25519_AESGCM_SHA256`
//!   with the secret as the PSK; fresh ephemeral keys on both sides (`ee`) make every
//!   channel's keys after R1 forward secret on their own. R1 itself is sealed under the
//!   secret and the caller's ephemeral key only, as TLS 1.3 early data is.
//!
//! The prologue binds the version, the kind, both NodeIds, the relay session, the ticket id
//! and the counter, so a resumed open cannot be moved to another kind, session, pair or
//! counter.
//!
//! R1 is acted on at once, so what a relay could do with a withheld R1 is bounded by three
//! rules: the callee's replay window makes each counter usable once; R1 carries the caller's
//! age of the secret, and a callee whose own age (dated from its message 2 of the full
//! handshake, before the caller's secret can exist) is more than [`max_early_delay`] beyond
//! it refuses R1 as stale (a relay can hold an R1 back no longer than that); and a caller
//! that gives up a resumed open because a relay said it failed names it in the dial's next
//! open ([`Replaced`]), so the callee burns its counter or, if it accepted it or is still
//! deciding it, denies the later open as a duplicate: a dial takes effect at most once.
//! `docs/protocol.md` has the reasoning.

mod keyed;
mod record;
pub(crate) mod retired;
mod sealer;
pub(crate) mod tickets;

use std::time::{Duration, Instant};

pub use crate::limits::DEFAULT_RESUME_LIFETIME;
pub use keyed::K2_LEN;
use sealer::Sealer;
use tickets::{Burn, Lookup, UnacceptedOpen};
pub use tickets::{MAX_RESUMPTIONS, REPLAY_WINDOW, SessionCache, TICKET_ID_LEN, TicketId};

use crate::channel::Channel;
use crate::error::Error;
use crate::frame::write_prefixed;
use crate::handshake::{
    AwaitingVerdict, DialRequest, HandshakeKeys, Initiator, Request, SessionId,
};
use crate::limits::{
    HANDSHAKE_MSG1_LEN, Limits, MAX_HELLO_BLOB, MAX_NOISE_MESSAGE, MAX_REPLACED, MAX_SERVICE_NAME,
    PROTOCOL_VERSION, TAG_LEN,
};
use crate::node_id::NodeId;
pub use crate::wire::Replaced;
use crate::wire::{decode_service_blob_prefix, encode_service_blob};

/// Label that starts the prologue of a resumed open.
const PROLOGUE_LABEL: &[u8] = b"nullport/e2e-resume";
/// The responder's whole answer when it holds no such ticket, or R1 is stale: run the full
/// handshake.
pub const REFUSED: u8 = 0x01;
/// The responder's whole answer to a keyed R1 when it wants a DH in every channel
/// ([`Limits::resume_dh`]): as [`REFUSED`], and the caller's resumed opens to it carry a DH
/// from now on.
pub const REFUSED_WANTS_DH: u8 = 0x02;
/// Bytes in front of R1's sealed part: ticket id, counter and kind ([`KIND_DH`] or
/// [`KIND_KEYED`]).
pub const R1_HEADER_LEN: usize = TICKET_ID_LEN + 8 + 1;
/// Kind of a resumed open with a fresh DH (`NNpsk0`): R1's sealed part is a Noise message.
pub const KIND_DH: u8 = 1;
/// Kind of a keyed resumed open (no DH; keys from the secret, [`K2_LEN`]-byte answer).
pub const KIND_KEYED: u8 = 2;
/// Bytes of R1's payload in front of the request: the caller's age of the secret (u32 ms),
/// its early delay (u32 ms) and the count of given-up opens.
const R1_PAYLOAD_HEADER: usize = 4 + 4 + 1;
/// Smallest R1 (keyed): header, age and delay, no given-up opens, the shortest request
/// (1-byte service, empty blob), no first bytes, tag. One with a DH has 32 bytes more (the
/// ephemeral key).
pub const MIN_R1_LEN: usize = R1_HEADER_LEN + R1_PAYLOAD_HEADER + (1 + 1 + 2) + TAG_LEN;
/// Largest R1: one whole length-prefixed message (the first bytes take what the request
/// leaves; more first bytes than fit go after R2 instead).
pub const MAX_R1_LEN: usize = MAX_NOISE_MESSAGE;
/// Size of R2: the responder's ephemeral key and an empty encrypted payload.
pub const R2_LEN: usize = 32 + TAG_LEN;

/// How much older than the caller's age of the secret the callee's own may be for R1 to
/// count as fresh: half the handshake deadline (5 s by default). A relay can deliver an R1
/// at most this late (plus one message's transit); a caller still waits for its answer then.
pub fn max_early_delay(limits: &Limits) -> Duration {
    limits.handshake_timeout / 2
}

/// The prologue: `label || version || kind || initiator || responder || session || ticket ||
/// counter`.
fn prologue(
    kind: u8,
    initiator: &NodeId,
    responder: &NodeId,
    session: SessionId,
    id: &TicketId,
    counter: u64,
) -> Vec<u8> {
    let mut p = Vec::with_capacity(PROLOGUE_LABEL.len() + 2 + 64 + 8 + TICKET_ID_LEN + 8);
    p.extend_from_slice(PROLOGUE_LABEL);
    p.push(PROTOCOL_VERSION);
    p.push(kind);
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
    kind: u8,
    initiator: &NodeId,
    responder: &NodeId,
    session: SessionId,
    id: &TicketId,
    counter: u64,
) -> Vec<u8> {
    prologue(kind, initiator, responder, session, id, counter)
}

/// Seals `payload` as a keyed R1's sealed part under `secret` (fuzz targets build genuine
/// keyed R1 messages with it).
#[cfg(feature = "fuzzing")]
pub fn seal_keyed_for_fuzzing(
    secret: &[u8; 32],
    prologue: &[u8],
    payload: &[u8],
    out: &mut [u8],
) -> Result<usize, Error> {
    keyed::Keys::derive(secret, prologue)?.seal_open(payload, out)
}

/// True when a dial's first handshake message is a resumed open (R1) rather than message 1
/// of the full handshake (exactly 32 bytes).
pub fn is_resumption(first_message: &[u8]) -> bool {
    first_message.len() != HANDSHAKE_MSG1_LEN
}

/// What a caller's open carries besides its request.
#[derive(Debug, Default, Clone, Copy)]
pub struct Early<'a> {
    /// The dial's first application bytes, for R1 if the open is resumed and they fit
    /// ([`Opening::carried_first`]); otherwise the caller seals them after the answer.
    pub first: &'a [u8],
    /// Resumed opens of this dial that a relay said failed (at most [`MAX_REPLACED`]).
    pub replaces: &'a [Replaced],
}

/// A channel being opened by the caller: resumed when this process holds a live ticket for
/// the callee, full otherwise.
#[allow(clippy::large_enum_variant)] // one per dial, moved a few times
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
    /// The responder held no such ticket (or found R1 stale): the full handshake started on
    /// the same stream (its message 1 appended to `out`), naming the refused R1 among the
    /// opens it replaces; hand it the next answer. First bytes that R1 carried were not
    /// read: seal them after message 2 as for any full handshake.
    Retry(Box<Opening>),
}

impl Opening {
    /// Starts the cheapest open allowed and appends its first message to `out`. An open
    /// that replaces given-up opens of another ticket than the live one, or
    /// `MAX_REPLACED - 1` or more, runs the full handshake.
    pub fn start(
        keys: &HandshakeKeys,
        request: DialRequest,
        early: Early<'_>,
        limits: Limits,
        now: Instant,
        out: &mut Vec<u8>,
    ) -> Result<Self, Error> {
        if early.replaces.len() > MAX_REPLACED {
            return Err(Error::TooLarge {
                what: "given-up opens of one dial",
                len: early.replaces.len(),
                max: MAX_REPLACED,
            });
        }
        let full = |request, out: &mut Vec<u8>| {
            Initiator::start_replacing(keys, request, early.replaces.to_vec(), limits, now, out)
                .map(Self::Full)
        };
        if limits.resume_lifetime.is_zero() || request.expected == keys.node_id() {
            return full(request, out);
        }
        // Room to name this open too if it is refused (REFUSED's full handshake names it).
        if early.replaces.len() + 1 >= MAX_REPLACED {
            return full(request, out);
        }
        match keys.sessions().lease(&request.expected, now) {
            Some(lease) if early.replaces.iter().all(|r| r.id == lease.id) => {
                ResumeInitiator::start(lease, request, early, limits, (keys, now), out)
                    .map(Self::Resumed)
            }
            _ => full(request, out),
        }
    }

    /// True for a resumed open.
    pub fn is_resumed(&self) -> bool {
        matches!(self, Self::Resumed(_))
    }

    /// Whether the first message carried the dial's first bytes (a resumed open they fit
    /// in). They take effect only if the open does; name [`Opening::given_up`] in the
    /// dial's next open if it does not.
    pub fn carried_first(&self) -> bool {
        matches!(self, Self::Resumed(r) if r.carried_first)
    }

    /// The resumed open this is, to name in the dial's next open if this one is given up.
    pub fn given_up(&self) -> Option<Replaced> {
        match self {
            Self::Full(_) => None,
            Self::Resumed(r) => Some(r.this),
        }
    }

    /// When this open times out.
    pub fn deadline(&self) -> Instant {
        match self {
            Self::Full(i) => i.deadline(),
            Self::Resumed(r) => r.deadline,
        }
    }

    /// Handles the responder's first answer (message 2, R2, K2, or REFUSED).
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
    sealer: Sealer,
    request: DialRequest,
    deadline: Instant,
    limits: Limits,
    /// This open's ticket and counter.
    this: Replaced,
    /// The given-up opens R1 named.
    replaces: Vec<Replaced>,
    carried_first: bool,
}

impl ResumeInitiator {
    fn start(
        lease: tickets::Lease,
        request: DialRequest,
        early: Early<'_>,
        limits: Limits,
        (keys, now): (&HandshakeKeys, Instant),
        out: &mut Vec<u8>,
    ) -> Result<Self, Error> {
        if request.blob.len() > MAX_HELLO_BLOB {
            return Err(Error::TooLarge {
                what: "handshake blob",
                len: request.blob.len(),
                max: MAX_HELLO_BLOB,
            });
        }
        let kind = if limits.resume_dh || lease.dh {
            KIND_DH
        } else {
            KIND_KEYED
        };
        let prologue = prologue(
            kind,
            &keys.node_id(),
            &request.expected,
            request.session,
            &lease.id,
            lease.counter,
        );
        let mut sealer = Sealer::new(kind, &lease.secret, &prologue, true)?;
        let age_ms = u32::try_from(lease.age.as_millis()).unwrap_or(u32::MAX);
        let delay_ms = u32::try_from(max_early_delay(&limits).as_millis()).unwrap_or(u32::MAX);
        let mut plain = Vec::with_capacity(
            R1_PAYLOAD_HEADER
                + 8 * early.replaces.len()
                + 3
                + MAX_SERVICE_NAME
                + request.blob.len(),
        );
        plain.extend_from_slice(&age_ms.to_be_bytes());
        plain.extend_from_slice(&delay_ms.to_be_bytes());
        plain.push(early.replaces.len() as u8); // <= MAX_REPLACED, checked by Opening::start
        for r in early.replaces {
            plain.extend_from_slice(&r.counter.to_be_bytes());
        }
        encode_service_blob(&request.service, &request.blob, &mut plain);
        let overhead = sealer.overhead();
        let room = MAX_R1_LEN - R1_HEADER_LEN - overhead - plain.len();
        let carried_first = !early.first.is_empty() && early.first.len() <= room;
        if carried_first {
            plain.extend_from_slice(early.first);
        }
        let r1_start = out.len() + crate::limits::LENGTH_PREFIX;
        write_prefixed(out, R1_HEADER_LEN + overhead + plain.len(), |buf| {
            let (header, body) = buf.split_at_mut(R1_HEADER_LEN);
            header[..TICKET_ID_LEN].copy_from_slice(&lease.id);
            header[TICKET_ID_LEN..TICKET_ID_LEN + 8].copy_from_slice(&lease.counter.to_be_bytes());
            header[TICKET_ID_LEN + 8] = kind;
            let n = sealer.seal_open(&plain, body)?;
            Ok(R1_HEADER_LEN + n)
        })?;
        sealer.note_r1(&out[r1_start..]);
        Ok(Self {
            sealer,
            request,
            deadline: now + limits.handshake_timeout,
            limits,
            this: Replaced {
                id: lease.id,
                counter: lease.counter,
            },
            replaces: early.replaces.to_vec(),
            carried_first,
        })
    }

    fn handle_response(
        self,
        keys: &HandshakeKeys,
        message: &[u8],
        now: Instant,
        out: &mut Vec<u8>,
    ) -> Result<Answered, Error> {
        if now > self.deadline {
            return Err(Error::Timeout);
        }
        if message == [REFUSED_WANTS_DH] {
            let until = now + self.limits.resume_lifetime;
            keys.sessions().wants_dh(&self.request.expected, now, until);
        }
        if message == [REFUSED] || message == [REFUSED_WANTS_DH] {
            // No such ticket at the callee (restarted, expired, evicted, forgotten), R1 too
            // late, or a relay claiming so: either way the full handshake decides, on the
            // same stream, and names this R1 so that it can never take effect as well.
            keys.sessions().forget_outgoing(&self.request.expected);
            let mut replaces = self.replaces;
            if replaces.len() >= MAX_REPLACED {
                return Err(Error::TooLarge {
                    what: "given-up opens of one dial",
                    len: replaces.len() + 1,
                    max: MAX_REPLACED,
                });
            }
            replaces.push(self.this);
            let init =
                Initiator::start_replacing(keys, self.request, replaces, self.limits, now, out)?;
            return Ok(Answered::Retry(Box::new(Opening::Full(init))));
        }
        let (transport, hash) = self.sealer.read_answer(message)?;
        let channel = Channel::new(
            transport,
            self.request.expected,
            self.request.service,
            hash,
            self.limits,
        );
        Ok(Answered::Verdict(AwaitingVerdict::new(
            channel,
            self.deadline,
            self.carried_first,
        )))
    }
}

/// The callee's answer to R1.
#[allow(clippy::large_enum_variant)] // one per open, moved once
pub enum Resumed {
    /// Authenticated and fresh: R2 or K2 was appended to `out` (send it now); the request, with
    /// the first bytes R1 carried, is for the application's decision, unless it
    /// [`Request::is_duplicate`].
    Opened(Request),
    /// No such ticket, or R1 too late: REFUSED was appended to `out`; the caller's message 1
    /// of the full handshake comes next on the same stream.
    Refused,
}

/// R1's payload, parsed: `age_ms (u32 BE) || delay_ms (u32 BE) || n (u8) || n × given-up
/// counter (u64 BE) || service len (u8) || service || blob len (u16 BE) || blob || first
/// bytes`.
pub(crate) struct R1Payload<'a> {
    pub(crate) age: Duration,
    /// The caller's own early delay: half its handshake deadline, so at most half of how
    /// long it waits for the answer.
    pub(crate) delay: Duration,
    pub(crate) replaced: Vec<u64>,
    pub(crate) service: crate::ServiceName,
    pub(crate) blob: Vec<u8>,
    pub(crate) first: &'a [u8],
}

impl<'a> R1Payload<'a> {
    pub(crate) fn decode(bytes: &'a [u8]) -> Result<Self, Error> {
        const WHAT: &str = "resumed open payload";
        let malformed = || Error::Malformed { what: WHAT };
        let (age, rest) = bytes.split_at_checked(4).ok_or_else(malformed)?;
        let age = u32::from_be_bytes(age.try_into().map_err(|_| malformed())?);
        let (delay, rest) = rest.split_at_checked(4).ok_or_else(malformed)?;
        let delay = u32::from_be_bytes(delay.try_into().map_err(|_| malformed())?);
        let (&n, rest) = rest.split_first().ok_or_else(malformed)?;
        let n = usize::from(n);
        if n > MAX_REPLACED {
            return Err(malformed());
        }
        let (list, rest) = rest.split_at_checked(8 * n).ok_or_else(malformed)?;
        let replaced = list
            .chunks_exact(8)
            .map(|c| {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                u64::from_be_bytes(b)
            })
            .collect();
        let (service, blob, first) = decode_service_blob_prefix(rest, WHAT)?;
        Ok(Self {
            age: Duration::from_millis(u64::from(age)),
            delay: Duration::from_millis(u64::from(delay)),
            replaced,
            service,
            blob,
            first,
        })
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
    counter.copy_from_slice(&header[TICKET_ID_LEN..TICKET_ID_LEN + 8]);
    let counter = u64::from_be_bytes(counter);
    let kind = header[TICKET_ID_LEN + 8];
    match kind {
        KIND_KEYED => {}
        KIND_DH if message.len() >= MIN_R1_LEN + 32 => {}
        KIND_DH => {
            return Err(Error::Malformed {
                what: "resumed open (too short)",
            });
        }
        _ => {
            return Err(Error::Malformed {
                what: "resumed open kind",
            });
        }
    }
    let sessions = keys.sessions();
    let answer_only = |out: &mut Vec<u8>, byte: u8| {
        write_prefixed(out, 1, |buf| {
            buf[0] = byte;
            Ok(1)
        })
        .map(|_| Resumed::Refused)
    };
    let refuse = |out: &mut Vec<u8>| answer_only(out, REFUSED);
    if kind == KIND_KEYED && limits.resume_dh {
        // This side wants a fresh DH in every channel: the caller runs the full handshake
        // (and names this R1 there, so it can never take effect), then opens with a DH.
        return answer_only(out, REFUSED_WANTS_DH);
    }
    let (ticket_caller, secret, own_age) = match sessions.lookup(&id, now) {
        Lookup::Found {
            caller,
            secret,
            age,
        } => (caller, secret, age),
        Lookup::Unknown => return refuse(out),
    };
    let prologue = prologue(kind, &ticket_caller, &keys.node_id(), session, &id, counter);
    let mut sealer = Sealer::new(kind, &secret, &prologue, false)?;
    let mut plain = vec![0u8; body.len()];
    let n = sealer.open_open(body, &mut plain)?;
    sealer.note_r1(message);
    // Authenticated: only the holder of the secret made R1 for this session and counter.
    if ticket_caller != caller {
        return Err(Error::CallerMismatch {
            relay_said: caller,
            proven: ticket_caller,
        });
    }
    let payload = R1Payload::decode(&plain[..n])?;
    // The shorter of the two sides' early delays: an R1 is acted on only while its caller
    // still waits for the answer, whatever either side's deadline.
    let delay = max_early_delay(&limits).min(payload.delay);
    if own_age > payload.age + delay {
        // Held back on the way (or this side's clock ran while the caller's slept): not
        // acted on, not burned; the caller, if it still waits, runs the full handshake and
        // names this R1 there.
        return refuse(out);
    }
    if !sessions.mark_used(&id, counter) {
        return Err(Error::Replayed);
    }
    let mut duplicate = false;
    for given_up in payload.replaced {
        duplicate |= sessions.burn(&ticket_caller, &id, given_up, now) == Burn::AlreadyUsed;
    }
    let (transport, hash) = sealer.write_answer(out)?;
    let first = payload.first.to_vec();
    let channel = Channel::new(transport, ticket_caller, payload.service, hash, limits);
    let unaccepted = UnacceptedOpen::new(keys.sessions_handle(), id, counter);
    Ok(Resumed::Opened(
        Request::new(channel, payload.blob, None)
            .with_first(first)
            .duplicate_if(duplicate)
            .unless_accepted(unaccepted),
    ))
}

#[cfg(test)]
mod tests;
