//! Resumed opens in memory, with a relay in the middle that replays, splices, re-labels and
//! flips bytes; and the state each side keeps.

use std::cell::Cell;
use std::time::{Duration, Instant};

use super::*;
use crate::tests::{Tap, TestNode, connect, only_message, open_all, request, seal};
use crate::{DenyReason, Responder};

thread_local! {
    /// Whether this thread's opens use a DH ([`Limits::resume_dh`]); see [`both_kinds`].
    static DH: Cell<bool> = const { Cell::new(false) };
}

/// The limits of this thread's opens: keyed, or with a DH inside [`both_kinds`]'s second run.
fn limits() -> Limits {
    Limits {
        resume_dh: DH.with(Cell::get),
        ..Limits::default()
    }
}

/// Runs `test` for both kinds of resumed open: keyed (the default), then with a DH.
fn both_kinds(test: impl Fn()) {
    for dh in [false, true] {
        DH.with(|c| c.set(dh));
        test();
    }
    DH.with(|c| c.set(false));
}

/// The size of the callee's answer to this thread's opens (K2 or R2).
fn answer_len() -> usize {
    if DH.with(Cell::get) { R2_LEN } else { K2_LEN }
}

/// The caller's first message of a new open to `b` in `session` (R1 when it holds a ticket).
fn open(a: &TestNode, b: &TestNode, session: u64, now: Instant) -> (Opening, Vec<u8>) {
    open_with(a, b, session, Early::default(), now)
}

fn open_with(
    a: &TestNode,
    b: &TestNode,
    session: u64,
    early: Early<'_>,
    now: Instant,
) -> (Opening, Vec<u8>) {
    let mut out = Vec::new();
    let opening = Opening::start(&a.keys, request(b, session), early, limits(), now, &mut out)
        .unwrap_or_else(|e| panic!("open: {e}"));
    (opening, only_message(&out))
}

fn answer(
    b: &TestNode,
    caller: NodeId,
    session: u64,
    r1: &[u8],
    now: Instant,
) -> Result<(Resumed, Vec<u8>), Error> {
    let mut out = Vec::new();
    respond(
        &b.keys,
        caller,
        SessionId(session),
        limits(),
        r1,
        now,
        &mut out,
    )
    .map(|r| (r, out))
}

fn opened(r: Resumed) -> Request {
    match r {
        Resumed::Opened(request) => request,
        Resumed::Refused => panic!("refused"),
    }
}

/// The caller handles R2 (from `out`): its verdict state. It sends nothing back.
fn caller_reads_r2(opening: Opening, a: &TestNode, r2_out: &[u8]) -> AwaitingVerdict {
    let mut nothing = Vec::new();
    let verdict = verdict_of(
        opening
            .handle_response(&a.keys, &only_message(r2_out), Instant::now(), &mut nothing)
            .unwrap_or_else(|e| panic!("R2: {e}")),
    );
    assert!(nothing.is_empty(), "the caller answers R2 with nothing");
    verdict
}

/// R1 answered and R2 handled: the callee's request and the caller's verdict state.
fn until_decision(a: &TestNode, b: &TestNode, session: u64) -> (AwaitingVerdict, Request) {
    let now = Instant::now();
    let (opening, r1) = open(a, b, session, now);
    assert!(opening.is_resumed());
    let (resumed, r2) = answer(b, a.id(), session, &r1, now).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(only_message(&r2).len(), answer_len(), "the answer at once");
    (caller_reads_r2(opening, a, &r2), opened(resumed))
}

