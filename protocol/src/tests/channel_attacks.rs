//! The relay-blindness and tampering rows of `ATTACKS.md` on an established channel.

use proptest::prelude::*;

use super::*;

fn pair() -> (Channel, Channel) {
    connect(&TestNode::new(1), &TestNode::new(2), &mut Tap::default())
}

fn three_frames(ca: &mut Channel) -> Vec<Vec<u8>> {
    let mut msgs = seal(ca, b"one");
    msgs.extend(seal(ca, b"two"));
    msgs.extend(seal(ca, b"three"));
    msgs
}

#[test]
fn bit_flip_anywhere_in_a_frame_closes_the_channel() {
    let first_len = 2 + 16 + 1 + 5;
    for bit in 0..first_len * 8 {
        let (mut ca2, mut cb2) = pair();
        let mut wire = Vec::new();
        let _ = ca2.seal(b"first", &mut wire);
        let _ = ca2.seal(b"second", &mut wire);
        let _ = ca2.seal_close(&mut wire);
        wire[bit / 8] ^= 1 << (bit % 8);
        let (delivered, err) = drive(&mut cb2, &wire);
        assert!(delivered.is_empty(), "bit {bit}: delivered {delivered:?}");
        let err = err.unwrap_or_else(|| panic!("bit {bit}: no error"));
        assert!(
            matches!(
                err,
                Error::Authentication
                    | Error::TooLarge { .. }
                    | Error::Truncated
                    | Error::Malformed { .. }
            ),
            "bit {bit}: {err:?}"
        );
    }
}

/// Feeds a raw byte stream through a deframer into the channel, as a node's reader does.
fn drive(to: &mut Channel, wire: &[u8]) -> (Vec<u8>, Option<Error>) {
    let mut d = Deframer::new(65_535);
    let mut delivered = Vec::new();
    let mut rest = wire;
    loop {
        loop {
            match d.next_message() {
                Ok(Some(m)) => {
                    if let Err(e) = to.open(m, &mut delivered) {
                        return (delivered, Some(e));
                    }
                }
                Ok(None) => break,
                Err(e) => return (delivered, Some(e)),
            }
        }
        if rest.is_empty() {
            let end = d.finish().and_then(|()| to.finish());
            return (delivered, end.err());
        }
        let n = d.push(rest);
        rest = &rest[n..];
    }
}

#[test]
fn dropped_frame_closes_the_channel() {
    let (mut ca, mut cb) = pair();
    let msgs = three_frames(&mut ca);
    let (got, err) = open_all(&mut cb, &[msgs[0].clone(), msgs[2].clone()]);
    assert_eq!(
        (got.as_slice(), err),
        (&b"one"[..], Some(Error::Authentication))
    );
}

#[test]
fn duplicated_frame_closes_the_channel() {
    let (mut ca, mut cb) = pair();
    let msgs = three_frames(&mut ca);
    let (got, err) = open_all(
        &mut cb,
        &[msgs[0].clone(), msgs[0].clone(), msgs[1].clone()],
    );
    assert_eq!(
        (got.as_slice(), err),
        (&b"one"[..], Some(Error::Authentication))
    );
}

#[test]
fn reordered_frames_close_the_channel() {
    let (mut ca, mut cb) = pair();
    let msgs = three_frames(&mut ca);
    let (got, err) = open_all(&mut cb, &[msgs[1].clone(), msgs[0].clone()]);
    assert_eq!(
        (got.as_slice(), err),
        (&b""[..], Some(Error::Authentication))
    );
}

#[test]
fn nothing_is_delivered_after_an_error() {
    let (mut ca, mut cb) = pair();
    let msgs = three_frames(&mut ca);
    let mut bad = msgs[0].clone();
    bad[5] ^= 0x80;
    let mut out = Vec::new();
    assert_eq!(cb.open(&bad, &mut out), Err(Error::Authentication));
    // The genuine frame that follows is refused too: the channel is dead.
    assert_eq!(cb.open(&msgs[0], &mut out), Err(Error::Closed));
    assert!(out.is_empty());
    let mut w = Vec::new();
    assert_eq!(cb.seal(b"x", &mut w), Err(Error::Closed));
}

#[test]
fn truncation_without_close_frame_is_an_error() {
    let (mut ca, mut cb) = pair();
    let mut wire = Vec::new();
    for chunk in [&b"a"[..], b"b", b"c"] {
        ca.seal(chunk, &mut wire).unwrap();
    }
    let full_len = wire.len();
    ca.seal_close(&mut wire).unwrap();
    // The relay cleanly ends the stream after 3 of 4 frames: data, but Truncated.
    let (got, err) = drive(&mut cb, &wire[..full_len]);
    assert_eq!((got.as_slice(), err), (&b"abc"[..], Some(Error::Truncated)));
    // Cut mid-frame: also Truncated.
    let (mut ca, mut cb) = pair();
    let mut wire = Vec::new();
    let _ = ca.seal(b"abc", &mut wire);
    let (_, err) = drive(&mut cb, &wire[..wire.len() - 3]);
    assert_eq!(err, Some(Error::Truncated));
}

