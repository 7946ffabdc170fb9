//! Resumed opens that act at once: what a relay can do with an R1 it says failed (forged
//! REFUSED, "not here" and a retry elsewhere), and the first bytes R1 carries.

use std::time::{Duration, Instant};

use super::*;

#[test]
fn a_forged_refused_then_the_withheld_r1_takes_effect_at_most_once() {
    // The relay answers a resumed open with a forged REFUSED, keeps R1, lets the caller run
    // the full handshake (which names the R1 it replaces), and delivers R1 as well.
    let now = Instant::now();
    // Order 1: the full handshake reaches the callee first; the late R1 is then a replay.
    let (a, b) = pair();
    let (opening, r1) = open(&a, &b, 12, now);
    let given_up = opening.given_up();
    let (retry, msg1) = refused(opening, &a, now);
    let (verdict, req) = finish_full(retry, &msg1, (&a, &b), 12, now);
    assert!(!req.is_duplicate());
    let (_, _, _) = crate::tests::accept_both(verdict, req);
    assert!(given_up.is_some());
    assert!(matches!(
        answer(&b, a.id(), 12, &r1, now),
        Err(Error::Replayed)
    ));
    // Order 2: the withheld R1 reaches the callee first and takes effect; the full
    // handshake that replaces it is then a duplicate, denied, and the caller learns why.
    let (a, b) = pair();
    let (opening, r1) = open(&a, &b, 13, now);
    let (retry, msg1) = refused(opening, &a, now);
    let first = opened(
        answer(&b, a.id(), 13, &r1, now)
            .unwrap_or_else(|e| panic!("{e}"))
            .0,
    );
    assert!(!first.is_duplicate());
    let (verdict, req) = finish_full(retry, &msg1, (&a, &b), 13, now);
    assert!(req.is_duplicate());
    let mut out = Vec::new();
    req.deny(DenyReason::Duplicate, &mut out)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        verdict.handle_verdict(&only_message(&out), now),
        Err(Error::Denied {
            reason: DenyReason::Duplicate
        })
    ));
}

#[test]
fn an_open_on_another_relay_burns_the_given_up_r1_or_is_its_duplicate() {
    // A relay said "offline" (or reset the dial) after taking R1; the dial goes on through
    // another relay with a new resumed open that names the first.
    let now = Instant::now();
    let (a, b) = pair();
    let (first, r1) = open(&a, &b, 14, now);
    let given_up = [first.given_up().unwrap_or_else(|| panic!("resumed"))];
    let early = Early {
        first: b"",
        replaces: &given_up,
    };
    let (second, r1b) = open_with(&a, &b, 15, early, now);
    assert!(second.is_resumed(), "same ticket: still resumed");
    let req = opened(
        answer(&b, a.id(), 15, &r1b, now)
            .unwrap_or_else(|e| panic!("{e}"))
            .0,
    );
    assert!(!req.is_duplicate());
    assert!(matches!(
        answer(&b, a.id(), 14, &r1, now),
        Err(Error::Replayed)
    ));
    // The other order: the first relay delivered R1 after all; the second open is its
    // duplicate.
    let (a, b) = pair();
    let (first, r1) = open(&a, &b, 16, now);
    let given_up = [first.given_up().unwrap_or_else(|| panic!("resumed"))];
    // Still undecided at the callee (its application may act on it): counts as taken.
    let undecided = opened(
        answer(&b, a.id(), 16, &r1, now)
            .unwrap_or_else(|e| panic!("{e}"))
            .0,
    );
    let early = Early {
        first: b"",
        replaces: &given_up,
    };
    let (_, r1b) = open_with(&a, &b, 17, early, now);
    let req = opened(
        answer(&b, a.id(), 17, &r1b, now)
            .unwrap_or_else(|e| panic!("{e}"))
            .0,
    );
    assert!(req.is_duplicate());
    assert!(matches!(req.accept(&mut Vec::new()), Err(Error::Duplicate)));
    drop(undecided);
    // A given-up open under another ticket than the live one makes the next open full.
    let other = [Replaced {
        id: [0xee; TICKET_ID_LEN],
        counter: 1,
    }];
    let early = Early {
        first: b"",
        replaces: &other,
    };
    assert!(!open_with(&a, &b, 18, early, now).0.is_resumed());
}

