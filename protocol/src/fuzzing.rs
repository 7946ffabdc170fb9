//! Entry points for the fuzz targets (feature `fuzzing`). Not part of the stable API.

use std::time::Instant;

use crate::handshake::prologue;
use crate::limits::TAG_LEN;
use crate::noise;
use crate::wire::{FrameType, Msg3Payload};
use crate::{
    AwaitingVerdict, Channel, DialRequest, Error, HandshakeKeys, Identity, Initiator, Limits,
    NodeId, Responder, ServiceName, SessionId,
};

fn keys(seed: u8) -> HandshakeKeys {
    HandshakeKeys::from_static(&Identity::from_seed([seed; 32]), [seed ^ 0x55; 32])
}

/// Decodes a message 3 payload (the part behind the AEAD).
pub fn decode_msg3_payload(bytes: &[u8]) -> Result<(), Error> {
    Msg3Payload::decode(bytes).map(drop)
}

/// Feeds `data` to a responder as message 1 (first 32 bytes or less) then message 3.
pub fn responder_messages(data: &[u8]) {
    let (a, b) = (keys(1), keys(2));
    let now = Instant::now();
    let Ok(resp) = Responder::new(&b, a.node_id(), SessionId(1), Limits::default(), now) else {
        return;
    };
    let (msg1, msg3) = data.split_at(data.len().min(32));
    let mut out = Vec::new();
    if let Ok(resp) = resp.handle_hello(msg1, now, &mut out) {
        assert!(
            resp.handle_finish(msg3, now).is_err(),
            "forged message 3 accepted"
        );
    }
}

/// Feeds `data` to an initiator as message 2 (first 192 bytes or less) then a verdict.
pub fn initiator_messages(data: &[u8]) {
    let (a, b) = (keys(1), keys(2));
    let now = Instant::now();
    let Ok(service) = ServiceName::new("fuzz") else {
        return;
    };
    let dial = DialRequest {
        expected: b.node_id(),
        session: SessionId(1),
        service,
        blob: Vec::new(),
    };
    let mut out = Vec::new();
    let Ok(init) = Initiator::start(&a, dial, Limits::default(), now, &mut out) else {
        return;
    };
    let (msg2, verdict) = data.split_at(data.len().min(192));
    out.clear();
    if let Ok(awaiting) = init.handle_response(msg2, now, &mut out) {
        assert!(
            awaiting.handle_verdict(verdict, now).is_err(),
            "forged verdict accepted"
        );
    }
}

/// An established channel pair (initiator, responder) with fixed keys.
pub fn channel_pair() -> (Channel, Channel) {
    let (a, b) = (keys(1), keys(2));
    let now = Instant::now();
    let limits = Limits::default();
    let fail = || -> (Channel, Channel) { panic!("fixed-key handshake failed") };
    let Ok(service) = ServiceName::new("fuzz") else {
        return fail();
    };
    let dial = DialRequest {
        expected: b.node_id(),
        session: SessionId(1),
        service,
        blob: Vec::new(),
    };
    let mut m = Vec::new();
    let Ok(init) = Initiator::start(&a, dial, limits, now, &mut m) else {
        return fail();
    };
    let mut r = Vec::new();
    let Ok(resp) = Responder::new(&b, a.node_id(), SessionId(1), limits, now)
        .and_then(|resp| resp.handle_hello(&m[2..], now, &mut r))
    else {
        return fail();
    };
    m.clear();
    let Ok(verdict) = init.handle_response(&r[2..], now, &mut m) else {
        return fail();
    };
    r.clear();
    let Ok(cb) = resp
        .handle_finish(&m[2..], now)
        .and_then(|req| req.accept(&mut r))
    else {
        return fail();
    };
    match verdict.handle_verdict(&r[2..], now) {
        Ok(ca) => (ca, cb),
        Err(_) => fail(),
    }
}

