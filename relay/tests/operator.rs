//! Taking access away at the relay, as an operator does it: the real `nullport-relay` binary
//! with an allowlist file and a state directory, real nodes (the `nullport-node` library over
//! real QUIC). Removing a key from the allowlist or revoking it as the network admin closes
//! its link and its splices within a second; a revoked or rotated-away key never comes back
//! (not by reconnecting, not by an invite, not by a rotation); revocation lists of any size
//! cross the link intact.
// A failed unwrap is how a test reports a failure (clippy.toml allows it inside #[test]
// functions; the helpers of an integration test need it too).
#![allow(missing_docs, clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nullport_keyring::revocation::RevocationList;
use nullport_node::{Channel, Error, Node, NodeConfig, NodeLimits, Refusal};
use nullport_protocol::relay_link::LinkErrorCode;
use nullport_protocol::{Identity, NodeId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

const RELAY: &str = env!("CARGO_BIN_EXE_nullport-relay");

struct RelayProcess {
    _child: Child,
    dir: tempfile::TempDir,
    address: String,
    key: PathBuf,
    /// Every line the relay logged so far.
    log: Arc<std::sync::Mutex<Vec<String>>>,
}

impl RelayProcess {
    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn allow_file(&self) -> PathBuf {
        self.dir.path().join("allow")
    }

    fn write_allowlist(&self, ids: &[NodeId]) {
        let text: String = ids.iter().map(|id| format!("{id}\n")).collect();
        let tmp = self.dir.path().join("allow.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.allow_file()).unwrap();
    }

    /// `nullport-relay revoke` against this relay's key and state directory.
    async fn revoke(&self, ids: &[NodeId]) -> String {
        let mut cmd = Command::new(RELAY);
        cmd.arg("revoke")
            .arg("--key")
            .arg(&self.key)
            .arg("--state-dir")
            .arg(self.state_dir());
        for id in ids {
            cmd.arg(id.to_string());
        }
        let out = cmd.output().await.unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Starts `nullport-relay run` with an allowlist of `allowed` (and `--enroll` if asked).
async fn start_relay(allowed: &[NodeId], extra: &[&str]) -> RelayProcess {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("relay.key");
    let init = Command::new(RELAY)
        .args(["init", "--insecure-plaintext-key", "--key"])
        .arg(&key)
        .output()
        .await
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let allow = dir.path().join("allow");
    let text: String = allowed.iter().map(|id| format!("{id}\n")).collect();
    std::fs::write(&allow, text).unwrap();
    let mut child = Command::new(RELAY)
        .args(["run", "--listen", "127.0.0.1:0", "--key"])
        .arg(&key)
        .arg("--allow")
        .arg(&allow)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args(extra)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stderr));
    let address = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            // "nullport-relay listening on udp 127.0.0.1:PORT as np..."
            if let Some(rest) = line.strip_prefix("nullport-relay listening on udp ") {
                let (addr, id) = rest.split_once(" as ").unwrap();
                return format!("{id}@{addr}");
            }
        }
        panic!("relay exited before listening");
    })
    .await
    .unwrap();
    // Keep draining the relay's log (shown when a test fails) so it never blocks.
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = log.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("relay: {line}");
            kept.lock().unwrap().push(line);
        }
    });
    RelayProcess {
        _child: child,
        dir,
        address,
        key,
        log,
    }
}

fn limits() -> NodeLimits {
    NodeLimits {
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(300),
        refused_backoff_max: Duration::from_millis(300),
        ..NodeLimits::default()
    }
}

async fn node(relay: &RelayProcess, identity: Arc<Identity>) -> Node {
    let mut config = NodeConfig::new(identity, relay.address.parse().unwrap());
    config.limits = limits();
    Node::start(config).await.unwrap()
}

async fn online(relay: &RelayProcess, identity: Arc<Identity>) -> Node {
    let n = node(relay, identity).await;
    n.wait_online(Duration::from_secs(5)).await.unwrap();
    n
}

fn identity() -> Arc<Identity> {
    Arc::new(Identity::generate().unwrap())
}

