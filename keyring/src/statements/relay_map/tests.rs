use super::*;
use nullport_protocol::Identity;

fn relay(seed: u8, port: u16) -> RelayEntry {
    RelayEntry {
        node_id: Identity::from_seed([seed; 32]).node_id(),
        addrs: vec![format!("127.0.0.1:{port}")],
        region: Some(format!("r{seed}")),
    }
}

fn map(admin: &Identity, version: u64) -> RelayMap {
    RelayMap {
        admin: admin.node_id(),
        version,
        issued: 1_800_000_000,
        relays: vec![relay(3, 7003), relay(1, 7001), relay(2, 7002)],
    }
}

#[test]
fn a_signed_map_verifies_only_under_its_admin_and_unaltered() {
    let admin = Identity::from_seed([9; 32]);
    let signed = map(&admin, 1).sign(&admin).unwrap();
    let got = RelayMap::verify(&signed, &admin.node_id()).unwrap();
    assert_eq!(got.version, 1);
    // Sorted by key on signing.
    assert!(
        got.relays
            .windows(2)
            .all(|w| w[0].node_id.as_bytes() < w[1].node_id.as_bytes())
    );

    let other = Identity::from_seed([8; 32]);
    assert!(matches!(
        RelayMap::verify(&signed, &other.node_id()),
        Err(RelayMapError::WrongAdmin { .. })
    ));
    // Every single bit flip of the body or the signature is refused.
    for i in 0..signed.body.len() {
        let mut bad = signed.clone();
        bad.body[i] ^= 0x01;
        assert!(
            RelayMap::verify(&bad, &admin.node_id()).is_err(),
            "body byte {i}"
        );
    }
    for i in 0..64 {
        let mut bad = signed.clone();
        bad.sig.0[i] ^= 0x80;
        assert_eq!(
            RelayMap::verify(&bad, &admin.node_id()),
            Err(RelayMapError::BadSignature),
            "sig byte {i}"
        );
    }
    // Truncated and extended bodies.
    let mut short = signed.clone();
    short.body.pop();
    assert!(RelayMap::verify(&short, &admin.node_id()).is_err());
    let mut long = signed.clone();
    long.body.push(0);
    assert_eq!(
        RelayMap::verify(&long, &admin.node_id()),
        Err(RelayMapError::Malformed("trailing bytes"))
    );
}

#[test]
fn a_key_other_than_the_maps_admin_cannot_sign_it() {
    let admin = Identity::from_seed([9; 32]);
    let mallory = Identity::from_seed([7; 32]);
    assert!(matches!(
        map(&admin, 1).sign(&mallory),
        Err(RelayMapError::WrongAdmin { .. })
    ));
}

#[test]
fn unsorted_repeated_empty_or_unbounded_maps_are_refused() {
    let admin = Identity::from_seed([9; 32]);
    let id = admin.node_id();
    let sign_raw = |m: &RelayMap| {
        let body = postcard::to_stdvec(m).unwrap();
        let sig = Signature(admin.sign(domain::RELAY_MAP_V1, &body));
        SignedRelayMap { body, sig }
    };
    let mut unsorted = map(&admin, 1);
    unsorted
        .relays
        .sort_by(|a, b| b.node_id.as_bytes().cmp(a.node_id.as_bytes()));
    assert!(matches!(
        RelayMap::verify(&sign_raw(&unsorted), &id),
        Err(RelayMapError::Malformed(_))
    ));
    let mut twice = map(&admin, 1);
    twice.relays = vec![relay(1, 1), relay(1, 2)];
    assert!(twice.clone().sign(&admin).is_err());
    assert!(RelayMap::verify(&sign_raw(&twice), &id).is_err());
    let mut empty = map(&admin, 1);
    empty.relays.clear();
    assert!(empty.sign(&admin).is_err());
    for bad_addr in ["", "host", "host:0", "host:99999", "::1:7", "a b:1", "h:+1"] {
        let mut m = map(&admin, 1);
        m.relays[0].addrs = vec![bad_addr.to_owned()];
        assert!(m.sign(&admin).is_err(), "{bad_addr:?}");
    }
    let mut many = map(&admin, 1);
    many.relays = (0..=MAX_RELAYS as u8).map(|i| relay(i + 10, 1)).collect();
    assert!(many.sign(&admin).is_err());
    let mut oversized = sign_raw(&map(&admin, 1));
    oversized.body = vec![0; MAX_MAP_BYTES + 1];
    assert!(RelayMap::verify(&oversized, &id).is_err());
}

