//! A fleet's shared state in etcd (`--store etcd://...`): real etcd members (the Debian
//! `etcd` binary, 3 on loopback) under real relays, with real nodes. Exactly-once invites
//! across relays, revocations and witnessed checkpoints shared, and quorum loss: live
//! channels go on, decisions that need the store fail closed, and all resumes with quorum.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nullport_keyring::invite::Invite;
use nullport_keyring::relay_map::{RelayEntry, RelayMap};
use nullport_keyring::revocation::RevocationList;
use nullport_node::{Error, LinkState, Node, NodeConfig, Refusal};
use nullport_protocol::relay_link::{LinkErrorCode, WitnessedCheckpoint};
use nullport_protocol::{Identity, Signature};
use nullport_tests::etcd::EtcdCluster;
use nullport_tests::{RelayOptions, TestNet, fast_limits, init_tracing, pattern, sink};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What these tests hold the fleet to: a revocation accepted at one relay is enforced at
/// every other within this long (measured: well under it, see the tests' output).
const PROPAGATION_BOUND: Duration = Duration::from_secs(2);

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Relays sharing one etcd cluster, with an allowlist that only invites fill, and a relay
/// map signed by the network admin key (whose invites and lists every relay honours).
struct Fleet {
    admin: Arc<Identity>,
    relays: Vec<TestNet>,
    state: Vec<tempfile::TempDir>,
}

async fn fleet(cluster: &EtcdCluster, n: usize) -> Fleet {
    let admin = Arc::new(Identity::generate().unwrap());
    let (mut relays, mut state) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let dir = tempfile::tempdir().unwrap();
        relays.push(
            TestNet::start_with(RelayOptions {
                allow: Some(vec![]),
                enroll: true,
                store: Some(cluster.spec()),
                state_dir: Some(dir.path().to_owned()),
                ..Default::default()
            })
            .await,
        );
        state.push(dir);
    }
    let map = relay_map(&admin, 1, &relays.iter().collect::<Vec<_>>());
    for r in &relays {
        r.relay().handle().set_relay_map(map.clone()).unwrap();
    }
    Fleet {
        admin,
        relays,
        state,
    }
}

/// The relay map of `relays`, version `version`, signed by `admin`.
fn relay_map(
    admin: &Identity,
    version: u64,
    relays: &[&TestNet],
) -> nullport_protocol::relay_link::SignedRelayMap {
    RelayMap {
        admin: admin.node_id(),
        version,
        issued: now(),
        relays: relays
            .iter()
            .map(|r| RelayEntry {
                node_id: r.relay_identity.node_id(),
                addrs: vec![r.addr.to_string()],
                region: None,
            })
            .collect(),
    }
    .sign(admin)
    .unwrap()
}

/// Starts a node on `net` (joining with `invite`, if any) and waits for its admission.
async fn join(
    net: &TestNet,
    identity: Arc<Identity>,
    invite: Option<Vec<u8>>,
) -> (Node, Result<(), Error>) {
    let mut config = NodeConfig::new(identity, net.relay_addr());
    config.limits = fast_limits();
    config.limits.refused_backoff_max = Duration::from_millis(500);
    config.join = invite;
    let node = Node::start(config).await.unwrap();
    let admitted = node.wait_online(Duration::from_secs(8)).await;
    (node, admitted)
}

fn fresh() -> Arc<Identity> {
    Arc::new(Identity::generate().unwrap())
}

/// Sends 256 KiB more on a live channel (and adds them to what the sink must have seen).
async fn send(channel: &mut nullport_node::Channel, sent: &mut Sha256, seed: u64) {
    let part = pattern(256 * 1024, seed);
    channel.write_all(&part).await.unwrap();
    channel.flush().await.unwrap();
    sent.update(&part);
}

/// A checkpoint `seq` signed by `identity` (its audit log's, as the node would send it).
fn signed_checkpoint(identity: &Identity, seq: u64) -> WitnessedCheckpoint {
    let head = format!("{seq:064x}");
    let sig = identity.sign(
        nullport_protocol::domain::AUDIT_CHECKPOINT_V1,
        format!("seq:{seq}\nhead:{head}").as_bytes(),
    );
    WitnessedCheckpoint {
        seq,
        head: nullport_protocol::Digest::from_hex(&head).unwrap(),
        node_sig: Signature(sig),
        relay_sig: None,
    }
}