// ---------------------------------------------------------------------------------------
// Structure-aware entry points: the fuzzer's bytes become the *plaintext* that the harness
// encrypts with its own side of a real Noise session, so decryption succeeds and the parser
// behind the AEAD is what gets fuzzed (an authenticated but malicious peer can send exactly
// these bytes). The targets above keep the "a forgery is never accepted" properties.

/// The harness's peer for handshakes: the same identity and static key as `keys(2)`, as a raw
/// snow state so that it can put any plaintext into a message.
fn raw_responder(
    initiator: NodeId,
    responder: &HandshakeKeys,
    session: SessionId,
) -> Option<snow::HandshakeState> {
    let prologue = prologue(&initiator, &responder.node_id(), session);
    noise::builder()
        .local_private_key(&responder.static_private)
        .ok()?
        .prologue(&prologue)
        .ok()?
        .build_responder()
        .ok()
}

fn raw_initiator(
    initiator: &HandshakeKeys,
    responder: NodeId,
    session: SessionId,
) -> Option<snow::HandshakeState> {
    let prologue = prologue(&initiator.node_id(), &responder, session);
    noise::builder()
        .local_private_key(&initiator.static_private)
        .ok()?
        .prologue(&prologue)
        .ok()?
        .build_initiator()
        .ok()
}

fn dial(expected: NodeId) -> Option<DialRequest> {
    Some(DialRequest {
        expected,
        session: SessionId(1),
        service: ServiceName::new("fuzz").ok()?,
        blob: Vec::new(),
    })
}

