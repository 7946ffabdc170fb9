//! A fleet relay as its operator runs it: `run --map FILE` (refused without this relay in the
//! map, followed when the file changes, each newer map pushed to the linked nodes), and a
//! planned stop (SIGTERM, SIGINT) that announces a drain to the linked nodes and keeps
//! serving until it ends. Nodes here are raw relay-link clients over real QUIC, so what the
//! relay sends is observed exactly.
// A failed unwrap is how a test reports a failure (clippy.toml allows it inside #[test]
// functions; the helpers of an integration test need it too).
#![allow(missing_docs, clippy::unwrap_used)]

mod fleet_common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fleet_common::{Keys, Link, RelayProcess, cli, fails, free_port, scrape};
use nullport_keyring::relay_map::RelayMap;
use nullport_protocol::relay_link::RelayToNode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_refuses_a_map_that_is_invalid_or_does_not_list_it() {
    let keys = Keys::new();
    let (r1, r2) = (keys.key("r1.key").await, keys.key("r2.key").await);
    assert!(
        keys.sign(1, &[format!("{r2}@127.0.0.1:7002")], "map.json")
            .await
            .0
    );
    let key = keys.s("r1.key");
    let run = |map: String| {
        let key = key.clone();
        async move {
            let args = [
                "run",
                "--open",
                "--listen",
                "127.0.0.1:0",
                "--key",
                &key,
                "--map",
                &map,
            ];
            tokio::time::timeout(Duration::from_secs(10), fails(&args))
                .await
                .unwrap()
        }
    };
    let e = run(keys.s("map.json")).await;
    assert!(
        e.contains(&format!("does not list this relay ({r1})")),
        "{e}"
    );
    std::fs::write(keys.path("junk.json"), "{\"nullport_relay_map\": 1}").unwrap();
    let e = run(keys.s("junk.json")).await;
    assert!(e.contains("not a nullport relay map file"), "{e}");
    let e = run(keys.s("missing.json")).await;
    assert!(e.contains("missing.json"), "{e}");
    // --drain-secs means nothing without a map.
    let (success, _, e) = cli(&["run", "--open", "--drain-secs", "3"]).await;
    assert!(!success && e.contains("--map"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_map_file_is_pushed_to_linked_nodes_and_a_bad_one_changes_nothing() {
    let keys = Keys::new();
    let (r1, r2) = (keys.key("r1.key").await, keys.key("r2.key").await);
    let port = free_port();
    let me = format!("{r1}@127.0.0.1:{port}");
    assert!(keys.sign(1, std::slice::from_ref(&me), "map.json").await.0);
    let relay = RelayProcess::start(
        &keys,
        "r1.key",
        port,
        &["--map", &keys.s("map.json"), "--metrics", "127.0.0.1:0"],
    )
    .await;
    relay.logged("relay map").await;
    let metrics: SocketAddr = relay
        .logged("metrics on http://")
        .await
        .split("http://")
        .nth(1)
        .unwrap()
        .trim_end_matches("/metrics")
        .parse()
        .unwrap();
    let mut link = Link::connect(&relay).await;
    assert_eq!(link.map_version().await, Some(1));

    // Version 2 adds a relay: every linked node gets it, without asking.
    let two = [me.clone(), format!("{r2}@127.0.0.1:1")];
    assert!(keys.sign(2, &two, "map.json").await.0);
    match link.pushed(Duration::from_secs(5)).await {
        Some(RelayToNode::Map { map: Some(m) }) => {
            let map = RelayMap::verify_self_signed(&m).unwrap();
            assert_eq!((map.version, map.relays.len()), (2, 2));
        }
        other => panic!("expected the new map pushed, got {other:?}"),
    }
    relay.logged("version 2 in force").await;
    assert!(
        scrape(metrics)
            .await
            .contains("\nnullport_relay_map_version 2\n")
    );

    // A map without this relay, and a file that is not a map: reported, version 2 stays.
    assert!(
        keys.sign(3, &[format!("{r2}@127.0.0.1:1")], "map.json")
            .await
            .0
    );
    relay.logged("version 2 stays in force").await;
    std::fs::write(keys.path("map.json"), "{").unwrap();
    relay.logged("not a nullport relay map file").await;
    assert_eq!(link.map_version().await, Some(2));
    assert!(link.pushed(Duration::from_millis(300)).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_map_announces_a_drain_and_keeps_serving_until_it_ends() {
    let keys = Keys::new();
    let r1 = keys.key("r1.key").await;
    let port = free_port();
    assert!(
        keys.sign(1, &[format!("{r1}@127.0.0.1:{port}")], "map.json")
            .await
            .0
    );
    let map = keys.s("map.json");
    let mut relay =
        RelayProcess::start(&keys, "r1.key", port, &["--map", &map, "--drain-secs", "3"]).await;
    let mut link = Link::connect(&relay).await;
    assert_eq!(link.map_version().await, Some(1));

    let stopped = Instant::now();
    relay.signal("TERM").await;
    match link.pushed(Duration::from_secs(2)).await {
        Some(RelayToNode::Draining { within_secs }) => assert_eq!(within_secs, 3),
        other => panic!("expected Draining, got {other:?}"),
    }
    relay.logged("draining: told 1 nodes").await;
    // Still serving while it drains: the control stream answers, the link stays up.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(link.map_version().await, Some(1));
    let status = tokio::time::timeout(Duration::from_secs(10), relay.child.wait())
        .await
        .unwrap()
        .unwrap();
    let took = stopped.elapsed();
    assert!(status.success(), "{status}");
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_secs(6),
        "stopped after {took:?}"
    );
    assert!(
        link.conn
            .closed()
            .await
            .to_string()
            .contains("shutting down")
    );

    // With nobody linked, a drain ends at once; a second signal also ends it at once.
    let mut relay = RelayProcess::start(
        &keys,
        "r1.key",
        port,
        &["--map", &map, "--drain-secs", "30"],
    )
    .await;
    let stopped = Instant::now();
    relay.signal("TERM").await;
    relay.logged("drained: no node is linked any more").await;
    tokio::time::timeout(Duration::from_secs(5), relay.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(stopped.elapsed() < Duration::from_secs(5));
    let mut relay = RelayProcess::start(
        &keys,
        "r1.key",
        port,
        &["--map", &map, "--drain-secs", "30"],
    )
    .await;
    let _link = Link::connect(&relay).await;
    relay.signal("INT").await;
    relay.logged("draining").await;
    relay.signal("INT").await;
    relay.logged("second signal: stopping now").await;
    tokio::time::timeout(Duration::from_secs(5), relay.child.wait())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_without_a_map_stops_at_once_with_no_drain() {
    let keys = Keys::new();
    keys.key("r1.key").await;
    let mut relay = RelayProcess::start(&keys, "r1.key", 0, &[]).await;
    let link = Link::connect(&relay).await;
    let stopped = Instant::now();
    relay.signal("TERM").await;
    let closed = tokio::time::timeout(Duration::from_secs(5), link.conn.closed())
        .await
        .unwrap();
    assert!(closed.to_string().contains("shutting down"), "{closed}");
    assert!(link.pushed(Duration::from_millis(100)).await.is_none());
    tokio::time::timeout(Duration::from_secs(5), relay.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(stopped.elapsed() < Duration::from_secs(3));
    assert!(
        !relay
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("drain"))
    );
}
