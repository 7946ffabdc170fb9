//! The resumption cache's bounds, expiry and replay window.
use super::*;
use crate::resume::record::ReplayWindow;
use crate::resume::retired::RETIRED_FOR;

#[test]
fn replay_window_accepts_each_counter_once() {
    let mut w = ReplayWindow::default();
    assert!(!w.check_and_set(0), "0 is never valid");
    for c in [1, 3, 2, 10, 5, 4] {
        assert!(w.check_and_set(c), "{c} first time");
    }
    for c in [1, 2, 3, 4, 5, 10] {
        assert!(!w.check_and_set(c), "{c} again");
    }
    assert!(w.check_and_set(10 + REPLAY_WINDOW - 1));
    assert!(!w.check_and_set(9), "fell out of the window");
    assert!(w.check_and_set(11), "inside the window, unseen");
    assert!(w.check_and_set(5_000_000), "a jump past the window");
    assert!(!w.check_and_set(5_000_000));
    assert!(!w.check_and_set(11 + REPLAY_WINDOW), "far behind");
    assert!(w.check_and_set(5_000_000 - REPLAY_WINDOW + 1));
}

#[test]
fn replay_window_matches_a_set_model() {
    // Against a plain set model: accept iff unseen and within the window of the maximum.
    let mut w = ReplayWindow::default();
    let mut seen = std::collections::BTreeSet::new();
    let mut top = 0u64;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let c = (top + 64).saturating_sub(x % 1500).max(1);
        let expect = !seen.contains(&c) && (c > top || top - c < REPLAY_WINDOW);
        assert_eq!(w.check_and_set(c), expect, "counter {c}, top {top}");
        if expect {
            seen.insert(c);
            top = top.max(c);
        }
    }
}

fn secret(b: u8) -> Secret {
    Zeroizing::new([b; 32])
}

fn node(seed: u8) -> NodeId {
    crate::Identity::from_seed([seed; 32]).node_id()
}

#[test]
fn leases_count_up_and_expire() {
    let cache = SessionCache::default();
    let now = Instant::now();
    cache.store_outgoing(
        node(2),
        [7; 16],
        secret(1),
        (now, now + Duration::from_secs(5)),
    );
    let a = cache.lease(&node(2), now).map(|l| l.counter);
    let b = cache.lease(&node(2), now).map(|l| l.counter);
    assert_eq!((a, b), (Some(1), Some(2)));
    assert!(cache.lease(&node(3), now).is_none());
    assert!(
        cache
            .lease(&node(2), now + Duration::from_secs(5))
            .is_none(),
        "expired"
    );
    assert!(cache.lease(&node(2), now).is_none(), "and dropped");
}

#[test]
fn callee_keeps_a_few_tickets_per_caller_and_forgets_on_request() {
    let cache = SessionCache::default();
    let now = Instant::now();
    let later = now + Duration::from_secs(60);
    for i in 0..6u8 {
        cache.store_incoming(node(1), [i; 16], secret(i), (now, later), RETIRED_FOR);
    }
    cache.store_incoming(node(2), [100; 16], secret(9), (now, later), RETIRED_FOR);
    assert_eq!(cache.len(), (0, INCOMING_PER_CALLER + 1));
    assert!(
        matches!(cache.lookup(&[0; 16], now), Lookup::Unknown),
        "oldest evicted"
    );
    assert!(matches!(cache.lookup(&[5; 16], now), Lookup::Found { .. }));
    assert!(cache.mark_used(&[5; 16], 1));
    assert!(!cache.mark_used(&[5; 16], 1), "replay");
    cache.forget(&node(1));
    assert!(matches!(cache.lookup(&[5; 16], now), Lookup::Unknown));
    assert!(
        !cache.mark_used(&[5; 16], 2),
        "forgotten ticket marks nothing"
    );
    assert!(matches!(
        cache.lookup(&[100; 16], now),
        Lookup::Found { .. }
    ));
    assert!(
        matches!(cache.lookup(&[100; 16], later), Lookup::Unknown),
        "expired"
    );
    assert_eq!(cache.len(), (0, 0));
}

