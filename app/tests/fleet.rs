//! The `nullport` daemon in a fleet: `up --relay fleet:<admin>/<relay>@host:port`, the map
//! kept in the home, the home relay in `status`, a service called across relays, and a
//! restart that starts from the kept map even when the bootstrap relay is gone.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{NULLPORT, nullport, ok, pipe_output};
use nullport_keyring::relay_map::{RelayEntry, rendezvous_order};
use nullport_protocol::{Identity, NodeId};
use nullport_tests::fleet::TestFleet;
use tokio::process::{Child, Command};

/// The bootstrap string through relay `via`.
fn bootstrap(fleet: &TestFleet, via: usize) -> String {
    fleet.bootstrap(via).to_string()
}

/// The relay a node homes on when every relay is up.
fn first_choice(fleet: &TestFleet, node: &NodeId) -> NodeId {
    rendezvous_order(node, &fleet.entries())[0].node_id
}

fn up(home: &Path, relay: &str) -> Child {
    Command::new(NULLPORT)
        .arg("--home")
        .arg(home)
        .args(["up", "--relay", relay])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Waits until `status` says the node is homed on `relay`; returns the status text.
async fn homed(home: &Path, relay: &NodeId) -> String {
    let started = Instant::now();
    loop {
        let out = nullport(home, &["status"]).await;
        if out.ok
            && out.stdout.contains("link     online")
            && out.stdout.contains(&format!("home     {relay}"))
        {
            return out.stdout;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "not homed on {relay}: {} {}",
            out.stdout,
            out.stderr
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemons_join_a_fleet_home_by_the_hash_and_call_each_other_across_relays() {
    let mut fleet = TestFleet::start(3).await;
    let dir = tempfile::tempdir().unwrap();
    let tool = dir.path().join("tool");
    let agent = dir.path().join("agent");
    let tool_id: NodeId = ok(&tool, &["init", "--insecure-plaintext-key"])
        .await
        .trim()
        .parse()
        .unwrap();
    let agent_id: NodeId = ok(&agent, &["init", "--insecure-plaintext-key"])
        .await
        .trim()
        .parse()
        .unwrap();
    ok(&tool, &["trust", "add", "agent", &agent_id.to_string()]).await;
    ok(&agent, &["trust", "add", "tool", &tool_id.to_string()]).await;
    // Both bootstrap through relay 0; each ends on its own first choice.
    let mut tool_daemon = up(&tool, &bootstrap(&fleet, 0));
    let _agent_daemon = up(&agent, &bootstrap(&fleet, 0));
    let status = homed(&tool, &first_choice(&fleet, &tool_id)).await;
    assert!(status.contains("relay map version 1"), "{status}");
    eprintln!("{status}");
    homed(&agent, &first_choice(&fleet, &agent_id)).await;
    // The map is kept in the home, in the relay's map file format.
    let kept = nullport_relay::map_file::load(&tool.join("relay-map.json")).unwrap();
    assert_eq!(kept.map.version, 1);
    assert_eq!(kept.map.admin, fleet.admin.node_id());
    // A service called end to end, whichever relays the two are homed on.
    ok(&tool, &["expose", "exec", "hello", "--", "echo", "hi"]).await;
    ok(&tool, &["allow", "agent", "hello"]).await;
    assert_eq!(pipe_output(&agent, "tool/hello").await, "hi\n");

    // Restarted with the bootstrap relay gone, the tool starts from the kept map: it homes
    // on its first choice among the relays that are up, and is reached there.
    tool_daemon.kill().await.unwrap();
    let _ = tool_daemon.wait().await;
    if let Some(relay) = fleet.relays[0].relay.take() {
        relay.shutdown().await;
    }
    let alive: Vec<RelayEntry> = fleet.entries()[1..].to_vec();
    let expected = rendezvous_order(&tool_id, &alive)[0].node_id;
    let _tool_again = up(&tool, &bootstrap(&fleet, 0));
    homed(&tool, &expected).await;
    let started = Instant::now();
    loop {
        let out = Command::new(NULLPORT)
            .arg("--home")
            .arg(&agent)
            .args(["pipe", "tool/hello"])
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap();
        if out.status.success() {
            assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
            break;
        }
        // The agent may itself be moving off the stopped relay.
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_fleet_string_is_refused_with_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("n");
    ok(&home, &["init", "--insecure-plaintext-key"]).await;
    let admin = Identity::generate().unwrap().node_id();
    let out = nullport(&home, &["up", "--relay", &format!("fleet:{admin}@h:1")]).await;
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("fleet:<admin NodeId>/<relay NodeId>@<host>:<port>"),
        "{}",
        out.stderr
    );
}