/// The rest of a full handshake that `retry` started (message 1 in `msg1`), to the
/// callee's request.
fn finish_full(
    retry: Opening,
    msg1: &[u8],
    (a, b): (&TestNode, &TestNode),
    session: u64,
    now: Instant,
) -> (AwaitingVerdict, Request) {
    let resp = Responder::new(&b.keys, a.id(), SessionId(session), Limits::default(), now)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    let resp = resp
        .handle_hello(msg1, now, &mut out)
        .unwrap_or_else(|e| panic!("{e}"));
    let msg2 = only_message(&out);
    let mut out = Vec::new();
    let verdict = verdict_of(
        retry
            .handle_response(&a.keys, &msg2, now, &mut out)
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let req = resp
        .handle_finish(&only_message(&out), now)
        .unwrap_or_else(|e| panic!("{e}"));
    (verdict, req)
}

/// A forged (or real) REFUSED handed to a caller's resumed open: the full handshake it
/// starts instead, and its message 1.
fn refused(opening: Opening, a: &TestNode, now: Instant) -> (Opening, Vec<u8>) {
    let mut out = Vec::new();
    let mut refused = Vec::new();
    crate::frame::write_prefixed(&mut refused, 1, |buf| {
        buf[0] = REFUSED;
        Ok(1)
    })
    .unwrap_or_else(|e| panic!("{e}"));
    match opening.handle_response(&a.keys, &only_message(&refused), now, &mut out) {
        Ok(Answered::Retry(o)) => (*o, only_message(&out)),
        _ => panic!("expected the full handshake"),
    }
}

fn verdict_of(a: Answered) -> AwaitingVerdict {
    match a {
        Answered::Verdict(v) => v,
        Answered::Retry(_) => panic!("retry"),
    }
}

/// A full handshake, so both sides hold a ticket.
fn pair() -> (TestNode, TestNode) {
    let (a, b) = (TestNode::new(1), TestNode::new(2));
    let _ = connect(&a, &b, &mut Tap::default());
    assert_eq!(a.keys.sessions().len(), (1, 0));
    assert_eq!(b.keys.sessions().len(), (0, 1));
    (a, b)
}

/// A whole resumed open accepted by `b`: the two channels.
fn resume(a: &TestNode, b: &TestNode, session: u64) -> (Channel, Channel) {
    let (verdict, request) = until_decision(a, b, session);
    let (caller, callee, _) = crate::tests::accept_both(verdict, request);
    (caller, callee)
}

#[test]
fn a_resumed_open_carries_data_both_ways_and_the_request() {
    both_kinds(|| {
        let (a, b) = pair();
        let (mut ca, mut cb) = resume(&a, &b, 9);
        assert_eq!((ca.peer(), cb.peer()), (b.id(), a.id()));
        assert_eq!(cb.service().as_str(), "files");
        assert_eq!(ca.handshake_hash(), cb.handshake_hash());
        let (got, err) = open_all(&mut cb, &seal(&mut ca, b"ping"));
        assert_eq!((got.as_slice(), err), (&b"ping"[..], None));
        let (got, err) = open_all(&mut ca, &seal(&mut cb, b"pong"));
        assert_eq!((got.as_slice(), err), (&b"pong"[..], None));
        // A second resumed open has keys of its own (fresh ephemerals), and so on.
        let (c2, _) = resume(&a, &b, 10);
        assert_ne!(c2.handshake_hash(), ca.handshake_hash());
    });
}

#[test]
fn the_callee_sees_the_service_and_blob_and_may_deny() {
    both_kinds(|| {
        let (a, b) = pair();
        let (verdict, req) = until_decision(&a, &b, 3);
        assert_eq!(
            (req.service().as_str(), req.blob()),
            ("files", &b"token-bytes"[..])
        );
        let mut out = Vec::new();
        req.deny(DenyReason::NotAllowed, &mut out)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            verdict.handle_verdict(&only_message(&out), Instant::now()),
            Err(Error::Denied {
                reason: DenyReason::NotAllowed
            })
        ));
    });
}