#[test]
fn the_first_bytes_ride_in_r1_and_reach_the_callee_only_through_its_request() {
    let (a, b) = pair();
    let now = Instant::now();
    let early = Early {
        first: b"first request",
        replaces: &[],
    };
    let (opening, r1) = open_with(&a, &b, 22, early, now);
    assert!(opening.carried_first());
    let (resumed, r2) = answer(&b, a.id(), 22, &r1, now).unwrap_or_else(|e| panic!("{e}"));
    let mut request = opened(resumed);
    let verdict = caller_reads_r2(opening, &a, &r2);
    assert!(!verdict.wants_first(), "sent once, in R1");
    assert_eq!(request.take_first(), b"first request");
    let (mut caller, mut callee, _) = crate::tests::accept_both(verdict, request);
    let (back, err) = open_all(&mut caller, &seal(&mut callee, b"answer"));
    assert_eq!((back.as_slice(), err), (&b"answer"[..], None));
    // More than fits in R1 goes after R2 instead, as one frame.
    let big = vec![7u8; MAX_R1_LEN];
    let early = Early {
        first: &big,
        replaces: &[],
    };
    let (opening, r1) = open_with(&a, &b, 23, early, now);
    assert!(opening.is_resumed() && !opening.carried_first());
    assert!(r1.len() < 200);
}

#[test]
fn a_given_up_r1_the_callee_did_not_accept_is_no_duplicate() {
    // The callee denied the R1 (or dropped it undecided, or could not send R2), and the
    // relay kept the answer from the caller: that R1 took no effect, so the dial's next
    // open that names it is decided afresh, not denied as a duplicate.
    let now = Instant::now();
    for deny in [true, false] {
        let (a, b) = pair();
        let (first, r1) = open(&a, &b, 40, now);
        let given_up = [first.given_up().unwrap_or_else(|| panic!("resumed"))];
        let req = opened(
            answer(&b, a.id(), 40, &r1, now)
                .unwrap_or_else(|e| panic!("{e}"))
                .0,
        );
        if deny {
            req.deny(DenyReason::NotAllowed, &mut Vec::new())
                .unwrap_or_else(|e| panic!("{e}"));
        } else {
            drop(req);
        }
        let early = Early {
            first: b"",
            replaces: &given_up,
        };
        let (_, r1b) = open_with(&a, &b, 41, early, now);
        let req = opened(
            answer(&b, a.id(), 41, &r1b, now)
                .unwrap_or_else(|e| panic!("{e}"))
                .0,
        );
        assert!(!req.is_duplicate(), "deny: {deny}");
        // The given-up R1 itself stays spent.
        assert!(matches!(
            answer(&b, a.id(), 40, &r1, now),
            Err(Error::Replayed)
        ));
    }
}

#[test]
fn a_given_up_r1_that_took_effect_is_remembered_after_its_ticket_expires_or_is_evicted() {
    // R1 took effect, the relay forged REFUSED and held the caller's full handshake back
    // until the callee's ticket expired (or four newer full handshakes evicted it): the
    // retired ticket's record still makes the full handshake a duplicate.
    for evict in [false, true] {
        let (a, b) = pair();
        let lifetime = Limits::default().resume_lifetime;
        // Near the end of the ticket's life, unless it is evicted.
        let at = if evict {
            Instant::now()
        } else {
            Instant::now() + lifetime - Duration::from_secs(2)
        };
        let (opening, r1) = open(&a, &b, 50, at);
        let (retry, msg1) = refused(opening, &a, at);
        let mut taken = opened(
            answer(&b, a.id(), 50, &r1, at)
                .unwrap_or_else(|e| panic!("{e}"))
                .0,
        );
        let _ = taken.take_first();
        let mut out = Vec::new();
        let _callee = taken.accept(&mut out).unwrap_or_else(|e| panic!("{e}"));
        if evict {
            for _ in 0..4 {
                let _ = crate::tests::connect(&a, &b, &mut crate::tests::Tap::default());
            }
        }
        // The full handshake, held back 3 s: past the ticket's expiry.
        let (_, req) = finish_full(retry, &msg1, (&a, &b), 50, at + Duration::from_secs(3));
        assert!(req.is_duplicate(), "evict: {evict}");
    }
}