#[test]
fn callee_bound_holds_over_many_callers() {
    let cache = SessionCache::default();
    let now = Instant::now();
    let later = now + Duration::from_secs(60);
    for i in 0..(INCOMING_ENTRIES + 10) {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let mut seed = [1u8; 32];
        seed[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let caller = crate::Identity::from_seed(seed).node_id();
        cache.store_incoming(caller, id, secret(1), (now, later), RETIRED_FOR);
    }
    assert!(cache.len().1 <= INCOMING_ENTRIES);
    let order = cache
        .state
        .lock()
        .map(|s| s.incoming_order.len())
        .unwrap_or(0);
    assert!(
        order <= INCOMING_ENTRIES,
        "{order} ids in the eviction order"
    );
}

#[test]
fn one_caller_cycling_its_tickets_leaves_nothing_behind() {
    let cache = SessionCache::default();
    let now = Instant::now();
    for i in 0..20_000u64 {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&i.to_be_bytes());
        cache.store_incoming(
            node(1),
            id,
            secret(1),
            (now, now + Duration::from_secs(60)),
            RETIRED_FOR,
        );
    }
    let s = cache.state.lock().unwrap_or_else(|e| e.into_inner());
    assert_eq!(
        (s.incoming.len(), s.incoming_order.len(), s.per_caller.len()),
        (INCOMING_PER_CALLER, INCOMING_PER_CALLER, 1)
    );
}

#[test]
fn expired_secrets_are_dropped_by_a_sweep_and_by_use() {
    let cache = SessionCache::default();
    let now = Instant::now();
    let soon = now + Duration::from_millis(10);
    cache.store_outgoing(node(2), [1; 16], secret(1), (now, soon));
    cache.store_incoming(node(3), [2; 16], secret(2), (now, soon), RETIRED_FOR);
    assert_eq!(cache.len(), (1, 1));
    cache.sweep(soon);
    assert_eq!(cache.len(), (0, 0), "a sweep at expiry drops both");
    // Used after a second, the cache sweeps itself.
    cache.store_outgoing(node(2), [1; 16], secret(1), (now, soon));
    cache.store_incoming(node(3), [2; 16], secret(2), (now, soon), RETIRED_FOR);
    let later = now + Duration::from_secs(2);
    cache.store_incoming(
        node(4),
        [3; 16],
        secret(3),
        (later, later + Duration::from_secs(60)),
        RETIRED_FOR,
    );
    assert_eq!(cache.len(), (0, 1));
    let s = cache.state.lock().unwrap_or_else(|e| e.into_inner());
    assert_eq!((s.incoming_order.len(), s.per_caller.len()), (1, 1));
}

#[test]
fn a_callee_wanting_a_dh_is_remembered_for_a_while_and_never_locked_out() {
    let cache = SessionCache::default();
    let now = Instant::now();
    let lifetime = Duration::from_secs(600);
    let peer = |i: u32| {
        let mut seed = [7u8; 32];
        seed[..4].copy_from_slice(&i.to_be_bytes());
        crate::Identity::from_seed(seed).node_id()
    };
    let genuine = peer(0);
    cache.wants_dh(&genuine, now, now + lifetime);
    assert!(cache.wants_dh_for(&genuine, now));
    // A relay forges the refusal for more callees than the cache keeps, later: the oldest
    // (the genuine one, ending soonest) goes first, and it comes back with its next refusal.
    let later = now + Duration::from_secs(1);
    for i in 1..=MAX_WANTS_DH as u32 {
        cache.wants_dh(&peer(i), later, later + lifetime);
    }
    assert!(!cache.wants_dh_for(&genuine, later));
    cache.wants_dh(&genuine, later, later + lifetime);
    assert!(cache.wants_dh_for(&genuine, later));
    assert!(
        cache.state.lock().unwrap().wants_dh.len() <= MAX_WANTS_DH,
        "bounded"
    );
    // After its lifetime it is forgotten: the next open tries keyed again.
    assert!(!cache.wants_dh_for(&genuine, later + lifetime));
    cache.sweep(later + lifetime);
    assert!(cache.state.lock().unwrap().wants_dh.is_empty());
}
