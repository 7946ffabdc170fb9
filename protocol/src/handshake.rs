//! The end-to-end handshake: `Noise_XX_25519_AESGCM_SHA256` bound to Ed25519 identities.
//!
//! ```text
//! initiator (caller)                                   responder (callee)
//!   msg1  -> e                                    (exactly 32 bytes, no payload)
//!   msg2  <- e, ee, s, es   + proof(responder)    (exactly 192 bytes)
//!            initiator checks the proof, then that the proven NodeId is the one it dialed
//!   msg3  -> s, se          + proof(initiator) + service + blob
//!            responder checks the proof; the application decides (accept or deny)
//!   frame <- Accept | Deny(reason)                (first transport frame)
//! ```
//!
//! The prologue binds the protocol version, both NodeIds and the relay's session id, so a
//! relay that re-routes, splices or relabels a handshake makes it fail. The service name and
//! blob travel only in message 3, encrypted to the already authenticated responder.
//!
//! Driving contract (sans-IO): every `handle_*` method takes one message as yielded by a
//! [`crate::Deframer`] and the current time, appends its answer (if any) length-prefixed to
//! `out`, and consumes the state, so a failed step leaves nothing to misuse. Arm a timer
//! for [`Initiator::deadline`] / [`Responder::deadline`]; a message handled after it fails
//! with [`Error::Timeout`].

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use zeroize::Zeroizing;

use crate::channel::Channel;
use crate::domain;
use crate::error::Error;
use crate::frame::write_prefixed;
use crate::identity::Identity;
use crate::limits::{
    HANDSHAKE_MSG1_LEN, HANDSHAKE_MSG2_LEN, IDENTITY_PROOF_LEN, Limits, MAX_FIRST_BYTES,
    MAX_HANDSHAKE_MSG2_LEN, MAX_HANDSHAKE_MSG3_LEN, MAX_HELLO_BLOB, MAX_REPLACED_LIST,
    PROTOCOL_VERSION, TAG_LEN,
};
use crate::node_id::NodeId;
use crate::noise;
use crate::proofs::{ProofCache, check_proof};
use crate::resume::tickets::Burn;
use crate::resume::tickets::{PendingTicket, SessionCache};
use crate::transport::Transport;
use crate::wire::{DenyReason, FrameType, IdentityProof, Msg3Payload, Replaced, ServiceName};
pub use request::Request;

mod request;

/// Label that starts every prologue.
const PROLOGUE_LABEL: &[u8] = b"nullport/e2e";

/// The relay's identifier for one dial, bound into the prologue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The prologue: `"nullport/e2e" || version || initiator || responder || session (u64 BE)`.
pub fn prologue(initiator: &NodeId, responder: &NodeId, session: SessionId) -> Vec<u8> {
    let mut p = Vec::with_capacity(PROLOGUE_LABEL.len() + 1 + 32 + 32 + 8);
    p.extend_from_slice(PROLOGUE_LABEL);
    p.push(PROTOCOL_VERSION);
    p.extend_from_slice(initiator.as_bytes());
    p.extend_from_slice(responder.as_bytes());
    p.extend_from_slice(&session.0.to_be_bytes());
    p
}

/// A node's keys for handshakes: its identity, a per-process X25519 static key (never
/// stored) and the signature that binds the two. Make one per process and share it.
pub struct HandshakeKeys {
    node_id: NodeId,
    pub(crate) static_private: Zeroizing<Vec<u8>>,
    pub(crate) proof: IdentityProof,
    verified: Arc<ProofCache>,
    sessions: Arc<SessionCache>,
}

impl fmt::Debug for HandshakeKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HandshakeKeys({}, secret: ..)", self.node_id)
    }
}

impl HandshakeKeys {
    /// Generates a fresh X25519 static key and binds it to `identity`.
    pub fn new(identity: &Identity) -> Result<Self, Error> {
        let keypair = noise::builder()
            .generate_keypair()
            .map_err(|_| Error::Random)?;
        Ok(Self::bind(identity, keypair.private, &keypair.public))
    }

    /// Binds a given X25519 static key (tests and known-answer vectors).
    pub fn from_static(identity: &Identity, private: [u8; 32]) -> Self {
        let public = curve25519_dalek::MontgomeryPoint::mul_base_clamped(private).to_bytes();
        Self::bind(identity, private.to_vec(), &public)
    }

    fn bind(identity: &Identity, private: Vec<u8>, public: &[u8]) -> Self {
        let proof = IdentityProof {
            node_id: identity.node_id(),
            signature: identity.sign(domain::NOISE_STATIC_V1, public),
        };
        Self {
            node_id: identity.node_id(),
            static_private: Zeroizing::new(private),
            proof,
            verified: Arc::default(),
            sessions: Arc::default(),
        }
    }