#[test]
fn a_message_3_held_back_does_not_make_later_r1s_look_fresher() {
    // The callee's secret is born when its message 2 leaves, before the caller's can be:
    // holding message 3 back does not shift the callee's clock of the secret.
    let (a, b) = (TestNode::new(1), TestNode::new(2));
    let t0 = Instant::now();
    let mut out = Vec::new();
    let init = Initiator::start(&a.keys, request(&b, 60), Limits::default(), t0, &mut out)
        .unwrap_or_else(|e| panic!("{e}"));
    let resp = Responder::new(&b.keys, a.id(), SessionId(60), Limits::default(), t0)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut m2 = Vec::new();
    let resp = resp
        .handle_hello(&only_message(&out), t0, &mut m2)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut m3 = Vec::new();
    let verdict = init
        .handle_response(&only_message(&m2), t0, &mut m3)
        .unwrap_or_else(|e| panic!("{e}"));
    // Message 3 held back 9 s by the relay.
    let held = t0 + Duration::from_secs(9);
    let req = resp
        .handle_finish(&only_message(&m3), held)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut v = Vec::new();
    let _ = req.accept(&mut v);
    let _ = verdict.handle_verdict(&only_message(&v), held);
    // An R1 made at t0 + 1 s and held 4.9 s more: 13.9 s after the full handshake.
    let (_, r1) = open(&a, &b, 61, t0 + Duration::from_secs(1));
    let late = t0 + Duration::from_millis(5_900) + Duration::from_secs(9);
    assert!(matches!(
        answer(&b, a.id(), 61, &r1, late),
        Ok((Resumed::Refused, _))
    ));
}

#[test]
fn a_counter_burned_before_use_is_no_duplicate_when_named_again() {
    // The relay withholds R1#1 and says it failed; R1#2 names #1 (burned: never used) and is
    // reset before the callee decides (undone); the dial's third open names both. Neither
    // took effect, so the third is no duplicate. (Found by the second review.)
    let now = Instant::now();
    let (a, b) = pair();
    let (first, r1_withheld) = open(&a, &b, 70, now);
    let g1 = first.given_up().unwrap_or_else(|| panic!("resumed"));
    let list1 = [g1];
    let early = Early {
        first: b"",
        replaces: &list1,
    };
    let (second, r1b) = open_with(&a, &b, 71, early, now);
    let g2 = second.given_up().unwrap_or_else(|| panic!("resumed"));
    drop(opened(
        answer(&b, a.id(), 71, &r1b, now)
            .unwrap_or_else(|e| panic!("{e}"))
            .0,
    ));
    let list2 = [g1, g2];
    let early = Early {
        first: b"",
        replaces: &list2,
    };
    let (_, r1c) = open_with(&a, &b, 72, early, now);
    let req = opened(
        answer(&b, a.id(), 72, &r1c, now)
            .unwrap_or_else(|e| panic!("{e}"))
            .0,
    );
    assert!(!req.is_duplicate());
    assert!(matches!(
        answer(&b, a.id(), 70, &r1_withheld, now),
        Err(Error::Replayed)
    ));
}