/// Encrypts `plain` as the next handshake message of `hs` (length-prefixed for the `Deframer`
/// convention the state machines expect: the prefix is stripped here).
fn write_raw(hs: &mut snow::HandshakeState, plain: &[u8]) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; plain.len() + 64 + 2 * TAG_LEN];
    let n = hs.write_message(plain, &mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// The genuine identity proof of `keys`.
fn proof_bytes(keys: &HandshakeKeys) -> Vec<u8> {
    let mut out = Vec::new();
    keys.proof.encode(&mut out);
    out
}

/// Message 2's payload behind the AEAD: a real responder answers the initiator's message 1
/// with `payload` as the plaintext of message 2. Property: the initiator goes on to message 3
/// only when the payload is exactly the harness responder's genuine identity proof. Returns
/// whether it did.
pub fn initiator_msg2_payload(payload: &[u8]) -> bool {
    let (a, b) = (keys(1), keys(2));
    let now = Instant::now();
    let Some(request) = dial(b.node_id()) else {
        return false;
    };
    let mut msg1 = Vec::new();
    let Ok(init) = Initiator::start(&a, request, Limits::default(), now, &mut msg1) else {
        return false;
    };
    let Some(mut hs) = raw_responder(a.node_id(), &b, SessionId(1)) else {
        return false;
    };
    let mut scratch = [0u8; 64];
    if hs.read_message(&msg1[2..], &mut scratch).is_err() {
        panic!("harness could not read a genuine message 1");
    }
    let Some(msg2) = write_raw(&mut hs, payload) else {
        return false;
    };
    let mut out = Vec::new();
    let accepted = init.handle_response(&msg2, now, &mut out).is_ok();
    assert_eq!(
        accepted,
        payload == proof_bytes(&b),
        "message 2 payload {payload:02x?}: accepted = {accepted}"
    );
    accepted
}

/// A completed handshake up to the verdict: the initiator waiting for it and the harness's
/// raw responder transport, ready to encrypt any first frame.
fn awaiting_verdict() -> Option<(AwaitingVerdict, snow::TransportState)> {
    let (a, b) = (keys(1), keys(2));
    let now = Instant::now();
    let mut msg1 = Vec::new();
    let init = Initiator::start(&a, dial(b.node_id())?, Limits::default(), now, &mut msg1).ok()?;
    let mut hs = raw_responder(a.node_id(), &b, SessionId(1))?;
    let mut scratch = vec![0u8; 1024];
    hs.read_message(&msg1[2..], &mut scratch).ok()?;
    let msg2 = write_raw(&mut hs, &proof_bytes(&b))?;
    let mut msg3 = Vec::new();
    let awaiting = init.handle_response(&msg2, now, &mut msg3).ok()?;
    hs.read_message(&msg3[2..], &mut scratch).ok()?;
    Some((awaiting, hs.into_transport_mode().ok()?))
}

/// The verdict frame behind the AEAD: the responder's transport encrypts `plain` as the
/// first frame. Property: a channel only for exactly `[Accept]`, a denial only for exactly
/// `[Deny, code]` with that code, an error for anything else. Returns the outcome.
pub fn initiator_verdict(plain: &[u8]) -> Result<(), Error> {
    let Some((awaiting, mut transport)) = awaiting_verdict() else {
        panic!("harness handshake failed");
    };
    let mut frame = vec![0u8; plain.len() + TAG_LEN];
    let n = transport.write_message(plain, &mut frame)?;
    let outcome = awaiting
        .handle_verdict(&frame[..n], Instant::now())
        .map(drop);
    match &outcome {
        Ok(()) => assert_eq!(plain, [FrameType::Accept as u8], "accepted {plain:02x?}"),
        Err(Error::Denied { reason }) => {
            assert_eq!(
                plain,
                [FrameType::Deny as u8, reason.code()],
                "denied {plain:02x?}"
            )
        }
        Err(_) => assert!(
            plain != [FrameType::Accept as u8]
                && !(plain.len() == 2 && plain[0] == FrameType::Deny as u8),
            "a well-formed verdict {plain:02x?} was refused"
        ),
    }
    outcome
}

/// Message 3's payload behind the AEAD: a real initiator (the harness) completes messages 1
/// and 2 and sends `plain` as message 3's plaintext; with `genuine_proof`, its genuine
/// identity proof is put first so that the fuzzer reaches the service and blob parsing.
/// Property: the responder yields a request only when the payload starts with the genuine
/// proof, and then its service and blob are exactly what the payload encodes. Returns the
/// service of the request it yielded.
pub fn responder_msg3_payload(plain: &[u8], genuine_proof: bool) -> Option<String> {
    let (a, b) = (keys(1), keys(2));
    let now = Instant::now();
    let mut payload = if genuine_proof {
        proof_bytes(&a)
    } else {
        Vec::new()
    };
    payload.extend_from_slice(plain);
    let resp = Responder::new(&b, a.node_id(), SessionId(1), Limits::default(), now).ok()?;
    let mut hs = raw_initiator(&a, b.node_id(), SessionId(1))?;
    let msg1 = write_raw(&mut hs, &[])?;
    let mut msg2 = Vec::new();
    let Ok(awaiting) = resp.handle_hello(&msg1, now, &mut msg2) else {
        panic!("responder refused a genuine message 1");
    };
    let mut scratch = vec![0u8; 1024];
    if hs.read_message(&msg2[2..], &mut scratch).is_err() {
        panic!("harness could not read a genuine message 2");
    }
    let msg3 = write_raw(&mut hs, &payload)?;
    let request = awaiting.handle_finish(&msg3, now).ok()?;
    let genuine = proof_bytes(&a);
    assert!(payload.starts_with(&genuine), "accepted a forged proof");
    let rest = &payload[genuine.len()..];
    let name_len = usize::from(rest[0]);
    assert_eq!(
        request.service().as_str().as_bytes(),
        &rest[1..1 + name_len]
    );
    assert_eq!(request.blob(), &rest[1 + name_len + 2..]);
    Some(request.service().as_str().to_owned())
}

/// The genuine identity proof of the harness's responder (`initiator_msg2_payload` accepts
/// exactly this), for tests that check the harness reaches past the AEAD.
pub fn genuine_responder_proof() -> Vec<u8> {
    proof_bytes(&keys(2))
}

std::thread_local! {
    /// One established pair per fuzzing process, rebuilt only after a frame ends it.
    static SESSION: std::cell::RefCell<Option<(Channel, Channel)>> = const { std::cell::RefCell::new(None) };
    /// Sessions built so far in this process (odd: Noise, even: keyed).
    static PAIRS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Frames behind the AEAD on an established channel: `data` is a sequence of
/// `len (1 byte; 255: the rest) || plaintext`; the harness's side encrypts each plaintext as
/// the next transport message (any type byte, any body) and the channel under test opens it,
/// through the `Deframer`. The session persists across inputs (set up once per process,
/// again only after a frame ends it). Properties: a data frame delivers exactly its body; a
/// close frame delivers nothing and ends the direction; any other plaintext is an error that
/// delivers nothing; after an error or a close the channel accepts nothing more. Returns the
/// application bytes delivered.
pub fn channel_frames(data: &[u8]) -> Vec<u8> {
    let mut delivered = Vec::new();
    SESSION.with(|cell| {
        let mut slot = cell.borrow_mut();
        let (sender, receiver) = slot.get_or_insert_with(|| {
            // Every other session is a keyed resumed channel: the same frames over Noise
            // cipher states built from derived keys rather than snow's.
            let n = PAIRS.with(|n| {
                n.set(n.get() + 1);
                n.get()
            });
            if n.is_multiple_of(2) {
                keyed_channel_pair()
            } else {
                channel_pair()
            }
        });
        let mut ended = false;
        let mut rest = data;
        let mut deframer = crate::Deframer::new(crate::limits::MAX_NOISE_MESSAGE);
        while let Some((&len, tail)) = rest.split_first() {
            let take = if len == 255 {
                tail.len()
            } else {
                usize::from(len).min(tail.len())
            };
            let (plain, tail) = tail.split_at(take);
            rest = tail;
            let mut wire = Vec::new();
            if crate::frame::write_prefixed(&mut wire, plain.len() + TAG_LEN, |buf| {
                sender.transport.write_message(plain, buf)
            })
            .is_err()
            {
                break;
            }
            deframer.push(&wire);
            let Ok(Some(message)) = deframer.next_message() else {
                panic!("the deframer did not yield a whole sealed message");
            };
            let mut out = Vec::new();
            let result = receiver.open(message, &mut out);
            let (kind, body) = match plain.split_first() {
                Some((&k, body)) => (Some(k), body),
                None => (None, &[][..]),
            };
            match result {
                Ok(crate::Received::Data(n)) => {
                    assert!(!ended, "a frame after the end was accepted");
                    assert_eq!(kind, Some(FrameType::Data as u8));
                    assert_eq!((n, out.as_slice()), (body.len(), body));
                    delivered.extend_from_slice(&out);
                }
                Ok(crate::Received::Close) => {
                    assert_eq!(plain, [FrameType::Close as u8]);
                    assert!(out.is_empty());
                    ended = true;
                }
                Ok(crate::Received::Control) => {
                    assert_eq!(plain, [FrameType::Rekey as u8]);
                    assert!(out.is_empty());
                    // The sender switches keys right after a rekey frame, as `seal` does.
                    if let Err(e) = sender.transport.rekey_outgoing() {
                        panic!("the harness's rekey failed: {e}");
                    }
                }
                Err(e) => {
                    assert!(out.is_empty(), "an error delivered bytes");
                    if !ended {
                        assert_ne!(
                            kind,
                            Some(FrameType::Data as u8),
                            "a data frame failed: {e}"
                        );
                    }
                    if let Error::Aborted { reason } = e {
                        assert_eq!(plain, [FrameType::Abort as u8, reason.code()]);
                    }
                    let mut later = Vec::new();
                    assert!(
                        receiver.open(message, &mut later).is_err() && later.is_empty(),
                        "the channel went on after an error"
                    );
                    ended = true;
                    break;
                }
            }
        }
        if ended {
            *slot = None;
        }
    });
    delivered
}

/// Keys for a caller (seed 1) and a callee (seed 2) that share a live resumption ticket.
fn resumable_pair(now: Instant) -> (HandshakeKeys, HandshakeKeys) {
    let (a, b) = (keys(1), keys(2));
    let secret = zeroize::Zeroizing::new([7u8; 32]);
    let expires = now + std::time::Duration::from_secs(60);
    a.sessions()
        .store_outgoing(b.node_id(), FUZZ_TICKET, secret.clone(), (now, expires));
    b.sessions().store_incoming(
        a.node_id(),
        FUZZ_TICKET,
        secret,
        (now, expires),
        crate::resume::retired::RETIRED_FOR,
    );
    (a, b)
}

const FUZZ_TICKET: crate::resume::TicketId = [0x5a; crate::resume::TICKET_ID_LEN];

fn fuzz_request(to: &HandshakeKeys, blob: Vec<u8>) -> Option<DialRequest> {
    Some(DialRequest {
        expected: to.node_id(),
        session: SessionId(1),
        service: ServiceName::new("fuzz").ok()?,
        blob,
    })
}

/// A callee holding a live ticket fed `data` as R1 (with the real ticket id in front when
/// `genuine_id`, so the AEAD is reached), wanting a DH in every channel when `dh`.
/// Property: a forged R1 never yields a request.
pub fn resume_responder(data: &[u8], genuine_id: bool, dh: bool) {
    use crate::resume::{Resumed, respond};
    let now = Instant::now();
    let (a, b) = resumable_pair(now);
    let mut r1 = Vec::with_capacity(data.len() + 16);
    if genuine_id {
        r1.extend_from_slice(&FUZZ_TICKET);
    }
    r1.extend_from_slice(data);
    let mut out = Vec::new();
    let limits = Limits {
        resume_dh: dh,
        ..Limits::default()
    };
    let r = respond(&b, a.node_id(), SessionId(1), limits, &r1, now, &mut out);
    assert!(
        !matches!(r, Ok(Resumed::Opened(_))),
        "forged resumed open accepted"
    );
}

/// A channel between keys 1 and 2 opened by a keyed resumed open.
fn keyed_channel_pair() -> (Channel, Channel) {
    use crate::resume::{Answered, Opening, Resumed, respond};
    let now = Instant::now();
    let (a, b) = resumable_pair(now);
    let fail = || -> (Channel, Channel) { panic!("keyed resumed open failed") };
    let Some(request) = fuzz_request(&b, Vec::new()) else {
        return fail();
    };
    let mut r1 = Vec::new();
    let limits = Limits::default();
    let Ok(opening) = Opening::start(&a, request, Default::default(), limits, now, &mut r1) else {
        return fail();
    };
    let mut k2 = Vec::new();
    let Ok(Resumed::Opened(req)) = respond(
        &b,
        a.node_id(),
        SessionId(1),
        limits,
        &r1[2..],
        now,
        &mut k2,
    ) else {
        return fail();
    };
    let Ok(Answered::Verdict(verdict)) =
        opening.handle_response(&a, &k2[2..], now, &mut Vec::new())
    else {
        return fail();
    };
    let mut accept = Vec::new();
    let Ok(cb) = req.accept(&mut accept) else {
        return fail();
    };
    match verdict.handle_verdict(&accept[2..], now) {
        Ok(ca) => (ca, cb),
        Err(_) => fail(),
    }
}

/// A caller that sent a genuine R1 (with a DH when `dh`, keyed otherwise), fed `data` as the
/// answer and then a verdict. Property: a forged answer never yields a channel (REFUSED,
/// exactly, turns into the full handshake).
pub fn resume_initiator(data: &[u8], dh: bool) {
    use crate::resume::{Answered, Opening};
    let now = Instant::now();
    let (a, b) = resumable_pair(now);
    let Some(request) = fuzz_request(&b, Vec::new()) else {
        return;
    };
    let mut out = Vec::new();
    let early = crate::resume::Early {
        first: b"first",
        replaces: &[],
    };
    let limits = Limits {
        resume_dh: dh,
        ..Limits::default()
    };
    let Ok(opening) = Opening::start(&a, request, early, limits, now, &mut out) else {
        return;
    };
    let (answer, verdict) = data.split_at(data.len().min(crate::resume::R2_LEN + 1));
    out.clear();
    match opening.handle_response(&a, answer, now, &mut out) {
        Ok(Answered::Verdict(awaiting)) => {
            let verdict = awaiting.handle_verdict(verdict, now);
            panic!("forged R2 authenticated (verdict: {:?})", verdict.err());
        }
        Ok(Answered::Retry(_)) => assert!(
            answer == [crate::resume::REFUSED] || answer == [crate::resume::REFUSED_WANTS_DH],
            "retry on {answer:02x?}"
        ),
        Err(_) => {}
    }
}

/// The request inside R1, behind the AEAD: a genuine caller encrypts `data` as R1's payload
/// (keyed when `keyed`, with a DH otherwise). Property: a request only when `data` is a
/// well-formed payload (age, given-up opens, service, blob, first bytes), and then with
/// exactly its service, blob and first bytes.
pub fn resume_payload(data: &[u8], keyed: bool) {
    use crate::resume::{KIND_DH, KIND_KEYED, R1_HEADER_LEN, Resumed, respond};
    let now = Instant::now();
    let (a, b) = resumable_pair(now);
    let kind = if keyed { KIND_KEYED } else { KIND_DH };
    let prologue = crate::resume::prologue_for_fuzzing(
        kind,
        &a.node_id(),
        &b.node_id(),
        SessionId(1),
        &FUZZ_TICKET,
        1,
    );
    let mut r1 = vec![0u8; R1_HEADER_LEN + 32 + data.len() + TAG_LEN];
    r1[..16].copy_from_slice(&FUZZ_TICKET);
    r1[16..R1_HEADER_LEN - 1].copy_from_slice(&1u64.to_be_bytes());
    r1[R1_HEADER_LEN - 1] = kind;
    let sealed = if keyed {
        crate::resume::seal_keyed_for_fuzzing(&[7u8; 32], &prologue, data, &mut r1[R1_HEADER_LEN..])
    } else {
        noise::resume_builder()
            .prologue(&prologue)
            .and_then(|builder| builder.psk(0, &[7u8; 32]))
            .and_then(|builder| builder.build_initiator())
            .and_then(|mut hs| hs.write_message(data, &mut r1[R1_HEADER_LEN..]))
            .map_err(Error::from)
    };
    let Ok(n) = sealed else {
        return;
    };
    r1.truncate(R1_HEADER_LEN + n);
    let mut out = Vec::new();
    let got = respond(
        &b,
        a.node_id(),
        SessionId(1),
        Limits::default(),
        &r1,
        now,
        &mut out,
    );
    let expected = crate::resume::R1Payload::decode(data).ok();
    match (got, expected) {
        (Ok(Resumed::Opened(mut req)), Some(p)) => {
            assert_eq!((req.service(), req.blob()), (&p.service, &p.blob[..]));
            assert_eq!(req.take_first(), p.first);
        }
        (Ok(Resumed::Opened(_)), None) => panic!("malformed request accepted"),
        (Ok(Resumed::Refused), _) => panic!("live ticket refused"),
        (Err(_), Some(_)) if r1.len() > crate::resume::MAX_R1_LEN => {}
        (Err(e), Some(_)) => panic!("well-formed request refused: {e}"),
        (Err(_), None) => {}
    }
}