#[test]
fn only_a_newer_map_replaces_the_one_held() {
    let admin = Identity::from_seed([9; 32]);
    let v2 = map(&admin, 2);
    assert_eq!(v2.accepts(&map(&admin, 3)), Ok(true));
    assert_eq!(v2.accepts(&v2.clone()), Ok(false));
    assert_eq!(
        v2.accepts(&map(&admin, 1)),
        Err(RelayMapError::Stale { got: 1, held: 2 })
    );
    let mut same_version_other_content = map(&admin, 2);
    same_version_other_content.relays.pop();
    assert!(v2.accepts(&same_version_other_content).is_err());
}

#[test]
fn rendezvous_order_is_stable_and_moves_only_the_lost_relays_nodes() {
    let relays: Vec<RelayEntry> = (1..=3).map(|i| relay(i, 7000 + u16::from(i))).collect();
    let nodes: Vec<NodeId> = (0..3000u32)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[..4].copy_from_slice(&i.to_be_bytes());
            seed[31] = 0xAA;
            Identity::from_seed(seed).node_id()
        })
        .collect();
    let home = |n: &NodeId, rs: &[RelayEntry]| rendezvous_order(n, rs)[0].node_id;
    // Spread: each relay is home to roughly a third.
    for r in &relays {
        let count = nodes
            .iter()
            .filter(|n| home(n, &relays) == r.node_id)
            .count();
        assert!((800..1200).contains(&count), "{count}");
    }
    // Removing relay 2 moves exactly its own nodes; everyone else keeps their home.
    let lost = relays[1].node_id;
    let remaining: Vec<RelayEntry> = relays
        .iter()
        .filter(|r| r.node_id != lost)
        .cloned()
        .collect();
    for n in &nodes {
        let before = home(n, &relays);
        let after = home(n, &remaining);
        if before == lost {
            // Its second choice in the full order.
            assert_eq!(after, rendezvous_order(n, &relays)[1].node_id);
        } else {
            assert_eq!(after, before);
        }
    }
    // Order does not depend on the order of the list.
    let mut reversed = relays.clone();
    reversed.reverse();
    for n in nodes.iter().take(100) {
        let a: Vec<NodeId> = rendezvous_order(n, &relays)
            .iter()
            .map(|r| r.node_id)
            .collect();
        let b: Vec<NodeId> = rendezvous_order(n, &reversed)
            .iter()
            .map(|r| r.node_id)
            .collect();
        assert_eq!(a, b);
    }
}

#[test]
fn bootstrap_strings_round_trip_and_bad_ones_say_why() {
    let admin = Identity::from_seed([9; 32]).node_id();
    let relay_id = Identity::from_seed([1; 32]).node_id();
    for addr in ["relay.example.net:7443", "[::1]:7443", "127.0.0.1:1"] {
        let text = format!("fleet:{admin}/{relay_id}@{addr}");
        let b: FleetBootstrap = text.parse().unwrap();
        assert_eq!(b.admin, admin);
        assert_eq!(b.relay, relay_id);
        assert_eq!(b.to_string(), text);
    }
    for bad in [
        format!("{admin}/{relay_id}@h:1"),
        format!("fleet:{admin}{relay_id}@h:1"),
        format!("fleet:{admin}/{relay_id}h:1"),
        format!("fleet:np00/{relay_id}@h:1"),
        format!("fleet:{admin}/{relay_id}@h"),
        format!("fleet:{admin}/{relay_id}@::1:7"),
    ] {
        assert!(
            matches!(
                bad.parse::<FleetBootstrap>(),
                Err(RelayMapError::Bootstrap { .. })
            ),
            "{bad}"
        );
    }
}
