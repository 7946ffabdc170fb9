//! The handshake and identity rows of `ATTACKS.md`, each named after its attack.

use std::time::{Duration, Instant};

use super::*;
use crate::domain;
use crate::handshake::prologue;
use crate::limits::MAX_HANDSHAKE_MSG3_LEN;
use crate::{DenyReason, Request};

fn start(a: &TestNode, dial: DialRequest) -> (Initiator, Vec<u8>) {
    let mut out = Vec::new();
    let init = Initiator::start(&a.keys, dial, Limits::default(), Instant::now(), &mut out)
        .unwrap_or_else(|e| panic!("start: {e}"));
    (init, only_message(&out))
}

#[test]
fn happy_path_accept_then_data_both_ways() {
    let (a, b) = (TestNode::new(1), TestNode::new(2));
    let (mut ca, mut cb) = connect(&a, &b, &mut Tap::default());
    assert_eq!(ca.peer(), b.id());
    assert_eq!(cb.peer(), a.id());
    assert_eq!(cb.service().as_str(), "files");
    assert_eq!(ca.handshake_hash(), cb.handshake_hash());
    let (got, err) = open_all(&mut cb, &seal(&mut ca, b"ping"));
    assert_eq!((got.as_slice(), err), (&b"ping"[..], None));
    let (got, err) = open_all(&mut ca, &seal(&mut cb, b"pong"));
    assert_eq!((got.as_slice(), err), (&b"pong"[..], None));
}

#[test]
fn responder_sees_service_and_blob() {
    let (a, b) = (TestNode::new(1), TestNode::new(2));
    let (_, req) = handshake_until_decision(
        &a,
        &b,
        request(&b, 1),
        Limits::default(),
        Instant::now(),
        &mut Tap::default(),
    )
    .unwrap();
    assert_eq!(req.peer(), a.id());
    assert_eq!(req.service().as_str(), "files");
    assert_eq!(req.blob(), b"token-bytes");
}

#[test]
fn misbinding_to_honest_node_fails_before_message3() {
    // The relay routes A's dial for B to M; M answers honestly (its prologue names M).
    let (a, b, m) = (TestNode::new(1), TestNode::new(2), TestNode::new(3));
    let (init, msg1) = start(&a, request(&b, 5));
    let mut out = Vec::new();
    let resp = Responder::new(
        &m.keys,
        a.id(),
        SessionId(5),
        Limits::default(),
        Instant::now(),
    )
    .and_then(|r| r.handle_hello(&msg1, Instant::now(), &mut out))
    .unwrap();
    drop(resp);
    let mut msg3 = Vec::new();
    let r = init.handle_response(&only_message(&out), Instant::now(), &mut msg3);
    assert_eq!(r.err(), Some(Error::Authentication));
    assert!(msg3.is_empty(), "A wrote message 3 to the wrong peer");
}

#[test]
fn misbinding_to_colluding_node_is_unexpected_peer() {
    // M colludes with the relay and uses the prologue A expects, proving its own identity.
    let (a, b, m) = (TestNode::new(1), TestNode::new(2), TestNode::new(3));
    let (init, msg1) = start(&a, request(&b, 5));
    let (id, sig) = m.keys.proof_for_tests();
    let msg2 = evil_msg2(
        &m.keys.static_private,
        &prologue(&a.id(), &b.id(), SessionId(5)),
        &msg1,
        &proof_bytes(id, sig),
    );
    let mut msg3 = Vec::new();
    let r = init.handle_response(&msg2, Instant::now(), &mut msg3);
    assert_eq!(
        r.err(),
        Some(Error::UnexpectedPeer {
            expected: b.id(),
            got: m.id()
        })
    );
    assert!(msg3.is_empty(), "M learned A's identity");
}

fn msg2_with_proof(proof: &[u8]) -> Result<AwaitingVerdict, Error> {
    let (a, b, m) = (TestNode::new(1), TestNode::new(2), TestNode::new(3));
    let (init, msg1) = start(&a, request(&b, 5));
    let msg2 = evil_msg2(
        &m.keys.static_private,
        &prologue(&a.id(), &b.id(), SessionId(5)),
        &msg1,
        proof,
    );
    let mut msg3 = Vec::new();
    let r = init.handle_response(&msg2, Instant::now(), &mut msg3);
    assert!(msg3.is_empty());
    r
}