#[test]
fn another_callers_churn_cannot_flush_a_given_up_r1_that_took_effect() {
    // A peer the callee accepts cycles 4,200 full handshakes while a relay stretches a dial
    // whose R1 took effect under a ticket that has since expired: the victim's record stays
    // (records are bounded per caller first), so the dial's full handshake is a duplicate.
    // (Found by the second review.)
    let (a, b) = pair();
    let lifetime = Limits::default().resume_lifetime;
    let at = Instant::now() + lifetime - Duration::from_secs(2);
    let (opening, r1) = open(&a, &b, 80, at);
    let (retry, msg1) = refused(opening, &a, at);
    let mut taken = opened(
        answer(&b, a.id(), 80, &r1, at)
            .unwrap_or_else(|e| panic!("{e}"))
            .0,
    );
    let _ = taken.take_first();
    let _callee = taken
        .accept(&mut Vec::new())
        .unwrap_or_else(|e| panic!("{e}"));
    let t = at + Duration::from_secs(3);
    b.keys.sessions().sweep(t);
    let attacker = crate::Identity::from_seed([9; 32]).node_id();
    for i in 0u32..4200 {
        let mut id = [0u8; TICKET_ID_LEN];
        id[..4].copy_from_slice(&i.to_be_bytes());
        id[15] = 0xaa;
        b.keys.sessions().store_incoming(
            attacker,
            id,
            zeroize::Zeroizing::new([1; 32]),
            (t, t + lifetime),
            retired::RETIRED_FOR,
        );
    }
    let (_, req) = finish_full(retry, &msg1, (&a, &b), 80, t);
    assert!(req.is_duplicate(), "the victim's record was flushed");
}

#[test]
fn a_record_dropped_early_makes_its_callers_unknown_tickets_count_as_taken() {
    // When records must be dropped before their time (one caller's own churn beyond its
    // share), that caller's given-up R1s under unknown tickets count as having taken effect
    // until the dropped record's time is over: a false duplicate at worst, never a second
    // effect.
    let cache = SessionCache::default();
    let caller = crate::Identity::from_seed([3; 32]).node_id();
    let other = crate::Identity::from_seed([4; 32]).node_id();
    let t = Instant::now();
    let life = Duration::from_secs(600);
    for i in 0u8..20 {
        cache.store_incoming(
            caller,
            [i + 1; TICKET_ID_LEN],
            zeroize::Zeroizing::new([1; 32]),
            (t, t + life),
            retired::RETIRED_FOR,
        );
    }
    // 4 live, 8 retired, 8 dropped early: their caller is marked.
    let unknown = [0xfe; TICKET_ID_LEN];
    assert_eq!(
        cache.burn(&caller, &unknown, 1, t),
        tickets::Burn::AlreadyUsed
    );
    assert_eq!(cache.burn(&other, &unknown, 1, t), tickets::Burn::NotHeld);
    let after = t + retired::RETIRED_FOR + Duration::from_secs(1);
    cache.sweep(after);
    assert_eq!(
        cache.burn(&caller, &unknown, 1, after),
        tickets::Burn::NotHeld
    );
}

#[test]
fn a_ticket_evicted_long_after_its_handshake_keeps_its_record_from_the_eviction() {
    // The callee's application took 200 s to accept a full handshake whose acceptance
    // evicted an older ticket of the same caller: that ticket's record is kept from the
    // eviction (the node's timer keeps the cache's clock current), not from the new
    // handshake's message 2. (Found by the second review.)
    let cache = SessionCache::default();
    let caller = crate::Identity::from_seed([3; 32]).node_id();
    let t = Instant::now();
    let life = Duration::from_secs(600);
    let ids: Vec<TicketId> = (0u8..5).map(|i| [i + 1; TICKET_ID_LEN]).collect();
    for id in &ids[..4] {
        cache.store_incoming(
            caller,
            *id,
            zeroize::Zeroizing::new([1; 32]),
            (t, t + life),
            retired::RETIRED_FOR,
        );
    }
    assert!(cache.mark_used(&ids[0], 5));
    let hello_at = t + Duration::from_secs(1);
    // The node's sweep timer runs meanwhile.
    cache.sweep(t + Duration::from_secs(195));
    cache.store_incoming(
        caller,
        ids[4],
        zeroize::Zeroizing::new([1; 32]),
        (hello_at, hello_at + life),
        retired::RETIRED_FOR,
    );
    let now = t + Duration::from_secs(200);
    assert_eq!(
        cache.burn(&caller, &ids[0], 5, now),
        tickets::Burn::AlreadyUsed
    );
}