/// Echoes every accepted channel back.
fn serve_echo(node: Arc<Node>) {
    tokio::spawn(async move {
        while let Some(incoming) = node.accept().await {
            tokio::spawn(async move {
                if let Ok(mut ch) = incoming.accept().await {
                    let mut buf = vec![0u8; 4096];
                    while let Ok(n) = ch.read(&mut buf).await {
                        if n == 0 || ch.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = ch.shutdown().await;
                }
            });
        }
    });
}

async fn echo(ch: &mut Channel, data: &[u8]) -> std::io::Result<Vec<u8>> {
    ch.write_all(data).await?;
    let mut back = vec![0u8; data.len()];
    ch.read_exact(&mut back).await?;
    Ok(back)
}

/// Waits until `node`'s link is refused for one of the reasons in `why`; returns how long.
async fn refused_within(node: &Node, why: &[Refusal], limit: Duration) -> Duration {
    let started = Instant::now();
    let mut state = node.watch_state();
    loop {
        if let Some(refusal) = state.borrow_and_update().refusal() {
            assert!(
                why.contains(refusal),
                "refused for {refusal:?}, not {why:?}"
            );
            return started.elapsed();
        }
        let left = limit.saturating_sub(started.elapsed());
        assert!(
            tokio::time::timeout(left, state.changed()).await.is_ok(),
            "not refused within {limit:?}: {:?}",
            node.state()
        );
    }
}

/// The broken channel's error, once it breaks.
async fn broken(ch: &mut Channel) -> std::io::Error {
    loop {
        match echo(ch, b"ping").await {
            Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => return e,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_key_from_the_allowlist_closes_its_link_and_splices_within_a_second() {
    let (a_id, b_id) = (identity(), identity());
    let relay = start_relay(&[a_id.node_id(), b_id.node_id()], &[]).await;
    let a = online(&relay, a_id.clone()).await;
    let b = Arc::new(online(&relay, b_id.clone()).await);
    serve_echo(b.clone());
    let mut ch = a.dial(b.node_id(), "echo").await.unwrap();
    assert_eq!(echo(&mut ch, b"live").await.unwrap(), b"live");
    // The operator removes A; the relay re-reads the file by itself.
    relay.write_allowlist(&[b_id.node_id()]);
    let removed = Instant::now();
    let e = tokio::time::timeout(Duration::from_secs(3), broken(&mut ch))
        .await
        .expect("the splice of a removed key stayed open");
    let took = removed.elapsed();
    assert!(
        took < Duration::from_millis(1500),
        "closed after {took:?} ({e})"
    );
    refused_within(
        &a,
        &[Refusal::NotAdmitted, Refusal::NotListed],
        Duration::from_secs(2),
    )
    .await;
    // It cannot dial, query or publish any more, and B is not disturbed.
    assert!(matches!(
        a.dial(b.node_id(), "echo").await,
        Err(Error::RelayRefused(
            Refusal::NotAdmitted | Refusal::NotListed
        ))
    ));
    assert!(a.presence(b.node_id()).await.is_err());
    let list = RevocationList {
        signer: a_id.node_id(),
        version: 1,
        issued: 0,
        keys: vec![],
        tokens: vec![],
    }
    .sign(&a_id);
    assert!(a.publish_revocations(list).await.is_err());
    assert!(b.state().is_online());
    eprintln!("allowlist removal: splice broken {took:?} after the file changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_revocation_closes_the_link_and_the_key_never_returns() {
    let (a_id, b_id) = (identity(), identity());
    let relay = start_relay(&[a_id.node_id(), b_id.node_id()], &["--enroll"]).await;
    let a = online(&relay, a_id.clone()).await;
    let b = Arc::new(online(&relay, b_id.clone()).await);
    serve_echo(b.clone());
    let mut ch = a.dial(b.node_id(), "echo").await.unwrap();
    assert_eq!(echo(&mut ch, b"live").await.unwrap(), b"live");
    let said = relay.revoke(&[a_id.node_id()]).await;
    assert!(said.contains(&a_id.node_id().to_string()), "{said}");
    let revoked = Instant::now();
    tokio::time::timeout(Duration::from_secs(3), broken(&mut ch))
        .await
        .expect("the splice of a revoked key stayed open");
    let took = revoked.elapsed();
    eprintln!("admin revocation: splice broken {took:?} after revoke");
    assert!(took < Duration::from_millis(1500), "closed after {took:?}");
    refused_within(&a, &[Refusal::KeyRevoked], Duration::from_secs(2)).await;
    // B got the admin's list pushed (it can apply it if it trusts the relay's key).
    let mut lists = b.revocation_updates();
    let list = async {
        loop {
            if let Ok(batch) = lists.recv().await
                && let Some(l) = batch
                    .into_iter()
                    .find_map(|l| nullport_keyring::revocation::verify_signed(&l).ok())
                && l.keys.contains(&a_id.node_id())
            {
                return l;
            }
        }
    };
    // It may have arrived before we subscribed: ask for everything too.
    let held = b.revocation_lists().await.unwrap();
    let pushed_or_held = held
        .iter()
        .filter_map(|l| nullport_keyring::revocation::verify_signed(l).ok())
        .any(|l| l.keys.contains(&a_id.node_id()));
    if !pushed_or_held {
        tokio::time::timeout(Duration::from_secs(2), list)
            .await
            .unwrap();
    }
    // Even on the allowlist, with an invite, or restarted: refused.
    let invite = Command::new(RELAY)
        .args(["invite", "--key"])
        .arg(&relay.key)
        .output()
        .await
        .unwrap();
    let invite_text = String::from_utf8_lossy(&invite.stdout).trim().to_owned();
    let bytes = nullport_keyring::invite::Invite::from_text(&invite_text).unwrap();
    let mut config = NodeConfig::new(a_id.clone(), relay.address.parse().unwrap());
    config.limits = limits();
    config.join = Some(bytes);
    let again = Node::start(config).await.unwrap();
    refused_within(&again, &[Refusal::KeyRevoked], Duration::from_secs(3)).await;
    assert!(
        !std::fs::read_to_string(relay.allow_file())
            .unwrap()
            .contains("enrolled")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_is_first_wins_labelled_and_never_from_a_barred_key() {
    let (a_id, b_id, c_id) = (identity(), identity(), identity());
    let relay = start_relay(&[a_id.node_id(), c_id.node_id()], &[]).await;
    let a = online(&relay, a_id.clone()).await;
    // A rotates to B: B is admitted, labelled for what it is; A is retired.
    let rotation = nullport_keyring::rotation::sign(&a_id, &b_id, 1);
    a.publish_rotation(rotation.clone()).await.unwrap();
    let allow = std::fs::read_to_string(relay.allow_file()).unwrap();
    assert!(
        allow.contains(&format!(
            "{}  # rotated from {}",
            b_id.node_id(),
            a_id.node_id()
        )),
        "{allow}"
    );
    assert!(
        !allow
            .lines()
            .any(|l| l.starts_with(&a_id.node_id().to_string()))
    );
    refused_within(&a, &[Refusal::KeyRetired], Duration::from_secs(3)).await;
    let b = online(&relay, b_id.clone()).await;
    // A thief holding A's key cannot come back, and so cannot rotate A again.
    let thief = node(&relay, a_id.clone()).await;
    refused_within(&thief, &[Refusal::KeyRetired], Duration::from_secs(3)).await;
    let redirect = nullport_keyring::rotation::sign(&a_id, &identity(), 2);
    assert!(thief.publish_rotation(redirect).await.is_err());
    // The state survives: the rotations file holds only the first rotation of A.
    // (The relay writes its state shortly after a change, off the async runtime.)
    let path = relay.state_dir().join("rotations.json");
    let started = Instant::now();
    while !path.exists() && started.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rotations = std::fs::read_to_string(&path).unwrap();
    assert_eq!(rotations.matches("old_sig").count(), 1, "{rotations}");
    // A revoked key cannot rotate (it has no link), and nobody rotates *to* a revoked key.
    relay.revoke(&[c_id.node_id()]).await;
    let c = node(&relay, c_id.clone()).await;
    refused_within(&c, &[Refusal::KeyRevoked], Duration::from_secs(3)).await;
    let to_revoked = nullport_keyring::rotation::sign(&b_id, &c_id, 3);
    match b.publish_rotation(to_revoked).await {
        Err(Error::Link(LinkErrorCode::KeyRevoked)) => {}
        other => panic!("rotation to a revoked key: {other:?}"),
    }
    assert!(b.state().is_online());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_revoked_keys_and_many_lists_cross_the_link_intact() {
    let ids: Vec<Arc<Identity>> = (0..40).map(|_| identity()).collect();
    let watcher = identity();
    let mut allowed: Vec<NodeId> = ids.iter().map(|i| i.node_id()).collect();
    allowed.push(watcher.node_id());
    let relay = start_relay(&allowed, &["--max-revocation-lists", "40"]).await;
    // One signer's list of 5,000 keys (about 165 KB: larger than a 64 KiB length prefix
    // could ever carry), and 39 more lists: more than one page.
    let big_keys: Vec<NodeId> = (0..5_000u32)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[..4].copy_from_slice(&i.to_le_bytes());
            Identity::from_seed(seed).node_id()
        })
        .collect();
    let mut published = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let n = online(&relay, id.clone()).await;
        let keys = if i == 0 {
            big_keys.clone()
        } else {
            big_keys[..2_000].to_vec()
        };
        let list = RevocationList {
            signer: id.node_id(),
            version: 1,
            issued: 0,
            keys,
            tokens: vec![],
        }
        .sign(id);
        n.publish_revocations(list.clone()).await.unwrap();
        published.push(list);
        // A list signed by someone else is refused: a node publishes only its own.
        let foreign = RevocationList {
            signer: watcher.node_id(),
            version: 1,
            issued: 0,
            keys: vec![],
            tokens: vec![],
        }
        .sign(&watcher);
        assert!(n.publish_revocations(foreign).await.is_err());
        n.shutdown().await;
    }
    // The relay holds its configured maximum: the 41st signer is refused.
    let w = online(&relay, watcher.clone()).await;
    let one_more = RevocationList {
        signer: watcher.node_id(),
        version: 1,
        issued: 0,
        keys: vec![],
        tokens: vec![],
    }
    .sign(&watcher);
    match w.publish_revocations(one_more).await {
        Err(Error::Link(LinkErrorCode::ListsFull)) => {}
        other => panic!("41st list: {other:?}"),
    }
    // A node that was offline catches up on every list, byte for byte, in pages.
    let held = w.revocation_lists().await.unwrap();
    assert_eq!(held.len(), published.len());
    for list in &published {
        assert!(held.contains(list), "a list did not cross intact");
    }
    let total: usize = held.iter().map(|l| l.body.len()).sum();
    assert!(total > 2_000_000, "{total}");
    eprintln!("catch-up: {} lists, {total} bytes", held.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrollment_right_after_an_allowlist_edit_does_not_mask_the_edit() {
    let (a_id, b_id) = (identity(), identity());
    let relay = start_relay(&[a_id.node_id(), b_id.node_id()], &["--enroll"]).await;
    let _a = online(&relay, a_id.clone()).await;
    let b = online(&relay, b_id.clone()).await;
    let invite = Command::new(RELAY)
        .args(["invite", "--key"])
        .arg(&relay.key)
        .output()
        .await
        .unwrap();
    let invite =
        nullport_keyring::invite::Invite::from_text(String::from_utf8_lossy(&invite.stdout).trim())
            .unwrap();
    // The operator removes B; at once (before the relay polls the file) a node enrolls,
    // which appends to the same file.
    relay.write_allowlist(&[a_id.node_id()]);
    let mut config = NodeConfig::new(identity(), relay.address.parse().unwrap());
    config.limits = limits();
    config.join = Some(invite);
    let newcomer = Node::start(config).await.unwrap();
    newcomer.wait_online(Duration::from_secs(5)).await.unwrap();
    refused_within(
        &b,
        &[Refusal::NotAdmitted, Refusal::NotListed],
        Duration::from_secs(2),
    )
    .await;
    let allow = std::fs::read_to_string(relay.allow_file()).unwrap();
    assert!(!allow.contains(&b_id.node_id().to_string()), "{allow}");
    assert!(allow.contains(&newcomer.node_id().to_string()), "{allow}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_key_also_bars_the_key_it_was_rotated_to() {
    // A thief holding D's key rotates D to a key of its own (T) before anyone notices; the
    // admin then revokes D: T is barred too, and its link closed.
    let (d_id, t_id) = (identity(), identity());
    let relay = start_relay(&[d_id.node_id()], &[]).await;
    let d = online(&relay, d_id.clone()).await;
    d.publish_rotation(nullport_keyring::rotation::sign(&d_id, &t_id, 1))
        .await
        .unwrap();
    let t = online(&relay, t_id.clone()).await;
    relay.revoke(&[d_id.node_id()]).await;
    refused_within(&t, &[Refusal::KeyRevoked], Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_lists_is_rate_limited_per_node() {
    let a_id = identity();
    let relay = start_relay(&[a_id.node_id()], &[]).await;
    let a = online(&relay, a_id.clone()).await;
    let mut limited = None;
    for version in 1..=20u64 {
        let list = RevocationList {
            signer: a_id.node_id(),
            version,
            issued: 0,
            keys: vec![],
            tokens: vec![],
        }
        .sign(&a_id);
        if let Err(e) = a.publish_revocations(list).await {
            limited = Some((version, e));
            break;
        }
    }
    match limited {
        Some((version, Error::Link(LinkErrorCode::RateLimited))) => {
            assert!(version > 5, "limited after {version} lists");
        }
        other => panic!("20 lists in a burst: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_see_nodes_dials_and_bounded_metrics() {
    let (a_id, b_id) = (identity(), identity());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics = format!("127.0.0.1:{port}");
    let relay = start_relay(&[a_id.node_id(), b_id.node_id()], &["--metrics", &metrics]).await;
    let a = online(&relay, a_id.clone()).await;
    let b = Arc::new(online(&relay, b_id.clone()).await);
    serve_echo(b.clone());
    let mut ch = a.dial(b.node_id(), "echo").await.unwrap();
    let data = vec![7u8; 10_000];
    assert_eq!(echo(&mut ch, &data).await.unwrap(), data);
    // `nodes`: every node online, with full NodeIds, where from, bytes each way, dials.
    let out = Command::new(RELAY)
        .args(["nodes", "--metrics", &metrics, "--json"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let nodes: Vec<nullport_relay::NodeStats> = serde_json::from_slice(&out.stdout).unwrap();
    let of = |id: NodeId| nodes.iter().find(|n| n.node == id).unwrap().clone();
    let (sa, sb) = (of(a.node_id()), of(b.node_id()));
    assert_eq!(nodes.len(), 2);
    assert_eq!((sa.dials, sb.dials), (1, 0));
    // The handshake adds a few hundred bytes to the payload each way.
    assert!(sa.bytes_sent >= 10_000 && sa.bytes_sent < 12_000, "{sa:?}");
    assert!(
        sb.bytes_received >= 10_000 && sb.bytes_received < 12_000,
        "{sb:?}"
    );
    assert!(sb.bytes_sent >= 10_000 && sa.bytes_received >= 10_000);
    assert!(sa.remote.ip().is_loopback());
    let text = Command::new(RELAY)
        .args(["nodes", "--metrics", &metrics])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.starts_with("2 nodes online\n"), "{text}");
    assert!(
        text.contains(&format!("{}  from 127.0.0.1:", a.node_id())),
        "{text}"
    );
    // Metrics: build info, and per-node series under full NodeIds.
    let mut stream = tokio::net::TcpStream::connect(&metrics).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut scraped = String::new();
    stream.read_to_string(&mut scraped).await.unwrap();
    assert!(
        scraped.contains(&format!(
            "nullport_relay_build_info{{version=\"{}\",relay_link=\"2\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{scraped}"
    );
    assert!(scraped.contains(&format!(
        "nullport_relay_node_bytes_total{{node=\"{}\",direction=\"sent\"}} {}",
        a.node_id(),
        sa.bytes_sent
    )));
    assert!(scraped.contains("nullport_relay_dials_total{result=\"ok\"} 1"));
    // A browser pointed here by a DNS name (rebinding) gets nothing.
    let mut stream = tokio::net::TcpStream::connect(&metrics).await.unwrap();
    stream
        .write_all(b"GET /nodes HTTP/1.1\r\nHost: evil.example:80\r\n\r\n")
        .await
        .unwrap();
    let mut refused = String::new();
    stream.read_to_string(&mut refused).await.unwrap();
    assert!(refused.starts_with("HTTP/1.1 421 "), "{refused}");
    assert!(!refused.contains(&a.node_id().to_string()));
    // The dial is in the log at info, with both full NodeIds and the result, once.
    let dial_lines: Vec<String> = relay
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(" dial ") && l.contains(&a.node_id().to_string()))
        .cloned()
        .collect();
    assert_eq!(dial_lines.len(), 1, "{dial_lines:?}");
    assert!(
        dial_lines[0].contains(&format!("target={}", b.node_id()))
            && dial_lines[0].contains("result=\"ok\""),
        "{dial_lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_stay_on_loopback_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("relay.key");
    let init = Command::new(RELAY)
        .args(["init", "--insecure-plaintext-key", "--key"])
        .arg(&key)
        .output()
        .await
        .unwrap();
    assert!(init.status.success());
    let out = Command::new(RELAY)
        .args([
            "run",
            "--open",
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            "0.0.0.0:0",
            "--key",
        ])
        .arg(&key)
        .output()
        .await
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        e.contains("--metrics 0.0.0.0:0: metrics and /nodes (every node online, with its address) belong on loopback; use 127.0.0.1:PORT, or add --metrics-public if you mean it"),
        "{e}"
    );
}