#[test]
fn static_binding_splice_is_bad_identity_proof() {
    // M replays B's proof (B's identity, B's signature over B's static) with M's static.
    let b = TestNode::new(2);
    let (id, sig) = b.keys.proof_for_tests();
    assert_eq!(
        msg2_with_proof(&proof_bytes(id, sig)).err(),
        Some(Error::BadIdentityProof)
    );
}

#[test]
fn mangled_identity_proofs_are_rejected() {
    let m = TestNode::new(3);
    let (id, sig) = m.keys.proof_for_tests();
    let good = proof_bytes(id, sig);
    assert!(msg2_with_proof(&good).is_err()); // sanity: M is not B (UnexpectedPeer)
    for bit in [0usize, 7, 32 * 8, 40 * 8 + 3, 95 * 8 + 7] {
        let mut flipped = good.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        assert_eq!(
            msg2_with_proof(&flipped).err(),
            Some(Error::BadIdentityProof),
            "bit {bit}"
        );
    }
    let mut overlong = good.clone();
    overlong.push(0);
    for proof in [vec![], good[..95].to_vec(), overlong] {
        assert_eq!(msg2_with_proof(&proof).err(), Some(Error::BadIdentityProof));
    }
}

#[test]
fn identity_proof_over_wrong_domain_is_rejected() {
    let (b, m) = (TestNode::new(2), TestNode::new(3));
    // B's identity signing M's static under another context (as if B were tricked into it):
    let m_static = curve25519_dalek::MontgomeryPoint::mul_base_clamped([103; 32]).to_bytes();
    for context in [
        domain::RELAY_AUTH_V1,
        domain::TOKEN_V1,
        domain::AUDIT_CHECKPOINT_V1,
    ] {
        let sig = b.identity.sign(context, &m_static);
        assert_eq!(
            msg2_with_proof(&proof_bytes(b.id(), sig)).err(),
            Some(Error::BadIdentityProof),
            "{context}"
        );
    }
    // And the right domain over the wrong key (B's signature of M's static under B is valid
    // only if B signed it; here M signs with its own identity but claims B).
    let sig = m.identity.sign(domain::NOISE_STATIC_V1, &m_static);
    assert_eq!(
        msg2_with_proof(&proof_bytes(b.id(), sig)).err(),
        Some(Error::BadIdentityProof)
    );
}

#[test]
fn weak_identity_key_with_trivial_signature_is_rejected() {
    // Identity point as the key, signature R = identity, S = 0: passes `verify` in some
    // libraries, never `verify_strict`, and the key is refused as weak before that.
    let mut proof = vec![0u8; 96];
    proof[0] = 1; // key: y = 1 (identity point)
    proof[32] = 1; // R: identity point; S: zero
    assert_eq!(msg2_with_proof(&proof).err(), Some(Error::BadIdentityProof));
}

#[test]
fn low_order_ephemeral_in_message1_gets_no_message2() {
    let (a, b) = (TestNode::new(1), TestNode::new(2));
    for point in low_order_points() {
        let resp = Responder::new(
            &b.keys,
            a.id(),
            SessionId(1),
            Limits::default(),
            Instant::now(),
        )
        .unwrap();
        let mut out = Vec::new();
        let r = resp.handle_hello(&point, Instant::now(), &mut out);
        assert_eq!(r.err(), Some(Error::LowOrderKey), "{point:?}");
        assert!(out.is_empty(), "responder wrote message 2");
    }
}

#[test]
fn low_order_ephemeral_in_message2_is_rejected() {
    let (a, b) = (TestNode::new(1), TestNode::new(2));
    for point in low_order_points() {
        let (init, msg1) = start(&a, request(&b, 5));
        let mut out = Vec::new();
        Responder::new(
            &b.keys,
            a.id(),
            SessionId(5),
            Limits::default(),
            Instant::now(),
        )
        .and_then(|r| r.handle_hello(&msg1, Instant::now(), &mut out))
        .unwrap();
        let mut msg2 = only_message(&out);
        msg2[..32].copy_from_slice(&point);
        let mut msg3 = Vec::new();
        let r = init.handle_response(&msg2, Instant::now(), &mut msg3);
        assert_eq!(r.err(), Some(Error::LowOrderKey));
        assert!(msg3.is_empty());
    }
}

