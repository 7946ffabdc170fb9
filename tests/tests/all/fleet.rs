//! A fleet of relays on loopback (three real relays, real QUIC, real nodes): homes by
//! rendezvous hashing, reaching callees homed on other relays, losing and regaining a relay,
//! planned stops, and maps that are forged, older, or leave a relay out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nullport_keyring::relay_map::{FleetBootstrap, RelayEntry, RelayMap};
use nullport_node::{Node, NodeConfig, NodeLimits};
use nullport_protocol::{Identity, NodeId};
use nullport_relay::testing::{Direction, Tamper, TamperMode, Tap, TestHooks};
use nullport_tests::fleet::TestFleet;
use nullport_tests::{RelayOptions, TestNet, fast_limits, pattern, send_to_sink, serve_echo, sink};

fn fleet_limits() -> NodeLimits {
    NodeLimits {
        home_settle: Duration::from_millis(1500),
        extra_link_idle: Duration::from_secs(1),
        relay_answer_timeout: Duration::from_secs(1),
        keep_alive: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(1500),
        ..fast_limits()
    }
}

/// Waits until `node` is homed on `relay`, returning how long that took.
async fn wait_home(node: &Node, relay: NodeId, within: Duration) -> Duration {
    let start = Instant::now();
    while node.home_relay() != Some(relay) {
        assert!(
            start.elapsed() < within,
            "node {} not homed on {} within {within:?} (home: {:?})",
            node.node_id(),
            relay,
            node.home_relay()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_spread_by_the_hash_and_reach_callees_homed_on_other_relays() {
    let fleet = TestFleet::start(3).await;
    // One caller homed on relay 0, callees homed on relays 1 and 2; all bootstrap via 0.
    let caller_id = fleet.homed_on(0, 1).remove(0);
    let mut callees = Vec::new();
    for home in [1, 2] {
        let id = fleet.homed_on(home, 1).remove(0);
        let node = fleet.node(id, 0, fleet_limits()).await;
        wait_home(&node, fleet.relay_id(home), Duration::from_secs(10)).await;
        callees.push(Arc::new(node));
    }
    let caller = fleet.node(caller_id, 0, fleet_limits()).await;
    wait_home(&caller, fleet.relay_id(0), Duration::from_secs(10)).await;
    assert!(
        caller.relay_map().is_some(),
        "the caller took the relay map"
    );
    // Each relay holds its own nodes (a callee moved off the bootstrap relay once settled
    // at home: its extra link there closes when idle).
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (i, callee) in callees.iter().enumerate() {
        let home = i + 1;
        assert!(fleet.relays[home].relay().is_online(&callee.node_id()));
        assert_eq!(callee.relay_links(), vec![(fleet.relay_id(home), true)]);
    }
    // Byte-exact transfers (SHA-256 checked by the sink) to both callees.
    for (i, callee) in callees.iter().enumerate() {
        let c = callee.clone();
        tokio::spawn(async move { sink(&c).await });
        let data = pattern(1 << 20, 7 + i as u64);
        send_to_sink(&caller, callee.node_id(), &data).await;
    }
    // The caller opened extra links to relays 1 and 2; they close once idle.
    let linked: Vec<NodeId> = caller.relay_links().into_iter().map(|(r, _)| r).collect();
    assert_eq!(linked.len(), 3, "home plus two extra links: {linked:?}");
    let start = Instant::now();
    while caller.relay_links().len() > 1 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "extra links not closed when idle"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(caller.relay_links(), vec![(fleet.relay_id(0), true)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_relay_moves_only_its_nodes_which_return_home_without_flapping() {
    nullport_tests::init_tracing();
    let mut fleet = TestFleet::start(3).await;
    let lost = 1;
    // Eight nodes homed on the relay that will be lost, two on each of the others.
    let mut nodes: Vec<(Arc<Node>, Vec<usize>)> = Vec::new();
    for (home, count) in [(0usize, 2usize), (1, 8), (2, 2)] {
        for id in fleet.homed_on(home, count) {
            let order = fleet.order(&id.node_id());
            let node = Arc::new(fleet.node(id, 0, fleet_limits()).await);
            let serving = node.clone();
            tokio::spawn(async move { sink(&serving).await });
            nodes.push((node, order));
        }
    }
    for (node, order) in &nodes {
        wait_home(node, fleet.relay_id(order[0]), Duration::from_secs(10)).await;
    }
    // A transfer between nodes homed on the two other relays runs across the loss.
    let a = nodes[0].0.clone();
    let b = nodes[nodes.len() - 1].0.node_id();
    let across = tokio::spawn(async move {
        let data = pattern(8 << 20, 11);
        send_to_sink(&a, b, &data).await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Lose relay 1.
    let lost_at = Instant::now();
    if let Some(relay) = fleet.relays[lost].relay.take() {
        relay.shutdown().await;
    }
    let mut failover = Vec::new();
    for (node, order) in &nodes {
        if order[0] == lost {
            let moved = wait_home(node, fleet.relay_id(order[1]), Duration::from_secs(10)).await;
            // Reachable there from a node homed elsewhere, within the same bound.
            send_to_sink(&nodes[0].0, node.node_id(), &pattern(4096, 5)).await;
            failover.push(moved.max(lost_at.elapsed()));
        } else {
            assert_eq!(
                node.home_relay(),
                Some(fleet.relay_id(order[0])),
                "a node moved though its home stayed"
            );
        }
    }
    failover.sort();
    eprintln!(
        "failover after a relay stop (home moved and reached): p50 {:?}, max {:?} over {} nodes",
        failover[failover.len() / 2],
        failover[failover.len() - 1],
        failover.len()
    );
    // The transfer across the loss completed intact (the sink checked its SHA-256).
    across.await.unwrap();
    // Relay 1 comes back (same key, same port): its nodes go home after the settle time.
    fleet.relays[lost].restart(RelayOptions::default()).await;
    fleet.relays[lost]
        .relay()
        .handle()
        .set_relay_map(fleet.map(1, &fleet.admin))
        .unwrap();
    for (node, order) in &nodes {
        wait_home(node, fleet.relay_id(order[0]), Duration::from_secs(15)).await;
    }
    // No flapping: for two more seconds every node stays where it is.
    let settled: Vec<Option<NodeId>> = nodes.iter().map(|(n, _)| n.home_relay()).collect();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now: Vec<Option<NodeId>> = nodes.iter().map(|(n, _)| n.home_relay()).collect();
        assert_eq!(now, settled, "a node changed home after settling");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_announcing_a_stop_sees_its_nodes_move_first_and_loses_no_new_channel() {
    let mut fleet = TestFleet::start(3).await;
    let stopping = 2;
    let callee_id = fleet.homed_on(stopping, 1).remove(0);
    let next = fleet.order(&callee_id.node_id())[1];
    let callee = Arc::new(fleet.node(callee_id, 0, fleet_limits()).await);
    let serving = callee.clone();
    tokio::spawn(async move { sink(&serving).await });
    let caller = fleet
        .node(fleet.homed_on(0, 1).remove(0), 0, fleet_limits())
        .await;
    wait_home(&callee, fleet.relay_id(stopping), Duration::from_secs(10)).await;
    wait_home(&caller, fleet.relay_id(0), Duration::from_secs(10)).await;
    fleet.relays[stopping]
        .relay()
        .handle()
        .announce_drain(Duration::from_secs(3));
    let moved = wait_home(&callee, fleet.relay_id(next), Duration::from_secs(3)).await;
    eprintln!("moved off a draining relay in {moved:?}");
    // A channel opened after the announcement, still running when the relay stops: it runs
    // through the callee's next relay, so it survives.
    let callee_id = callee.node_id();
    let data = pattern(4 << 20, 9);
    let transfer = tokio::spawn(async move { send_to_sink(&caller, callee_id, &data).await });
    if let Some(relay) = fleet.relays[stopping].relay.take() {
        relay.shutdown().await;
    }
    transfer.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_older_maps_are_refused_and_unlisted_relays_are_never_dialled() {
    let fleet = TestFleet::start(2).await;
    // A relay whose map is signed by another key (it accepts it: relays pin nothing).
    let rogue = TestNet::start_with(RelayOptions::default()).await;
    let mallory = Identity::generate().unwrap();
    let forged = RelayMap {
        admin: mallory.node_id(),
        version: 99,
        issued: 1,
        relays: vec![RelayEntry {
            node_id: rogue.relay_identity.node_id(),
            addrs: vec![rogue.addr.to_string()],
            region: None,
        }],
    }
    .sign(&mallory)
    .unwrap();
    rogue.relay().handle().set_relay_map(forged).unwrap();
    // A node of the fleet that bootstraps through the rogue relay refuses its map: it stays
    // on the bootstrap relay alone, with no map.
    let bootstrap = FleetBootstrap {
        admin: fleet.admin.node_id(),
        relay: rogue.relay_identity.node_id(),
        addr: rogue.addr.to_string(),
    };
    let mut config =
        NodeConfig::fleet(Arc::new(Identity::generate().unwrap()), &bootstrap).unwrap();
    config.limits = fleet_limits();
    let fooled = Node::start(config).await.unwrap();
    fooled.wait_online(Duration::from_secs(5)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(fooled.relay_map().is_none(), "a forged map was taken");
    assert_eq!(fooled.relay_links().len(), 1);

    // A node holding map version 2 (which lists only the fleet's relays) is handed version 1
    // by a relay: refused, and the version held stays 2.
    let v2 = fleet.map(2, &fleet.admin);
    let mut config =
        NodeConfig::fleet(Arc::new(Identity::generate().unwrap()), &fleet.bootstrap(0)).unwrap();
    config.limits = fleet_limits();
    config.relay_map = Some(v2.clone());
    let node = Node::start(config).await.unwrap();
    node.wait_online(Duration::from_secs(5)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        node.relay_map(),
        Some(v2.clone()),
        "an older map replaced a newer one"
    );

    // A node holding a map that leaves the bootstrap relay out never dials it.
    let only_second = RelayMap {
        admin: fleet.admin.node_id(),
        version: 3,
        issued: 1,
        relays: vec![fleet.entries()[1].clone()],
    }
    .sign(&fleet.admin)
    .unwrap();
    let mut config =
        NodeConfig::fleet(Arc::new(Identity::generate().unwrap()), &fleet.bootstrap(0)).unwrap();
    config.limits = fleet_limits();
    config.relay_map = Some(only_second);
    let listed_only = Node::start(config).await.unwrap();
    listed_only
        .wait_online(Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(listed_only.home_relay(), Some(fleet.relay_id(1)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !fleet.relays[0].relay().is_online(&listed_only.node_id()),
        "a relay left out of the map was dialled"
    );
    assert!(
        fleet.relays[0]
            .relay()
            .nodes()
            .iter()
            .all(|n| n.node != listed_only.node_id()),
        "a relay left out of the map saw the node"
    );
}

/// Sends `payload` from a caller homed on relay 0 to an echo service of a callee homed on
/// relay 1 (the callee's relay, the one the channel runs through, may misbehave).
async fn across_under(hooks: TestHooks, payload: &[u8]) -> (Vec<u8>, Option<std::io::Error>) {
    let cell = std::sync::Mutex::new(Some(hooks));
    let fleet = TestFleet::start_with(2, |i| {
        if i == 1 {
            cell.lock().unwrap().take().unwrap_or_default()
        } else {
            TestHooks::default()
        }
    })
    .await;
    let callee = Arc::new(
        fleet
            .node(fleet.homed_on(1, 1).remove(0), 1, fleet_limits())
            .await,
    );
    let caller = fleet
        .node(fleet.homed_on(0, 1).remove(0), 0, fleet_limits())
        .await;
    wait_home(&callee, fleet.relay_id(1), Duration::from_secs(10)).await;
    wait_home(&caller, fleet.relay_id(0), Duration::from_secs(10)).await;
    let _echo = serve_echo(callee.clone());
    let mut ch = match caller.dial(callee.node_id(), "secret-service").await {
        Ok(ch) => ch,
        Err(e) => return (Vec::new(), Some(std::io::Error::other(e))),
    };
    nullport_tests::exchange(&mut ch, payload).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callees_relay_reads_nothing_and_its_tampering_is_detected() {
    // A tap on the relay the channel runs through: no plaintext, no service name.
    let tap = Arc::new(Tap::default());
    let marker = b"CANARY-fleet-plaintext-marker".repeat(100);
    let (got, err) = across_under(
        TestHooks {
            splice: Some(tap.clone()),
            ..TestHooks::default()
        },
        &marker,
    )
    .await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, marker);
    let seen = tap.bytes.lock().map(|b| b.clone()).unwrap_or_default();
    assert!(
        seen.len() > marker.len() * 2,
        "the tap saw {} bytes",
        seen.len()
    );
    for needle in [&b"CANARY-fleet"[..], b"secret-service"] {
        assert!(
            !seen.windows(needle.len()).any(|w| w == needle),
            "the callee's relay saw {:?}",
            String::from_utf8_lossy(needle)
        );
    }
    // Tampering by it, both ways, in the handshake and in data: detected, nothing altered
    // delivered.
    let payload = pattern(300_000, 9);
    for (direction, offset, mode) in [
        (Direction::CallerToTarget, 10, TamperMode::FlipBit),
        (Direction::TargetToCaller, 50, TamperMode::FlipBit),
        (Direction::CallerToTarget, 100_000, TamperMode::FlipBit),
        (
            Direction::TargetToCaller,
            200_000,
            TamperMode::DuplicateChunk,
        ),
        (Direction::CallerToTarget, 150_000, TamperMode::DropChunk),
    ] {
        let hooks = TestHooks {
            splice: Some(Arc::new(Tamper::new(direction, offset, mode))),
            ..TestHooks::default()
        };
        let (got, err) = across_under(hooks, &payload).await;
        assert!(
            err.is_some(),
            "{direction:?} {offset} {mode:?}: tampering went unnoticed"
        );
        assert!(
            payload.starts_with(&got) && got.len() < payload.len(),
            "{direction:?} {offset} {mode:?}: altered bytes delivered"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_of_the_fleet_that_reroutes_dials_is_passed_over_and_named() {
    // The callee's first relay (1) turns rogue: it routes dials for the callee to Mallory.
    let mut fleet = TestFleet::start(2).await;
    let callee_id = fleet.homed_on(1, 1).remove(0);
    let callee = callee_id.node_id();
    let mallory = Identity::generate().unwrap();
    fleet.relays[1]
        .restart(RelayOptions {
            hooks: TestHooks {
                reroute: Some((callee, mallory.node_id())),
                ..TestHooks::default()
            },
            ..RelayOptions::default()
        })
        .await;
    fleet.relays[1]
        .relay()
        .handle()
        .set_relay_map(fleet.map(1, &fleet.admin))
        .unwrap();
    let m = Arc::new(fleet.node(mallory, 1, fleet_limits()).await);
    m.wait_online(Duration::from_secs(5)).await.unwrap();
    let serving = m.clone();
    tokio::spawn(async move { sink(&serving).await });
    // The callee is homed on the rogue relay and still linked to relay 0 (its bootstrap).
    let linger = NodeLimits {
        extra_link_idle: Duration::from_secs(120),
        ..fleet_limits()
    };
    let c = Arc::new(fleet.node(callee_id, 0, linger).await);
    wait_home(&c, fleet.relay_id(1), Duration::from_secs(10)).await;
    assert!(c.relay_links().contains(&(fleet.relay_id(0), true)));
    let serving = c.clone();
    tokio::spawn(async move { sink(&serving).await });
    // A caller homed on the rogue relay tries it first (its link there is up): the splice
    // to Mallory fails the handshake (Mallory learns nothing), and the walk goes on to
    // relay 0, where the callee is.
    let caller = fleet
        .node(fleet.homed_on(1, 1).remove(0), 1, fleet_limits())
        .await;
    wait_home(&caller, fleet.relay_id(1), Duration::from_secs(10)).await;
    send_to_sink(&caller, callee, &pattern(64 * 1024, 4)).await;
    // With the callee gone, the dial fails naming what the relay did, not "offline".
    c.close().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = caller.dial(callee, "sink").await;
    assert!(
        matches!(
            r,
            Err(nullport_node::Error::Protocol(
                nullport_protocol::Error::Authentication
            ))
        ),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_removed_from_the_map_that_keeps_running_loses_its_nodes() {
    // The admin removes relay 1 (compromised, say) from the map; relay 1 keeps running and
    // keeps serving the old map. Its nodes learn the new map from another relay (the map
    // refresh) and leave it.
    let fleet = TestFleet::start(3).await;
    let captive = fleet.homed_on(1, 1).remove(0);
    let limits = NodeLimits {
        map_refresh: Duration::from_millis(500),
        ..fleet_limits()
    };
    let node = fleet.node(captive, 1, limits).await;
    wait_home(&node, fleet.relay_id(1), Duration::from_secs(10)).await;
    let without_1 = RelayMap {
        admin: fleet.admin.node_id(),
        version: 2,
        issued: 2,
        relays: vec![fleet.entries()[0].clone(), fleet.entries()[2].clone()],
    }
    .sign(&fleet.admin)
    .unwrap();
    for i in [0, 2] {
        fleet.relays[i]
            .relay()
            .handle()
            .set_relay_map(without_1.clone())
            .unwrap();
    }
    let start = Instant::now();
    while node.home_relay() == Some(fleet.relay_id(1))
        || node.relay_map() != Some(without_1.clone())
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the node stayed with the removed relay"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        node.relay_links()
            .iter()
            .all(|(r, _)| *r != fleet.relay_id(1)),
        "a link to the removed relay stayed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drains_that_never_happen_move_a_node_once_not_back_and_forth() {
    let fleet = TestFleet::start(2).await;
    let id = fleet.homed_on(1, 1).remove(0);
    let node = fleet.node(id, 1, fleet_limits()).await;
    wait_home(&node, fleet.relay_id(1), Duration::from_secs(10)).await;
    // Relay 1 announces 1 s drains and never stops.
    fleet.relays[1]
        .relay()
        .handle()
        .announce_drain(Duration::from_secs(1));
    wait_home(&node, fleet.relay_id(0), Duration::from_secs(5)).await;
    // The drain "ends" after 1 s: the node does not hurry back, it waits the settle time
    // (1.5 s here) counted from the drain's end, as for a relay that failed it.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    assert_eq!(node.home_relay(), Some(fleet.relay_id(0)));
    wait_home(&node, fleet.relay_id(1), Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relays_addresses_are_tried_in_the_order_the_map_lists_them() {
    let fleet = TestFleet::start(2).await;
    // Relay 1's first address answers nothing; its second is where it listens.
    let dead = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut entries = fleet.entries();
    entries[1].addrs = vec![dead.to_string(), fleet.relays[1].addr.to_string()];
    let map = RelayMap {
        admin: fleet.admin.node_id(),
        version: 2,
        issued: 2,
        relays: entries,
    }
    .sign(&fleet.admin)
    .unwrap();
    for r in &fleet.relays {
        r.relay().handle().set_relay_map(map.clone()).unwrap();
    }
    let limits = NodeLimits {
        connect_timeout: Duration::from_millis(500),
        ..fleet_limits()
    };
    let node = fleet.node(fleet.homed_on(1, 1).remove(0), 0, limits).await;
    wait_home(&node, fleet.relay_id(1), Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_bootstrapped_over_ipv4_reaches_a_relay_listed_at_an_ipv6_address() {
    // Relay 0 on 127.0.0.1 (the bootstrap), relay 1 on [::1] only.
    let v4 = TestNet::start_with(RelayOptions::default()).await;
    let v6 = TestNet::start_with(RelayOptions {
        listen: Some("[::1]:0".parse().unwrap()),
        ..RelayOptions::default()
    })
    .await;
    let admin = Identity::generate().unwrap();
    let entries = vec![
        RelayEntry {
            node_id: v4.relay_identity.node_id(),
            addrs: vec![v4.addr.to_string()],
            region: None,
        },
        RelayEntry {
            node_id: v6.relay_identity.node_id(),
            addrs: vec![v6.addr.to_string()],
            region: None,
        },
    ];
    let map = RelayMap {
        admin: admin.node_id(),
        version: 1,
        issued: 1,
        relays: entries.clone(),
    }
    .sign(&admin)
    .unwrap();
    for r in [&v4, &v6] {
        r.relay().handle().set_relay_map(map.clone()).unwrap();
    }
    // A node whose first choice is the IPv6 relay, bootstrapped through the IPv4 one.
    let identity = loop {
        let id = Identity::generate().unwrap();
        if nullport_keyring::relay_map::rendezvous_order(&id.node_id(), &entries)[0].node_id
            == v6.relay_identity.node_id()
        {
            break id;
        }
    };
    let bootstrap = FleetBootstrap {
        admin: admin.node_id(),
        relay: v4.relay_identity.node_id(),
        addr: v4.addr.to_string(),
    };
    let mut config = NodeConfig::fleet(Arc::new(identity), &bootstrap).unwrap();
    config.limits = fleet_limits();
    let node = Node::start(config).await.unwrap();
    wait_home(&node, v6.relay_identity.node_id(), Duration::from_secs(10)).await;
}