    /// The identity these keys belong to.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The shared handle of [`HandshakeKeys::sessions`].
    pub(crate) fn sessions_handle(&self) -> Arc<SessionCache> {
        self.sessions.clone()
    }

    /// The resumption secrets this process holds ([`crate::resume`]): forget a peer's when
    /// its key is revoked or rotated away.
    pub fn sessions(&self) -> &SessionCache {
        &self.sessions
    }

    #[cfg(test)]
    pub(crate) fn verified_proofs(&self) -> usize {
        self.verified.len()
    }

    #[cfg(test)]
    pub(crate) fn proof_for_tests(&self) -> (NodeId, [u8; 64]) {
        (self.proof.node_id, self.proof.signature)
    }
}

fn check_deadline(now: Instant, deadline: Instant) -> Result<(), Error> {
    if now > deadline {
        Err(Error::Timeout)
    } else {
        Ok(())
    }
}

pub(crate) fn handshake_hash(hs: &snow::HandshakeState) -> [u8; 32] {
    let mut h = [0u8; 32];
    let src = hs.get_handshake_hash();
    let n = src.len().min(32);
    h[..n].copy_from_slice(&src[..n]);
    h
}

/// What the caller asks for when it opens a channel.
#[derive(Clone, PartialEq, Eq)]
pub struct DialRequest {
    /// The NodeId the caller means to reach; any other responder is refused.
    pub expected: NodeId,
    /// The relay's session id for this dial.
    pub session: SessionId,
    /// The service to open.
    pub service: ServiceName,
    /// Opaque bytes for the responder's decision (capability tokens), at most 16 KiB.
    pub blob: Vec<u8>,
}

impl fmt::Debug for DialRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DialRequest")
            .field("expected", &self.expected)
            .field("session", &self.session)
            .field("service", &self.service)
            .field("blob_len", &self.blob.len())
            .finish()
    }
}

/// The caller's side before message 2.
pub struct Initiator {
    hs: snow::HandshakeState,
    request: DialRequest,
    /// Resumed opens of the same dial given up before this one (named in message 3).
    replaces: Vec<Replaced>,
    proof: IdentityProof,
    verified: Arc<ProofCache>,
    sessions: Arc<SessionCache>,
    deadline: Instant,
    limits: Limits,
}

impl Initiator {
    /// Starts a handshake and appends message 1 to `out`.
    pub fn start(
        keys: &HandshakeKeys,
        request: DialRequest,
        limits: Limits,
        now: Instant,
        out: &mut Vec<u8>,
    ) -> Result<Self, Error> {
        Self::start_replacing(keys, request, Vec::new(), limits, now, out)
    }

    /// Starts a handshake whose message 3 names resumed opens of the same dial that were
    /// given up ([`crate::resume::Early::replaces`]).
    pub(crate) fn start_replacing(
        keys: &HandshakeKeys,
        request: DialRequest,
        replaces: Vec<Replaced>,
        limits: Limits,
        now: Instant,
        out: &mut Vec<u8>,
    ) -> Result<Self, Error> {
        if request.expected == keys.node_id {
            return Err(Error::SelfDial);
        }
        if request.blob.len() > MAX_HELLO_BLOB {
            return Err(Error::TooLarge {
                what: "handshake blob",
                len: request.blob.len(),
                max: MAX_HELLO_BLOB,
            });
        }
        let prologue = prologue(&keys.node_id, &request.expected, request.session);
        let mut hs = noise::builder()
            .local_private_key(&keys.static_private)?
            .prologue(&prologue)?
            .build_initiator()?;
        write_prefixed(out, HANDSHAKE_MSG1_LEN + TAG_LEN, |buf| {
            hs.write_message(&[], buf).map_err(Error::from)
        })?;
        Ok(Self {
            hs,
            request,
            replaces,
            proof: keys.proof.clone(),
            verified: keys.verified.clone(),
            sessions: keys.sessions.clone(),
            deadline: now + limits.handshake_timeout,
            limits,
        })
    }