/// Low-order X25519 u-coordinates (as in Wycheproof's "LowOrderPublic" cases).
pub(crate) fn low_order_points() -> Vec<[u8; 32]> {
    let hex = [
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    ];
    hex.iter().map(|h| super::vectors::hex32(h)).collect()
}

#[test]
fn route_rewrite_of_version_session_or_caller_fails() {
    let (a, b, c) = (TestNode::new(1), TestNode::new(2), TestNode::new(3));
    // Responder told another session id, or another caller, than the initiator used.
    for (caller, session) in [(a.id(), SessionId(6)), (c.id(), SessionId(5))] {
        let (init, msg1) = start(&a, request(&b, 5));
        let mut out = Vec::new();
        Responder::new(&b.keys, caller, session, Limits::default(), Instant::now())
            .and_then(|r| r.handle_hello(&msg1, Instant::now(), &mut out))
            .unwrap();
        let mut msg3 = Vec::new();
        let r = init.handle_response(&only_message(&out), Instant::now(), &mut msg3);
        assert_eq!(r.err(), Some(Error::Authentication));
        assert!(msg3.is_empty());
    }
    // Another protocol version in the responder's prologue.
    let (init, msg1) = start(&a, request(&b, 5));
    let mut p = prologue(&a.id(), &b.id(), SessionId(5));
    p[12] ^= 0x02;
    let (id, sig) = b.keys.proof_for_tests();
    let msg2 = evil_msg2(&b.keys.static_private, &p, &msg1, &proof_bytes(id, sig));
    let r = init.handle_response(&msg2, Instant::now(), &mut Vec::new());
    assert_eq!(r.err(), Some(Error::Authentication));
}

#[test]
fn service_privacy_no_service_name_on_the_wire() {
    let (a, b) = (TestNode::new(1), TestNode::new(2));
    let mut tap = Tap::default();
    let mut dial = request(&b, 1);
    dial.service = service("secret-service-name");
    let (verdict, req) =
        handshake_until_decision(&a, &b, dial, Limits::default(), Instant::now(), &mut tap)
            .unwrap();
    assert_eq!(req.service().as_str(), "secret-service-name");
    let mut out = Vec::new();
    let _ = req.accept(&mut out);
    let _ = verdict.handle_verdict(&only_message(&out), Instant::now());
    tap.to_initiator.push(out);
    let wire = tap.all();
    assert!(!contains(&wire, b"secret-service-name"));
    assert!(!contains(&wire, b"token-bytes"));
}

#[test]
fn reflection_and_self_dial_are_refused() {
    let a = TestNode::new(1);
    let mut out = Vec::new();
    let dial = DialRequest {
        expected: a.id(),
        ..request(&a, 1)
    };
    assert_eq!(
        Initiator::start(&a.keys, dial, Limits::default(), Instant::now(), &mut out).err(),
        Some(Error::SelfDial)
    );
    assert!(out.is_empty());
    assert_eq!(
        Responder::new(
            &a.keys,
            a.id(),
            SessionId(1),
            Limits::default(),
            Instant::now()
        )
        .err(),
        Some(Error::SelfDial)
    );
    // A's message 1 reflected back to A as if it were message 2.
    let b = TestNode::new(2);
    let (init, msg1) = start(&a, request(&b, 1));
    let r = init.handle_response(&msg1, Instant::now(), &mut out);
    assert!(matches!(r.err(), Some(Error::Malformed { .. })));
}

#[test]
fn handshake_replay_never_completes() {
    let (a, b) = (TestNode::new(1), TestNode::new(2));
    let mut tap = Tap::default();
    let _ = connect(&a, &b, &mut tap);
    let (old_msg1, old_msg3) = (tap.to_responder[0].clone(), tap.to_responder[1].clone());
    // Replay message 1 to a fresh responder: it answers, but the old message 3 cannot finish.
    let mut out = Vec::new();
    let resp = Responder::new(
        &b.keys,
        a.id(),
        SessionId(7),
        Limits::default(),
        Instant::now(),
    )
    .and_then(|r| r.handle_hello(&old_msg1, Instant::now(), &mut out))
    .unwrap();
    assert_eq!(
        resp.handle_finish(&old_msg3, Instant::now()).err(),
        Some(Error::Authentication)
    );
    // Old message 3 into a fresh handshake with a fresh message 1.
    let (_init, msg1) = start(&a, request(&b, 7));
    let mut out = Vec::new();
    let resp = Responder::new(
        &b.keys,
        a.id(),
        SessionId(7),
        Limits::default(),
        Instant::now(),
    )
    .and_then(|r| r.handle_hello(&msg1, Instant::now(), &mut out))
    .unwrap();
    assert_eq!(
        resp.handle_finish(&old_msg3, Instant::now()).err(),
        Some(Error::Authentication)
    );
}

