//! First bytes sealed behind message 3 ([`AwaitingVerdict::seal_first`]): read by the callee
//! only after it accepts, dropped unread on a denial, and as tamper-proof as any frame.

use super::*;
use crate::DenyReason;
use crate::limits::MAX_FIRST_BYTES;

/// A full handshake up to the decision, with `first` sealed behind message 3: the caller's
/// verdict state, the callee's request and the first bytes' message(s) as a relay sees them.
fn until_decision_with(first: &[u8], session: u64) -> (AwaitingVerdict, Request, Vec<Vec<u8>>) {
    let (a, b) = (TestNode::new(1), TestNode::new(2));
    let now = Instant::now();
    let (mut verdict, request) = handshake_until_decision(
        &a,
        &b,
        super::request(&b, session),
        Limits::default(),
        now,
        &mut Tap::default(),
    )
    .unwrap_or_else(|e| panic!("handshake: {e}"));
    let mut out = Vec::new();
    verdict
        .seal_first(first, &mut out)
        .unwrap_or_else(|e| panic!("seal_first: {e}"));
    (verdict, request, messages(&out))
}

fn accept(verdict: AwaitingVerdict, request: Request) -> (Channel, Channel) {
    let (caller, callee, _) = accept_both(verdict, request);
    (caller, callee)
}

#[test]
fn first_bytes_are_the_callees_first_data_after_it_accepts() {
    let first: Vec<u8> = (0..=255u8).cycle().take(MAX_FIRST_BYTES).collect();
    let (verdict, request, early) = until_decision_with(&first, 7);
    assert_eq!(early.len(), 1, "one frame");
    let (mut caller, mut callee) = accept(verdict, request);
    // The callee opens the early frame as an ordinary first data frame, then what follows.
    let mut later = seal(&mut caller, b"after the verdict");
    let mut wire = early;
    wire.append(&mut later);
    let (delivered, err) = open_all(&mut callee, &wire);
    assert_eq!(err, None);
    let mut expected = first.clone();
    expected.extend_from_slice(b"after the verdict");
    assert_eq!(delivered, expected);
    // And the callee's answer reaches the caller as usual.
    let (back, err) = open_all(&mut caller, &seal(&mut callee, b"echo"));
    assert_eq!((back.as_slice(), err), (&b"echo"[..], None));
}

#[test]
fn a_denied_caller_learns_the_denial_and_its_first_bytes_stay_unread() {
    let (verdict, request, early) = until_decision_with(b"rm -rf /", 7);
    assert_eq!(early.len(), 1);
    let mut out = Vec::new();
    request
        .deny(DenyReason::NotAllowed, &mut out)
        .unwrap_or_else(|e| panic!("deny: {e}"));
    // Denying consumed the request: nothing is left that could open the early frame.
    assert!(matches!(
        verdict.handle_verdict(&only_message(&out), Instant::now()),
        Err(Error::Denied {
            reason: DenyReason::NotAllowed
        })
    ));
}

#[test]
fn first_bytes_are_bounded_sealed_once_and_empty_seals_nothing() {
    let (mut verdict, _request, _) = until_decision_with(b"", 7);
    let mut out = Vec::new();
    assert_eq!(
        verdict.seal_first(&vec![0; MAX_FIRST_BYTES + 1], &mut out),
        Err(Error::TooLarge {
            what: "first bytes of a dial",
            len: MAX_FIRST_BYTES + 1,
            max: MAX_FIRST_BYTES,
        })
    );
    assert!(out.is_empty());
    verdict
        .seal_first(b"one", &mut out)
        .unwrap_or_else(|e| panic!("{e}"));
    let sealed = out.len();
    assert_eq!(verdict.seal_first(b"two", &mut out), Err(Error::Closed));
    assert_eq!(
        out.len(),
        sealed,
        "nothing appended by the refused second call"
    );
}

#[test]
fn a_relay_cannot_move_drop_or_replay_first_bytes() {
    // Moved into another session's channel: fails to authenticate there.
    let (verdict, request, early) = until_decision_with(b"for session 7", 7);
    let (v8, r8, _) = until_decision_with(b"", 8);
    let (_c8, mut callee8) = accept(v8, r8);
    let (delivered, err) = open_all(&mut callee8, &early);
    assert_eq!((delivered.len(), err), (0, Some(Error::Authentication)));

    // Replayed: the second copy fails, nothing after it is delivered.
    let (mut caller, mut callee) = accept(verdict, request);
    let mut wire = vec![early[0].clone(), early[0].clone()];
    wire.extend(seal(&mut caller, b"later"));
    let (delivered, err) = open_all(&mut callee, &wire);
    assert_eq!(
        (delivered.as_slice(), err),
        (&b"for session 7"[..], Some(Error::Authentication))
    );

    // Dropped: the next frame does not authenticate in its place.
    let (verdict, request, _dropped) = until_decision_with(b"dropped", 9);
    let (mut caller, mut callee) = accept(verdict, request);
    let (delivered, err) = open_all(&mut callee, &seal(&mut caller, b"next"));
    assert_eq!((delivered.len(), err), (0, Some(Error::Authentication)));
}