#[test]
fn close_frame_ends_cleanly_and_nothing_follows() {
    let (mut ca, mut cb) = pair();
    let mut wire = Vec::new();
    let _ = ca.seal(b"abc", &mut wire);
    let _ = ca.seal_close(&mut wire);
    let (got, err) = drive(&mut cb, &wire);
    assert_eq!((got.as_slice(), err), (&b"abc"[..], None));
    assert_eq!(ca.seal(b"more", &mut Vec::new()), Err(Error::Closed));
}

#[test]
fn frames_spliced_between_sessions_fail() {
    let (a, b) = (TestNode::new(1), TestNode::new(2));
    let (mut s1a, _s1b) = connect(&a, &b, &mut Tap::default());
    let (_s2a, mut s2b) = connect(&a, &b, &mut Tap::default());
    let msgs = seal(&mut s1a, b"for session one");
    let (got, err) = open_all(&mut s2b, &msgs);
    assert_eq!((got.len(), err), (0, Some(Error::Authentication)));
}

#[test]
fn frames_reflected_to_their_sender_fail() {
    let (mut ca, _cb) = pair();
    let msgs = seal(&mut ca, b"to b");
    let (got, err) = open_all(&mut ca, &msgs);
    assert_eq!((got.len(), err), (0, Some(Error::Authentication)));
}

#[test]
fn oversize_frame_is_refused_by_the_deframer() {
    let mut d = Deframer::new(1000);
    d.push(&[0x03, 0xe9]); // 1001
    assert_eq!(
        d.next_message(),
        Err(Error::TooLarge {
            what: "frame",
            len: 1001,
            max: 1000
        })
    );
}

#[test]
fn rekey_is_transparent_and_happens_on_schedule() {
    let (a, b) = (TestNode::new(1), TestNode::new(2));
    let (mut ca, mut cb) = connect(&a, &b, &mut Tap::default());
    ca.limits.rekey_after = 3;
    let mut msgs = Vec::new();
    for i in 0..10u8 {
        msgs.extend(seal(&mut ca, &[i]));
    }
    // 10 data frames + a rekey frame after every 3.
    assert_eq!(msgs.len(), 13);
    let (got, err) = open_all(&mut cb, &msgs);
    assert_eq!((got, err), ((0..10).collect::<Vec<u8>>(), None));
    // A frame from before a rekey does not open after it (keys really changed): replay fails.
    let (got, err) = open_all(&mut cb, &msgs[..1]);
    assert_eq!((got.len(), err), (0, Some(Error::Authentication)));
}

#[test]
fn nonce_exhaustion_closes_cleanly_without_wrapping() {
    let (mut ca, mut cb) = pair();
    ca.limits.max_messages = 4;
    let mut wire = Vec::new();
    for _ in 0..3 {
        assert_eq!(ca.seal(b"x", &mut wire), Ok(()));
    }
    assert_eq!(ca.seal(b"x", &mut wire), Err(Error::NonceExhausted));
    let mut ca_closed = Vec::new();
    // The sender is now dead; the receiver with the same cap refuses a 5th message.
    assert_eq!(ca.seal_close(&mut ca_closed), Err(Error::Closed));
    cb.limits.max_messages = 3;
    let msgs = messages(&wire);
    let (got, err) = open_all(&mut cb, &msgs);
    assert_eq!((got.len(), err), (3, None));
    let (mut ca, _) = pair();
    ca.limits.max_messages = 2;
    assert_eq!(ca.seal(b"x", &mut Vec::new()), Ok(()));
    assert_eq!(ca.seal(b"x", &mut Vec::new()), Err(Error::NonceExhausted));
}

#[test]
fn close_frame_is_always_possible_at_the_limit() {
    let (mut ca, mut cb) = pair();
    ca.limits.max_messages = 3;
    let mut wire = Vec::new();
    assert_eq!(ca.seal(b"ab", &mut wire), Ok(()));
    assert_eq!(ca.seal(b"c", &mut wire), Ok(()));
    assert_eq!(ca.seal_close(&mut wire), Ok(()));
    let (got, err) = drive(&mut cb, &wire);
    assert_eq!((got.as_slice(), err), (&b"abc"[..], None));
}

#[test]
fn large_writes_are_chunked_into_max_size_frames() {
    let (mut ca, mut cb) = pair();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let msgs = seal(&mut ca, &data);
    assert_eq!(msgs.len(), 4);
    assert!(msgs.iter().all(|m| m.len() <= 65_535));
    let (got, err) = open_all(&mut cb, &msgs);
    assert_eq!(err, None);
    assert!(got == data);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_payloads_round_trip_both_ways(
        len in prop_oneof![0usize..2048, 0usize..(4 << 20)],
        seed in any::<u8>(),
        chunk in 1usize..100_000,
    ) {
        let (mut ca, mut cb) = pair();
        let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
        for (tx, rx) in [(&mut ca, &mut cb)] {
            let mut wire = Vec::new();
            for part in data.chunks(chunk) {
                tx.seal(part, &mut wire).map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
            tx.seal_close(&mut wire).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let (got, err) = drive(rx, &wire);
            prop_assert_eq!(err, None);
            prop_assert!(got == data);
        }
        let mut wire = Vec::new();
        cb.seal(&data, &mut wire).map_err(|e| TestCaseError::fail(e.to_string()))?;
        cb.seal_close(&mut wire).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let (got, err) = drive(&mut ca, &wire);
        prop_assert_eq!(err, None);
        prop_assert!(got == data);
    }
}