#[test]
fn an_r1_held_back_longer_than_the_early_delay_is_refused_unburned() {
    // A relay that withholds R1 and delivers it later: the callee compares its own age of
    // the secret with the caller's, sealed in R1, and acts only on a fresh R1.
    let (a, b) = pair();
    let now = Instant::now();
    let (_, r1) = open(&a, &b, 11, now);
    let delay = max_early_delay(&Limits::default());
    let late = now + delay + Duration::from_millis(1);
    let (resumed, out) = answer(&b, a.id(), 11, &r1, late).unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(resumed, Resumed::Refused));
    assert_eq!(only_message(&out), [REFUSED]);
    // Within the delay it is fresh, and refusing it earlier did not use its counter up.
    // (The two sides' tickets were born a moment apart in `pair`: a margin for that.)
    let within = now + delay - Duration::from_millis(100);
    let request = opened(
        answer(&b, a.id(), 11, &r1, within)
            .unwrap_or_else(|e| panic!("{e}"))
            .0,
    );
    assert_eq!(request.peer(), a.id());
}

#[test]
fn a_replayed_resumed_open_is_refused() {
    let (a, b) = pair();
    let now = Instant::now();
    let (_, r1) = open(&a, &b, 4, now);
    assert!(answer(&b, a.id(), 4, &r1, now).is_ok());
    // The relay plays the very same bytes again, in the same session or another.
    assert!(matches!(
        answer(&b, a.id(), 4, &r1, now),
        Err(Error::Replayed)
    ));
    assert!(matches!(
        answer(&b, a.id(), 5, &r1, now),
        Err(Error::Authentication)
    ));
}

#[test]
fn a_resumed_open_cannot_move_to_another_session_caller_or_counter() {
    both_kinds(|| {
        let (a, b) = pair();
        let c = TestNode::new(3);
        let now = Instant::now();
        let (_, r1) = open(&a, &b, 6, now);
        assert!(matches!(
            answer(&b, a.id(), 7, &r1, now),
            Err(Error::Authentication)
        ));
        // The relay names another caller: the ticket proves who made R1.
        assert!(matches!(
            answer(&b, c.id(), 6, &r1, now),
            Err(Error::CallerMismatch { relay_said, proven }) if relay_said == c.id() && proven == a.id()
        ));
        // Another counter in the clear header than the one R1 was made for.
        let mut moved = r1.clone();
        moved[R1_HEADER_LEN - 2] ^= 0x02;
        assert!(matches!(
            answer(&b, a.id(), 6, &moved, now),
            Err(Error::Authentication)
        ));
        // None of these used up the real counter.
        assert!(answer(&b, a.id(), 6, &r1, now).is_ok());
    });
}

#[test]
fn two_resumptions_spliced_into_each_other_fail() {
    both_kinds(|| {
        let (a, b) = pair();
        let now = Instant::now();
        let (open1, r1a) = open(&a, &b, 20, now);
        let (open2, r1b) = open(&a, &b, 21, now);
        let r2 = |r1: &[u8], session| {
            let (_, out) = answer(&b, a.id(), session, r1, now).unwrap_or_else(|e| panic!("{e}"));
            only_message(&out)
        };
        let (m1, m2) = (r2(&r1a, 20), r2(&r1b, 21));
        // Each caller gets the other's R2.
        for (opening, wrong) in [(open1, &m2), (open2, &m1)] {
            assert!(matches!(
                opening.handle_response(&a.keys, wrong, now, &mut Vec::new()),
                Err(Error::Authentication)
            ));
        }
    });
}