/// Waits until `node` is online (it retries on its own after a refusal), within `bound`.
async fn online_within(node: &Node, bound: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if node.wait_online(Duration::from_millis(100)).await.is_ok() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < bound,
            "not online within {bound:?}: {:?}",
            node.state()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_store_a_one_time_invite_is_won_once_across_relays_and_admits_everywhere() {
    init_tracing();
    let test = "fleet_store_a_one_time_invite_is_won_once_across_relays_and_admits_everywhere";
    let Some(cluster) = EtcdCluster::start(test, 3).await else {
        return;
    };
    let fleet = fleet(&cluster, 3).await;
    for round in 0..3 {
        let invite = Invite::create(&fleet.admin, now() + 600, 1).unwrap();
        let (x_id, y_id) = (fresh(), fresh());
        let (x, y) = tokio::join!(
            join(&fleet.relays[0], x_id.clone(), Some(invite.clone())),
            join(&fleet.relays[1], y_id.clone(), Some(invite)),
        );
        assert_eq!(
            u8::from(x.1.is_ok()) + u8::from(y.1.is_ok()),
            1,
            "round {round}: {:?} {:?}",
            x.1,
            y.1
        );
        let (winner, loser) = if x.1.is_ok() { (x_id, &y) } else { (y_id, &x) };
        assert!(
            matches!(
                &loser.1,
                Err(Error::RelayRefused(Refusal::Enrollment(
                    LinkErrorCode::InviteUsed
                )))
            ),
            "round {round}: {:?}",
            loser.1
        );
        // Enrolled through relay 1 or 2, admitted at relay 3 with no invite.
        let (at_third, _) = join(&fleet.relays[2], winner, None).await;
        let took = online_within(&at_third, PROPAGATION_BOUND).await;
        eprintln!("round {round}: the winner was admitted at relay 3 after {took:?}");
    }
    // One use counted per invite, in etcd.
    let mut client = cluster.client().await;
    let counts = client
        .get(
            "/nullport/v1/invites/",
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    let values: Vec<&[u8]> = counts.kvs().iter().map(|kv| kv.value()).collect();
    assert_eq!(values, vec![b"1".as_slice(); 3]);
    for (i, r) in fleet.relays.iter().enumerate() {
        let stats = r.relay().handle().store_stats();
        assert!(stats.shared && stats.failures == 0, "{stats:?}");
        if let Some(mean) = stats.total_micros.checked_div(stats.operations) {
            eprintln!(
                "relay {}: {} store operations, mean {mean} us, max {} us",
                i + 1,
                stats.operations,
                stats.max_micros
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_store_a_rotation_at_relay_1_retires_the_old_key_at_relay_2() {
    init_tracing();
    let test = "fleet_store_a_rotation_at_relay_1_retires_the_old_key_at_relay_2";
    let Some(cluster) = EtcdCluster::start(test, 3).await else {
        return;
    };
    let fleet = fleet(&cluster, 2).await;
    let (old_id, new_id) = (fresh(), fresh());
    let invite = Invite::create(&fleet.admin, now() + 600, 1).unwrap();
    let (at_first, r) = join(&fleet.relays[0], old_id.clone(), Some(invite)).await;
    r.unwrap();
    let (at_second, r) = join(&fleet.relays[1], old_id.clone(), None).await;
    r.unwrap();
    let started = Instant::now();
    at_first
        .publish_rotation(nullport_keyring::rotation::sign(&old_id, &new_id, now()))
        .await
        .unwrap();
    while fleet.relays[1].relay().is_online(&old_id.node_id()) {
        assert!(
            started.elapsed() < PROPAGATION_BOUND,
            "relay 2 still serves the retired key"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!(
        "a rotation at relay 1 retired the old key at relay 2 after {:?}",
        started.elapsed()
    );
    drop(at_second);
    // The new key is a member everywhere; the old one is refused everywhere, for good.
    let (_new, r) = join(&fleet.relays[1], new_id.clone(), None).await;
    r.expect("the rotated-to key at relay 2");
    let (_old, r) = join(&fleet.relays[1], old_id.clone(), None).await;
    assert!(
        matches!(r, Err(Error::RelayRefused(Refusal::KeyRetired))),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_store_a_relay_moving_from_its_state_dir_brings_its_state_into_etcd() {
    init_tracing();
    let test = "fleet_store_a_relay_moving_from_its_state_dir_brings_its_state_into_etcd";
    let Some(cluster) = EtcdCluster::start(test, 1).await else {
        return;
    };
    let state = tempfile::tempdir().unwrap();
    let options = |store: Option<nullport_relay::store::StoreSpec>, allow| RelayOptions {
        allow: Some(allow),
        enroll: true,
        state_dir: Some(state.path().to_owned()),
        store,
        ..Default::default()
    };
    // A lone relay on its files: an invite used, a checkpoint witnessed.
    let mut lone = TestNet::start_with(options(None, vec![])).await;
    let invite = Invite::create(&lone.relay_identity, now() + 600, 1).unwrap();
    let identity = fresh();
    let (node, r) = join(&lone, identity.clone(), Some(invite.clone())).await;
    r.unwrap();
    node.witness(signed_checkpoint(&identity, 7)).await.unwrap();
    node.shutdown().await;
    // The same relay restarts on etcd, on the same state directory (its allowlist kept).
    lone.restart(options(Some(cluster.spec()), vec![identity.node_id()]))
        .await;
    assert!(state.path().join("imported-into-etcd").exists());
    let mut client = cluster.client().await;
    let held = client
        .get(
            format!("/nullport/v1/witnessed/{}", identity.node_id()),
            None,
        )
        .await
        .unwrap();
    assert_eq!(held.kvs().len(), 1, "the checkpoint is not in etcd");
    // The invite stays used, and checkpoint 7 cannot be rolled back.
    let (_late, r) = join(&lone, fresh(), Some(invite)).await;
    assert!(
        matches!(
            r,
            Err(Error::RelayRefused(Refusal::Enrollment(
                LinkErrorCode::InviteUsed
            )))
        ),
        "{r:?}"
    );
    let (back, r) = join(&lone, identity.clone(), None).await;
    r.unwrap();
    assert!(matches!(
        back.witness(signed_checkpoint(&identity, 6)).await,
        Err(Error::Link(LinkErrorCode::Refused))
    ));
    assert_eq!(back.witnessed().await.unwrap().map(|c| c.seq), Some(7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_store_a_revocation_accepted_at_relay_1_is_enforced_at_relay_3() {
    init_tracing();
    let test = "fleet_store_a_revocation_accepted_at_relay_1_is_enforced_at_relay_3";
    let Some(cluster) = EtcdCluster::start(test, 3).await else {
        return;
    };
    let fleet = fleet(&cluster, 3).await;
    let invite = Invite::create(&fleet.admin, now() + 600, 3).unwrap();
    let (signer_id, watcher_id, victim_id) = (fresh(), fresh(), fresh());
    let (signer, r) = join(&fleet.relays[0], signer_id.clone(), Some(invite.clone())).await;
    r.unwrap();
    let (watcher, r) = join(&fleet.relays[2], watcher_id, Some(invite.clone())).await;
    r.unwrap();
    let (victim, r) = join(&fleet.relays[2], victim_id.clone(), Some(invite)).await;
    r.unwrap();

    // A node's own list, published at relay 1, reaches a node on relay 3 (pushed).
    let mut updates = watcher.revocation_updates();
    let mut list = RevocationList::new(signer_id.node_id());
    list.revoke_key(victim_id.node_id());
    let started = Instant::now();
    signer
        .publish_revocations(list.next(now(), &signer_id))
        .await
        .unwrap();
    let pushed = tokio::time::timeout(PROPAGATION_BOUND, async {
        loop {
            let lists = updates.recv().await.unwrap();
            if lists.iter().any(|l| {
                nullport_keyring::revocation::verify_signed(l)
                    .is_ok_and(|l| l.signer == signer_id.node_id())
            }) {
                return started.elapsed();
            }
        }
    })
    .await
    .expect("the list did not reach the node on relay 3");
    eprintln!("a list published at relay 1 reached a node on relay 3 after {pushed:?}");
    // A newer list is decided once for the fleet: the same version again, anywhere, is stale.
    let (again, r) = join(&fleet.relays[1], signer_id.clone(), None).await;
    r.unwrap();
    let mut stale = RevocationList::new(signer_id.node_id());
    stale.revoke_key(watcher.node_id());
    assert!(
        matches!(
            again
                .publish_revocations(stale.next(now(), &signer_id))
                .await,
            Err(Error::Link(LinkErrorCode::Refused))
        ),
        "version 1 was accepted twice"
    );

    // The network admin's list, taken at relay 1 (from its state directory), is enforced at
    // relay 3: the victim's link there is closed and it is refused from then on.
    let mut admin_list = RevocationList::new(fleet.admin.node_id());
    admin_list.revoke_key(victim_id.node_id());
    nullport_relay::store::write_admin_list(
        fleet.state[0].path(),
        &admin_list.next(now(), &fleet.admin),
    )
    .unwrap();
    let started = Instant::now();
    fleet.relays[0]
        .relay()
        .handle()
        .reload_admin_list()
        .await
        .unwrap();
    while fleet.relays[2].relay().is_online(&victim_id.node_id()) {
        assert!(
            started.elapsed() < PROPAGATION_BOUND,
            "relay 3 still serves the revoked key"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!(
        "the admin's revocation at relay 1 closed the key's link at relay 3 after {:?}",
        started.elapsed()
    );
    let mut state = victim.watch_state();
    let refused = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let LinkState::Refused { refusal, .. } = state.borrow_and_update().clone() {
                return refusal;
            }
            state.changed().await.unwrap();
        }
    })
    .await
    .unwrap();
    assert_eq!(refused, Refusal::KeyRevoked);
    let (_elsewhere, r) = join(&fleet.relays[1], victim_id.clone(), None).await;
    assert!(
        matches!(r, Err(Error::RelayRefused(Refusal::KeyRevoked))),
        "{r:?}"
    );
    // A relay that starts later, on the same store, enforces it as soon as it holds the map.
    let late = TestNet::start_with(RelayOptions {
        allow: Some(vec![]),
        store: Some(cluster.spec()),
        ..Default::default()
    })
    .await;
    let mut all: Vec<&TestNet> = fleet.relays.iter().collect();
    all.push(&late);
    late.relay()
        .handle()
        .set_relay_map(relay_map(&fleet.admin, 2, &all))
        .unwrap();
    let (_after_map, r) = join(&late, victim_id, None).await;
    assert!(
        matches!(r, Err(Error::RelayRefused(Refusal::KeyRevoked))),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_store_a_witnessed_checkpoint_cannot_be_rolled_back_through_another_relay() {
    init_tracing();
    let test = "fleet_store_a_witnessed_checkpoint_cannot_be_rolled_back_through_another_relay";
    let Some(cluster) = EtcdCluster::start(test, 3).await else {
        return;
    };
    let fleet = fleet(&cluster, 2).await;
    let invite = Invite::create(&fleet.admin, now() + 600, 1).unwrap();
    let identity = fresh();
    let checkpoint = |seq: u64| signed_checkpoint(&identity, seq);
    let (first, r) = join(&fleet.relays[0], identity.clone(), Some(invite)).await;
    r.unwrap();
    first.witness(checkpoint(10)).await.unwrap();
    first.shutdown().await;
    let (second, r) = join(&fleet.relays[1], identity.clone(), None).await;
    r.unwrap();
    let refused = second.witness(checkpoint(5)).await;
    assert!(
        matches!(refused, Err(Error::Link(LinkErrorCode::Refused))),
        "relay 2 let checkpoint 10 roll back to 5: {refused:?}"
    );
    assert_eq!(second.witnessed().await.unwrap().map(|c| c.seq), Some(10));
    let newer = second.witness(checkpoint(11)).await.unwrap();
    assert!(newer.relay_sig.is_some());
    second.shutdown().await;
    // And back at relay 1: 11 is held there too, 10 is a rollback now.
    let (back, r) = join(&fleet.relays[0], identity.clone(), None).await;
    r.unwrap();
    assert!(matches!(
        back.witness(checkpoint(10)).await,
        Err(Error::Link(LinkErrorCode::Refused))
    ));
    assert_eq!(back.witnessed().await.unwrap().map(|c| c.seq), Some(11));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_store_quorum_loss_keeps_channels_and_fails_new_invites_closed_until_it_returns() {
    init_tracing();
    let test =
        "fleet_store_quorum_loss_keeps_channels_and_fails_new_invites_closed_until_it_returns";
    let Some(mut cluster) = EtcdCluster::start(test, 3).await else {
        return;
    };
    let fleet = fleet(&cluster, 2).await;
    let (r1, r2) = (&fleet.relays[0], &fleet.relays[1]);
    let invite = |uses| Invite::create(&fleet.admin, now() + 600, uses).unwrap();
    let two = invite(2);
    let (a, r) = join(r1, fresh(), Some(two.clone())).await;
    r.unwrap();
    let (b, r) = join(r1, fresh(), Some(two)).await;
    r.unwrap();
    let b = Arc::new(b);
    let sinker = {
        let b = b.clone();
        tokio::spawn(async move { sink(&b).await })
    };
    // A channel a -> b that stays open through everything below.
    let mut channel = a.dial(b.node_id(), "sink").await.unwrap();
    let mut sent = Sha256::new();
    send(&mut channel, &mut sent, 1).await;

    // One member down, the leader (the hardest one): nothing changes.
    let leader = cluster.leader().await.expect("a leader");
    let other = (leader + 1) % 3;
    cluster.stop(leader);
    send(&mut channel, &mut sent, 2).await;
    let (c_id, c_invite) = (fresh(), invite(1));
    // (Decisions fail closed until the others elect a leader, within a second on a quiet
    // machine; a node refused meanwhile enrolls at its next attempt. The bound is a
    // liveness bound, generous for a loaded CI machine: one run there needed over 5 s.)
    let (c, r) = join(r2, c_id.clone(), Some(c_invite)).await;
    let took = online_within(&c, Duration::from_secs(20)).await;
    eprintln!("one member down: an invite use, first answer {r:?}, online after {took:?}");

    // Two members down: no quorum.
    cluster.stop(other);
    send(&mut channel, &mut sent, 3).await;
    // Dials between admitted nodes go on (they never ask the store).
    nullport_tests::send_to_sink(&a, b.node_id(), &pattern(64 * 1024, 9)).await;
    // An admitted node that reconnects is admitted from the relay's cached view.
    c.shutdown().await;
    let (c_again, r) = join(r2, c_id, None).await;
    r.expect("a known key reconnecting during quorum loss");
    // A new invite use fails closed, within the store's bound, with the clear refusal.
    let failures = r1.relay().handle().store_stats().failures;
    let started = Instant::now();
    let (d, r) = join(r1, fresh(), Some(invite(1))).await;
    let took = started.elapsed();
    assert!(
        matches!(
            &r,
            Err(Error::RelayRefused(Refusal::Enrollment(
                LinkErrorCode::StoreUnavailable
            )))
        ),
        "{r:?}"
    );
    assert!(took < Duration::from_secs(5), "the refusal took {took:?}");
    assert!(r1.relay().handle().store_stats().failures > failures);
    let unavailable = "nullport_relay_store_operations_total{result=\"unavailable\"} ";
    assert!(
        r1.relay()
            .render_metrics()
            .lines()
            .any(|l| l.starts_with(unavailable) && !l.ends_with(" 0")),
        "no store failure in the metrics"
    );
    eprintln!("without quorum, an invite use was refused (fail closed) after {took:?}");
    send(&mut channel, &mut sent, 4).await;

    // Quorum returns: the refused node enrolls on its own next attempt, and the channel
    // opened before it all ends with every byte.
    let restarted = Instant::now();
    cluster.start_member(leader);
    cluster.start_member(other);
    cluster.wait_ready(Duration::from_secs(20)).await;
    let quorum = restarted.elapsed();
    online_within(&d, Duration::from_secs(20)).await;
    eprintln!(
        "members restarted: quorum after {quorum:?}, the refused node enrolled after {:?}",
        restarted.elapsed()
    );
    send(&mut channel, &mut sent, 5).await;
    channel.shutdown().await.unwrap();
    let mut digest = Vec::new();
    channel.read_to_end(&mut digest).await.unwrap();
    assert_eq!(
        digest,
        sent.finalize().to_vec(),
        "bytes lost on the live channel"
    );
    drop(c_again);
    sinker.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_store_a_relay_reads_a_view_larger_than_a_page() {
    init_tracing();
    let test = "fleet_store_a_relay_reads_a_view_larger_than_a_page";
    let Some(cluster) = EtcdCluster::start(test, 1).await else {
        return;
    };
    // 700 members (the relay reads 500 keys a page), put there by hand.
    let mut client = cluster.client().await;
    let members: Vec<Arc<Identity>> = (0..700).map(|_| fresh()).collect();
    for m in &members {
        client
            .put(
                format!("/nullport/v1/members/{}", m.node_id()),
                "enrolled by hand",
                None,
            )
            .await
            .unwrap();
    }
    let last = members
        .iter()
        .max_by_key(|m| m.node_id().to_string())
        .unwrap()
        .clone();
    let relay = TestNet::start_with(RelayOptions {
        allow: Some(vec![]),
        store: Some(cluster.spec()),
        ..Default::default()
    })
    .await;
    let (_node, r) = join(&relay, last, None).await;
    r.expect("the member on the last page");
}