#[test]
fn bit_flip_in_each_handshake_message_fails() {
    let (a, b) = (TestNode::new(1), TestNode::new(2));
    let now = Instant::now();
    for (which, len) in [(1, 32usize), (2, 192), (3, 200)] {
        for byte in (0..len).step_by(7) {
            let (init, mut msg1) = start(&a, request(&b, 9));
            if which == 1 {
                msg1[byte] ^= 0x01;
            }
            let mut out = Vec::new();
            let resp = Responder::new(&b.keys, a.id(), SessionId(9), Limits::default(), now)
                .and_then(|r| r.handle_hello(&msg1, now, &mut out));
            let Ok(resp) = resp else {
                continue; // a flipped e may be rejected at once (low order): also a failure
            };
            let mut msg2 = only_message(&out);
            if which == 2 {
                msg2[byte] ^= 0x01;
            }
            let mut out = Vec::new();
            let init = init.handle_response(&msg2, now, &mut out);
            if which < 3 {
                assert!(
                    init.is_err(),
                    "flip in message {which} at byte {byte} accepted"
                );
                assert!(out.is_empty());
                continue;
            }
            let Ok(_verdict) = init else {
                panic!("untampered message 2 failed");
            };
            let mut msg3 = only_message(&out);
            if byte >= msg3.len() {
                continue;
            }
            msg3[byte] ^= 0x01;
            assert_eq!(
                resp.handle_finish(&msg3, now).err(),
                Some(Error::Authentication),
                "flip in message 3 at byte {byte}"
            );
        }
    }
}

#[test]
fn denied_service_gets_deny_frame_and_no_channel() {
    let (a, b) = (TestNode::new(1), TestNode::new(2));
    let now = Instant::now();
    let (verdict, req) = handshake_until_decision(
        &a,
        &b,
        request(&b, 1),
        Limits::default(),
        now,
        &mut Tap::default(),
    )
    .unwrap();
    let mut out = Vec::new();
    req.deny(DenyReason::NotAllowed, &mut out).unwrap();
    assert_eq!(
        verdict.handle_verdict(&only_message(&out), now).err(),
        Some(Error::Denied {
            reason: DenyReason::NotAllowed
        })
    );
}

#[test]
fn data_before_accept_is_unexpected() {
    // A responder that skips the verdict and sends data first: the initiator refuses it.
    let (a, b) = (TestNode::new(1), TestNode::new(2));
    let now = Instant::now();
    let (verdict, req): (AwaitingVerdict, Request) = handshake_until_decision(
        &a,
        &b,
        request(&b, 1),
        Limits::default(),
        now,
        &mut Tap::default(),
    )
    .unwrap();
    let mut channel = req.channel;
    let mut out = Vec::new();
    channel.seal(b"early", &mut out).unwrap();
    assert_eq!(
        verdict.handle_verdict(&only_message(&out), now).err(),
        Some(Error::UnexpectedFrame { what: "data" })
    );
}