#[test]
fn every_flipped_bit_of_r1_and_r2_is_refused() {
    both_kinds(|| {
        let (a, b) = pair();
        let now = Instant::now();
        let (_, r1) = open(&a, &b, 30, now);
        for i in 0..r1.len() {
            let mut bad = r1.clone();
            bad[i] ^= 1 << (i % 8);
            match answer(&b, a.id(), 30, &bad, now) {
                // A changed ticket id names no ticket: the full handshake decides.
                Ok((Resumed::Refused, out)) => {
                    assert!(i < TICKET_ID_LEN, "byte {i}");
                    assert_eq!(only_message(&out), [REFUSED]);
                }
                Ok((Resumed::Opened(_), _)) => panic!("byte {i} flipped and accepted"),
                // The kind byte: no such kind.
                Err(Error::Malformed { .. }) if i == R1_HEADER_LEN - 1 => {}
                Err(e) => assert!(
                    matches!(e, Error::Authentication | Error::LowOrderKey),
                    "byte {i}: {e}"
                ),
            }
        }
        // The other kind in the header. A keyed R1 read as one with a DH: a Noise message
        // that is not one, nothing authenticates. One with a DH relabelled keyed, at a callee
        // that wants a DH: refused unread (the caller runs the full handshake).
        let mut other = r1.clone();
        if DH.with(Cell::get) {
            other[R1_HEADER_LEN - 1] = KIND_KEYED;
            assert!(matches!(
                answer(&b, a.id(), 30, &other, now),
                Ok((Resumed::Refused, _))
            ));
        } else {
            other[R1_HEADER_LEN - 1] = KIND_DH;
            assert!(matches!(
                answer(&b, a.id(), 30, &other, now),
                Err(Error::Authentication | Error::LowOrderKey | Error::Malformed { .. })
            ));
        }
        let (opening, r1) = open(&a, &b, 31, now);
        let (_, out) = answer(&b, a.id(), 31, &r1, now).unwrap_or_else(|e| panic!("{e}"));
        let r2 = only_message(&out);
        let mut bad = r2.clone();
        bad[answer_len() - 8] ^= 0x10;
        assert!(matches!(
            opening.handle_response(&a.keys, &bad, now, &mut Vec::new()),
            Err(Error::Authentication)
        ));
        let (opening, _) = open(&a, &b, 32, now);
        assert!(matches!(
            opening.handle_response(&a.keys, &r2[..answer_len() - 1], now, &mut Vec::new()),
            Err(Error::Malformed { .. })
        ));
    });
}

#[test]
fn r1_bounds_are_checked_before_anything_else() {
    let (a, b) = pair();
    let now = Instant::now();
    let short = vec![0u8; MIN_R1_LEN - 1];
    assert!(matches!(
        answer(&b, a.id(), 1, &short, now),
        Err(Error::Malformed { .. })
    ));
    let long = vec![0u8; MAX_R1_LEN + 1];
    assert!(matches!(
        answer(&b, a.id(), 1, &long, now),
        Err(Error::TooLarge { .. })
    ));
    assert!(!is_resumption(&[0u8; 32]));
    assert!(is_resumption(&short));
}

#[test]
fn a_callee_that_lost_its_state_refuses_and_the_full_handshake_runs_on_the_same_stream() {
    both_kinds(|| {
        let (a, b) = pair();
        b.keys.sessions().clear(); // a restart, an eviction, or a revocation
        let now = Instant::now();
        let (opening, r1) = open(&a, &b, 40, now);
        let (resumed, out) = answer(&b, a.id(), 40, &r1, now).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(resumed, Resumed::Refused));
        let refused = only_message(&out);
        let mut out = Vec::new();
        let retry = match opening.handle_response(&a.keys, &refused, now, &mut out) {
            Ok(Answered::Retry(o)) => o,
            _ => panic!("expected the full handshake"),
        };
        assert!(!retry.is_resumed());
        let msg1 = only_message(&out);
        assert!(!is_resumption(&msg1));
        assert_eq!(
            a.keys.sessions().len().0,
            0,
            "the caller dropped the dead ticket"
        );
        // The rest of the full handshake, same session.
        let (verdict, req) = finish_full(*retry, &msg1, (&a, &b), 40, now);
        let mut out = Vec::new();
        let _ = req.accept(&mut out);
        assert!(verdict.handle_verdict(&only_message(&out), now).is_ok());
        // ... which left a new ticket on both sides.
        let (again, _) = resume(&a, &b, 41);
        assert_eq!(again.peer(), b.id());
    });
}

