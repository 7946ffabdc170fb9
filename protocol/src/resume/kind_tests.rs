//! The two kinds of resumed open side by side: a callee that wants a DH, and callers that
//! learn it.

use std::time::Instant;

use super::*;

#[test]
fn a_callee_that_wants_a_dh_refuses_keyed_opens_and_takes_those_with_one() {
    let (a, b) = pair();
    let now = Instant::now();
    let wants_dh = Limits {
        resume_dh: true,
        ..Limits::default()
    };
    // A keyed R1 (the default) at a callee that wants a DH: refused unread, so the caller
    // runs the full handshake on the same stream and names it there; the refusal says why,
    // and the caller's later opens to that callee carry a DH though its own limits do not
    // ask for one.
    let (opening, r1) = open(&a, &b, 70, now);
    assert_eq!(r1[R1_HEADER_LEN - 1], KIND_KEYED);
    let mut out = Vec::new();
    assert!(matches!(
        respond(&b.keys, a.id(), SessionId(70), wants_dh, &r1, now, &mut out),
        Ok(Resumed::Refused)
    ));
    assert_eq!(only_message(&out), [REFUSED_WANTS_DH]);
    let mut msg1 = Vec::new();
    let Answered::Retry(retry) = opening
        .handle_response(&a.keys, &only_message(&out), now, &mut msg1)
        .unwrap_or_else(|e| panic!("{e}"))
    else {
        panic!("no retry");
    };
    let (verdict, req) = finish_full(*retry, &only_message(&msg1), (&a, &b), 70, now);
    let mut out = Vec::new();
    let _ = req.accept(&mut out);
    assert!(verdict.handle_verdict(&only_message(&out), now).is_ok());
    let (_, r1) = open(&a, &b, 72, now);
    assert_eq!(r1[R1_HEADER_LEN - 1], KIND_DH, "the caller remembered");
    let mut out = Vec::new();
    assert!(matches!(
        respond(&b.keys, a.id(), SessionId(72), wants_dh, &r1, now, &mut out),
        Ok(Resumed::Opened(_))
    ));
    // ... until it forgets the peer: after the next full handshake, keyed again.
    a.keys.sessions().forget(&b.id());
    let (full, msg1) = open(&a, &b, 73, now);
    assert!(!full.is_resumed());
    let (verdict, req) = finish_full(full, &msg1, (&a, &b), 73, now);
    let mut out = Vec::new();
    let _ = req.accept(&mut out);
    assert!(verdict.handle_verdict(&only_message(&out), now).is_ok());
    let (_, r1) = open(&a, &b, 74, now);
    assert_eq!(r1[R1_HEADER_LEN - 1], KIND_KEYED);
    // A caller that wants a DH opens with one, and a callee with the default takes it.
    let mut out = Vec::new();
    let opening = Opening::start(
        &a.keys,
        request(&b, 71),
        Early::default(),
        wants_dh,
        now,
        &mut out,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let r1 = only_message(&out);
    assert_eq!(r1[R1_HEADER_LEN - 1], KIND_DH);
    let (resumed, r2) = answer(&b, a.id(), 71, &r1, now).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(only_message(&r2).len(), R2_LEN);
    let verdict = caller_reads_r2(opening, &a, &r2);
    let mut out = Vec::new();
    let mut callee = opened(resumed)
        .accept(&mut out)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut caller = verdict
        .handle_verdict(&only_message(&out), now)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(caller.handshake_hash(), callee.handshake_hash());
    let wire = seal(&mut caller, b"over a DH");
    assert_eq!(open_all(&mut callee, &wire), (b"over a DH".to_vec(), None));
}