    /// When this handshake times out.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Handles message 2: authenticates the responder, checks it is the NodeId dialed (before
    /// anything about the caller is sent), then appends message 3 to `out`.
    pub fn handle_response(
        mut self,
        message: &[u8],
        now: Instant,
        out: &mut Vec<u8>,
    ) -> Result<AwaitingVerdict, Error> {
        check_deadline(now, self.deadline)?;
        if message.len() > MAX_HANDSHAKE_MSG2_LEN {
            return Err(Error::TooLarge {
                what: "handshake message 2",
                len: message.len(),
                max: MAX_HANDSHAKE_MSG2_LEN,
            });
        }
        let mut payload = [0u8; MAX_HANDSHAKE_MSG2_LEN];
        let n = self.hs.read_message(message, &mut payload)?;
        let proof = IdentityProof::decode(&payload[..n])?;
        let got = check_proof(&proof, &self.hs, &self.verified)?;
        if got != self.request.expected {
            return Err(Error::UnexpectedPeer {
                expected: self.request.expected,
                got,
            });
        }
        let body = Msg3Payload {
            proof: self.proof,
            service: self.request.service.clone(),
            blob: self.request.blob,
            replaces: self.replaces,
        };
        let mut plain =
            Vec::with_capacity(MAX_REPLACED_LIST + IDENTITY_PROOF_LEN + 67 + body.blob.len());
        body.encode(&mut plain);
        let hs = &mut self.hs;
        write_prefixed(out, 32 + TAG_LEN + plain.len() + TAG_LEN, |buf| {
            hs.write_message(&plain, buf).map_err(Error::from)
        })?;
        let ticket = PendingTicket::derive(&mut self.hs, &self.sessions, got, self.limits, now);
        let hash = handshake_hash(&self.hs);
        let transport = self.hs.into_transport_mode()?;
        Ok(AwaitingVerdict {
            channel: Channel::new(
                Transport::Noise(transport),
                got,
                self.request.service,
                hash,
                self.limits,
            ),
            deadline: self.deadline,
            ticket,
            first_sealed: false,
        })
    }
}

/// The caller's side after message 3, waiting for the responder's accept or deny.
pub struct AwaitingVerdict {
    channel: Channel,
    deadline: Instant,
    /// The resumption secret of this full handshake, kept once the callee accepts.
    ticket: Option<PendingTicket>,
    /// Whether the first bytes went out ([`AwaitingVerdict::seal_first`]).
    first_sealed: bool,
}

impl AwaitingVerdict {
    /// A resumed open's, after R2 (`first_sealed`: R1 carried the first bytes).
    pub(crate) fn new(channel: Channel, deadline: Instant, first_sealed: bool) -> Self {
        Self {
            channel,
            deadline,
            ticket: None,
            first_sealed,
        }
    }

    /// Whether the dial's first bytes may still be sealed ([`AwaitingVerdict::seal_first`]):
    /// false once they went out, in R1 of a resumed open or by an earlier call.
    pub fn wants_first(&self) -> bool {
        !self.first_sealed
    }

    /// Seals the caller's first application bytes (at most [`MAX_FIRST_BYTES`], once) as
    /// one data frame (`len || ciphertext`) appended to `out`, to go out in the same write as
    /// the handshake's last message (message 3; after R2 of a resumed open whose R1 did not
    /// carry them): one round trip sooner than writing them after the verdict.
    ///
    /// Both sides are proven by then: the caller checked the callee's proof (or resumption
    /// secret and fresh key), and the frame follows the message that proves the caller.
    /// The callee reads it only after it accepted, as the channel's first data; if it
    /// denies, the frame is dropped unread and the caller gets the denial as usual. Empty
    /// `data` seals nothing.
    pub fn seal_first(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        if data.len() > MAX_FIRST_BYTES {
            return Err(Error::TooLarge {
                what: "first bytes of a dial",
                len: data.len(),
                max: MAX_FIRST_BYTES,
            });
        }
        if self.first_sealed {
            return Err(Error::Closed);
        }
        if data.is_empty() {
            return Ok(());
        }
        self.first_sealed = true;
        self.channel.seal(data, out)
    }

    /// When this handshake times out.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The responder's proven identity.
    pub fn peer(&self) -> NodeId {
        self.channel.peer()
    }

    /// Handles the responder's first transport frame: the channel on accept,
    /// [`Error::Denied`] on deny.
    pub fn handle_verdict(mut self, message: &[u8], now: Instant) -> Result<Channel, Error> {
        check_deadline(now, self.deadline)?;
        let (frame_type, len) = self.channel.read_frame(message)?;
        match (frame_type, len) {
            (FrameType::Accept, 0) => {
                if let Some(ticket) = self.ticket.take() {
                    ticket.keep();
                }
                Ok(self.channel)
            }
            (FrameType::Deny, 1) => Err(Error::Denied {
                reason: DenyReason::from_code(self.channel.last_body(1)[0]),
            }),
            (FrameType::Accept | FrameType::Deny, _) => Err(Error::Malformed {
                what: "verdict frame",
            }),
            (other, _) => {
                self.channel.poison();
                Err(Error::UnexpectedFrame { what: other.name() })
            }
        }
    }
}