#[test]
fn handshake_after_deadline_times_out() {
    let (a, b) = (TestNode::new(1), TestNode::new(2));
    let now = Instant::now();
    let limits = Limits {
        handshake_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let resp = Responder::new(&b.keys, a.id(), SessionId(1), limits, now).unwrap();
    assert_eq!(resp.deadline(), now + Duration::from_secs(1));
    let (_init, msg1) = start(&a, request(&b, 1));
    let late = now + Duration::from_secs(2);
    assert_eq!(
        resp.handle_hello(&msg1, late, &mut Vec::new()).err(),
        Some(Error::Timeout)
    );
}

#[test]
fn oversize_message3_and_blob_are_refused() {
    let (a, b) = (TestNode::new(1), TestNode::new(2));
    let mut dial = request(&b, 1);
    dial.blob = vec![0; crate::limits::MAX_HELLO_BLOB + 1];
    assert!(matches!(
        Initiator::start(
            &a.keys,
            dial,
            Limits::default(),
            Instant::now(),
            &mut Vec::new()
        ),
        Err(Error::TooLarge { .. })
    ));
    let resp = Responder::new(
        &b.keys,
        a.id(),
        SessionId(1),
        Limits::default(),
        Instant::now(),
    )
    .unwrap();
    let (_init, msg1) = start(&a, request(&b, 1));
    let resp = resp
        .handle_hello(&msg1, Instant::now(), &mut Vec::new())
        .unwrap();
    let huge = vec![0u8; MAX_HANDSHAKE_MSG3_LEN + 1];
    assert!(matches!(
        resp.handle_finish(&huge, Instant::now()),
        Err(Error::TooLarge { .. })
    ));
}

#[test]
fn concurrent_handshakes_spliced_into_each_other_fail() {
    // Two handshakes in flight through one relay: A -> B (session 1) and C -> D (session 2).
    // The relay swaps the responders' messages 2 (and then the initiators' messages 3).
    let (a, b, c, d) = (
        TestNode::new(1),
        TestNode::new(2),
        TestNode::new(3),
        TestNode::new(4),
    );
    let now = Instant::now();
    let (init_a, msg1_a) = start(&a, request(&b, 1));
    let (init_c, msg1_c) = start(&c, request(&d, 2));
    let respond = |node: &TestNode, caller: NodeId, session: u64, msg1: &[u8]| {
        let mut out = Vec::new();
        let resp = Responder::new(
            &node.keys,
            caller,
            SessionId(session),
            Limits::default(),
            now,
        )
        .and_then(|r| r.handle_hello(msg1, now, &mut out))
        .unwrap();
        (resp, only_message(&out))
    };
    let (resp_b, msg2_b) = respond(&b, a.id(), 1, &msg1_a);
    let (resp_d, msg2_d) = respond(&d, c.id(), 2, &msg1_c);
    // Swapped messages 2: each initiator gets the other session's answer and refuses it
    // without writing message 3 (its prologue and ephemeral do not match).
    let (mut out_a, mut out_c) = (Vec::new(), Vec::new());
    let r_a = start(&a, request(&b, 1))
        .0
        .handle_response(&msg2_d, now, &mut out_a);
    let r_c = start(&c, request(&d, 2))
        .0
        .handle_response(&msg2_b, now, &mut out_c);
    assert_eq!(r_a.err(), Some(Error::Authentication));
    assert_eq!(r_c.err(), Some(Error::Authentication));
    assert!(
        out_a.is_empty() && out_c.is_empty(),
        "a message 3 was written"
    );
    // The honest messages 2 complete; then swapped messages 3 fail at both responders.
    let (mut msg3_a, mut msg3_c) = (Vec::new(), Vec::new());
    let _verdict_a = init_a.handle_response(&msg2_b, now, &mut msg3_a).unwrap();
    let _verdict_c = init_c.handle_response(&msg2_d, now, &mut msg3_c).unwrap();
    assert_eq!(
        resp_b.handle_finish(&only_message(&msg3_c), now).err(),
        Some(Error::Authentication)
    );
    assert_eq!(
        resp_d.handle_finish(&only_message(&msg3_a), now).err(),
        Some(Error::Authentication)
    );
}

#[test]
fn verified_proof_cache_never_accepts_other_bytes() {
    let (a, b, m) = (TestNode::new(1), TestNode::new(2), TestNode::new(3));
    let _ = connect(&a, &b, &mut Tap::default());
    assert_eq!(
        a.keys.verified_proofs(),
        1,
        "A remembers B's verified proof"
    );
    // B's proof, now cached at A, replayed by M with M's own static key: still refused.
    let (id, sig) = b.keys.proof_for_tests();
    let (init, msg1) = start(&a, request(&b, 5));
    let msg2 = evil_msg2(
        &m.keys.static_private,
        &prologue(&a.id(), &b.id(), SessionId(5)),
        &msg1,
        &proof_bytes(id, sig),
    );
    let mut out = Vec::new();
    assert_eq!(
        init.handle_response(&msg2, Instant::now(), &mut out).err(),
        Some(Error::BadIdentityProof)
    );
    assert!(out.is_empty());
    // A second honest handshake completes from the cache without adding an entry; the
    // failed proof was never added.
    let (ca, cb) = connect(&a, &b, &mut Tap::default());
    assert_eq!((ca.peer(), cb.peer()), (b.id(), a.id()));
    assert_eq!(a.keys.verified_proofs(), 1);
}