#[test]
fn a_forgotten_peer_and_an_expired_ticket_need_the_full_handshake() {
    let (a, b) = pair();
    let now = Instant::now();
    // The caller forgets the callee (its key was revoked): a full handshake.
    a.keys.sessions().forget(&b.id());
    assert!(!open(&a, &b, 50, now).0.is_resumed());
    // The callee forgets the caller: R1 is refused.
    let (a, b) = pair();
    b.keys.sessions().forget(&a.id());
    let (_, r1) = open(&a, &b, 51, now);
    assert!(matches!(
        answer(&b, a.id(), 51, &r1, now),
        Ok((Resumed::Refused, _))
    ));
    // Past the lifetime, neither side resumes.
    let (a, b) = pair();
    let later = now + Limits::default().resume_lifetime + Duration::from_secs(1);
    let (_, r1) = open(&a, &b, 52, now);
    assert!(matches!(
        answer(&b, a.id(), 52, &r1, later),
        Ok((Resumed::Refused, _))
    ));
    assert!(!open(&a, &b, 53, later).0.is_resumed());
}

#[test]
fn resumption_off_keeps_no_secret_and_always_runs_the_full_handshake() {
    let (a, b) = (TestNode::new(1), TestNode::new(2));
    let limits = Limits {
        resume_lifetime: Duration::ZERO,
        ..Limits::default()
    };
    let now = Instant::now();
    let (verdict, req) = crate::tests::handshake_until_decision(
        &a,
        &b,
        request(&b, 1),
        limits,
        now,
        &mut Tap::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    let _ = req.accept(&mut out);
    assert!(verdict.handle_verdict(&only_message(&out), now).is_ok());
    assert!(a.keys.sessions().is_empty() && b.keys.sessions().is_empty());
    let mut out = Vec::new();
    let opening = Opening::start(
        &a.keys,
        request(&b, 2),
        Early::default(),
        limits,
        now,
        &mut out,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(!opening.is_resumed());
}

#[test]
fn both_sides_derive_the_same_ticket_and_only_from_a_finished_handshake() {
    // The ticket a caller leases names the secret its callee stored for it.
    let (a, b) = pair();
    let now = Instant::now();
    let (_, r1) = open(&a, &b, 60, now);
    let (resumed, _) = answer(&b, a.id(), 60, &r1, now).unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(resumed, Resumed::Opened(_)));
    // A handshake that fails at message 3 (a flipped byte) leaves the callee no ticket.
    let (a, b) = (TestNode::new(1), TestNode::new(2));
    let mut out = Vec::new();
    let init = Initiator::start(&a.keys, request(&b, 61), Limits::default(), now, &mut out)
        .unwrap_or_else(|e| panic!("{e}"));
    let msg1 = only_message(&out);
    let resp = Responder::new(&b.keys, a.id(), SessionId(61), Limits::default(), now)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    let resp = resp
        .handle_hello(&msg1, now, &mut out)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut out3 = Vec::new();
    let _ = init
        .handle_response(&only_message(&out), now, &mut out3)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut msg3 = only_message(&out3);
    msg3[40] ^= 1;
    assert!(matches!(
        resp.handle_finish(&msg3, now),
        Err(Error::Authentication)
    ));
    assert_eq!(b.keys.sessions().len(), (0, 0));
}

#[test]
fn a_denied_caller_gets_no_resumption_secret() {
    // Only an accepted full handshake leaves secrets: a caller the callee refuses (not
    // allowed, revoked) has no cheaper way back.
    let (a, b) = (TestNode::new(1), TestNode::new(2));
    let now = Instant::now();
    let (verdict, req) = crate::tests::handshake_until_decision(
        &a,
        &b,
        request(&b, 70),
        Limits::default(),
        now,
        &mut Tap::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    req.deny(DenyReason::Revoked, &mut out)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(verdict.handle_verdict(&only_message(&out), now).is_err());
    assert_eq!(
        (a.keys.sessions().len(), b.keys.sessions().len()),
        ((0, 0), (0, 0))
    );
    // Accepted: both keep one.
    let _ = connect(&a, &b, &mut Tap::default());
    assert_eq!(
        (a.keys.sessions().len(), b.keys.sessions().len()),
        ((1, 0), (0, 1))
    );
}

#[path = "early_tests.rs"]
mod early;
#[path = "kind_tests.rs"]
mod kinds;