/// The callee's side before message 1.
pub struct Responder {
    hs: snow::HandshakeState,
    proof: IdentityProof,
    verified: Arc<ProofCache>,
    sessions: Arc<SessionCache>,
    local: NodeId,
    caller: NodeId,
    deadline: Instant,
    limits: Limits,
}

impl Responder {
    /// Prepares to answer a dial that the relay says comes from `caller` in `session`.
    pub fn new(
        keys: &HandshakeKeys,
        caller: NodeId,
        session: SessionId,
        limits: Limits,
        now: Instant,
    ) -> Result<Self, Error> {
        if caller == keys.node_id {
            return Err(Error::SelfDial);
        }
        let prologue = prologue(&caller, &keys.node_id, session);
        let hs = noise::builder()
            .local_private_key(&keys.static_private)?
            .prologue(&prologue)?
            .build_responder()?;
        Ok(Self {
            hs,
            proof: keys.proof.clone(),
            verified: keys.verified.clone(),
            sessions: keys.sessions.clone(),
            local: keys.node_id,
            caller,
            deadline: now + limits.handshake_timeout,
            limits,
        })
    }

    /// When this handshake times out.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Handles message 1 and appends message 2 (with this node's identity proof) to `out`.
    pub fn handle_hello(
        mut self,
        message: &[u8],
        now: Instant,
        out: &mut Vec<u8>,
    ) -> Result<AwaitingFinish, Error> {
        check_deadline(now, self.deadline)?;
        if message.len() != HANDSHAKE_MSG1_LEN {
            return Err(Error::Malformed {
                what: "handshake message 1 (wrong length)",
            });
        }
        let mut payload = [0u8; HANDSHAKE_MSG1_LEN];
        self.hs.read_message(message, &mut payload)?;
        let mut plain = Vec::with_capacity(IDENTITY_PROOF_LEN);
        self.proof.encode(&mut plain);
        let hs = &mut self.hs;
        write_prefixed(out, HANDSHAKE_MSG2_LEN, |buf| {
            hs.write_message(&plain, buf).map_err(Error::from)
        })?;
        Ok(AwaitingFinish {
            hs: self.hs,
            verified: self.verified,
            sessions: self.sessions,
            local: self.local,
            caller: self.caller,
            deadline: self.deadline,
            limits: self.limits,
            hello_at: now,
        })
    }
}

/// The callee's side after message 2.
pub struct AwaitingFinish {
    hs: snow::HandshakeState,
    verified: Arc<ProofCache>,
    sessions: Arc<SessionCache>,
    local: NodeId,
    caller: NodeId,
    deadline: Instant,
    limits: Limits,
    /// When message 2 went out: the birth of this side's resumption secret. The caller's
    /// is later (it needs message 2), whatever a relay does, so the callee never counts
    /// the secret younger than the caller does; a relay that holds message 3 back cannot
    /// make later resumed opens look fresher.
    hello_at: Instant,
}

impl AwaitingFinish {
    /// When this handshake times out.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Handles message 3: authenticates the caller and yields its request for a decision.
    pub fn handle_finish(mut self, message: &[u8], now: Instant) -> Result<Request, Error> {
        check_deadline(now, self.deadline)?;
        if message.len() > MAX_HANDSHAKE_MSG3_LEN {
            return Err(Error::TooLarge {
                what: "handshake message 3",
                len: message.len(),
                max: MAX_HANDSHAKE_MSG3_LEN,
            });
        }
        let mut payload = vec![0u8; message.len()];
        let n = self.hs.read_message(message, &mut payload)?;
        let body = Msg3Payload::decode(&payload[..n])?;
        let proven = check_proof(&body.proof, &self.hs, &self.verified)?;
        if proven == self.local {
            return Err(Error::SelfDial);
        }
        if proven != self.caller {
            return Err(Error::CallerMismatch {
                relay_said: self.caller,
                proven,
            });
        }
        // The resumed opens this dial gave up can never take effect now; if one already
        // did, this open is its duplicate.
        let mut duplicate = false;
        for given_up in &body.replaces {
            let burn = self
                .sessions
                .burn(&proven, &given_up.id, given_up.counter, now);
            duplicate |= burn == Burn::AlreadyUsed;
        }
        let ticket = PendingTicket::derive(
            &mut self.hs,
            &self.sessions,
            proven,
            self.limits,
            self.hello_at,
        );
        let hash = handshake_hash(&self.hs);
        let transport = self.hs.into_transport_mode()?;
        Ok(Request::new(
            Channel::new(
                Transport::Noise(transport),
                proven,
                body.service,
                hash,
                self.limits,
            ),
            body.blob,
            ticket,
        )
        .duplicate_if(duplicate))
    }
}
