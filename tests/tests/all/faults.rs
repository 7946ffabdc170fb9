//! Faults: a callee killed (SIGKILL, no goodbye) and restarted mid-transfer, and a relay-link
//! stream flood. The caller gets a clean error, never a wrong result, and the next try works.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nullport_relay::RelayLimits;
use nullport_tests::{RelayOptions, TestNet, init_tracing, pattern, send_to_sink};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TESTNODE: &str = env!("CARGO_BIN_EXE_np-testnode");

struct Sink(Child);

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `np-testnode sink` as a separate process with a fixed identity.
fn spawn_sink(net: &TestNet, seed: u8) -> (Sink, String) {
    let mut child = Command::new(TESTNODE)
        .args(["sink", "--relay", &net.relay_addr().to_string()])
        .env("NP_TESTNODE_SEED", seed.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    let id = line
        .trim()
        .strip_prefix("node ")
        .unwrap_or_else(|| panic!("sink said {line:?}"))
        .to_owned();
    (Sink(child), id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callee_killed_mid_transfer_fails_cleanly_and_the_retry_succeeds() {
    init_tracing();
    let net = TestNet::start().await;
    let a = net.node().await;
    let (mut sink, b_id) = spawn_sink(&net, 41);
    let b: nullport_protocol::NodeId = b_id.parse().unwrap();

    let mut ch = a.dial(b, "sink").await.unwrap();
    let chunk = pattern(1 << 20, 5);
    for _ in 0..4 {
        ch.write_all(&chunk).await.unwrap();
    }
    // SIGKILL: no close frame, no QUIC goodbye. Then the callee comes back as itself.
    let _ = sink.0.kill();
    let _ = sink.0.wait();
    let killed_at = Instant::now();
    let (_sink2, b_id2) = spawn_sink(&net, 41);
    assert_eq!(b_id2, b_id);

    // The caller keeps writing; the channel must fail (never report success) promptly.
    let outcome = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            ch.write_all(&chunk).await?;
            if killed_at.elapsed() > Duration::from_secs(15) {
                ch.shutdown().await?;
                let mut digest = Vec::new();
                ch.read_to_end(&mut digest).await?;
                return Ok::<_, std::io::Error>(digest);
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the caller hung after the callee died"));
    let err = match outcome {
        Ok(digest) => panic!("a dead callee's channel reported success: {digest:?}"),
        Err(e) => e,
    };
    eprintln!(
        "caller saw {:?} ({err}) {:?} after the kill",
        err.kind(),
        killed_at.elapsed()
    );
    assert!(killed_at.elapsed() < Duration::from_secs(15));

    // The retry reaches the restarted callee and delivers intact bytes.
    let data = pattern(4 << 20, 6);
    send_to_sink(&a, b, &data).await;
}

/// Resident memory of this process (relay, nodes and test together), in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_flood_is_capped_stalled_streams_expire_and_resets_cost_nothing() {
    init_tracing();
    let limits = RelayLimits {
        max_streams_per_node: 16,
        request_deadline: Duration::from_secs(1),
        ..RelayLimits::default()
    };
    let net = TestNet::start_with(RelayOptions {
        limits: Some(limits),
        ..Default::default()
    })
    .await;
    let (a, b) = (net.node().await, Arc::new(net.node().await));
    let _sink = tokio::spawn({
        let b = b.clone();
        async move { nullport_tests::sink(&b).await }
    });

    // An admitted flooder on a raw relay link.
    let (_endpoint, conn, _) = nullport_tests::raw_connect(&net, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let _control = nullport_tests::raw_hello(&conn).await;

    // 1. Open streams and stall each after one byte of a dial: the relay's limit holds.
    let mut stalled = Vec::new();
    for _ in 0..40 {
        match tokio::time::timeout(Duration::from_millis(300), conn.open_bi()).await {
            Ok(Ok((mut send, recv))) => {
                send.write_all(&[0]).await.unwrap();
                stalled.push((send, recv));
            }
            Ok(Err(e)) => panic!("{e}"),
            Err(_) => break,
        }
    }
    assert!(
        stalled.len() < 16,
        "opened {} streams past a limit of 16 (one is control)",
        stalled.len()
    );
    // Meanwhile other nodes are served.
    let started = Instant::now();
    let data = pattern(1 << 20, 2);
    send_to_sink(&a, b.node_id(), &data).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // 2. At the request deadline (1 s) the relay gives up on every stalled stream: each is
    // stopped from the relay's side. Dropping ours then returns the credit.
    let stall_started = Instant::now();
    for (send, _recv) in &mut stalled {
        let stopped = tokio::time::timeout(Duration::from_secs(3), send.stopped()).await;
        assert!(
            matches!(stopped, Ok(Ok(_))),
            "a stalled stream outlived the request deadline: {stopped:?}"
        );
    }
    eprintln!(
        "stalled streams stopped by the relay after {:?}",
        stall_started.elapsed()
    );
    drop(stalled);
    let reopened = tokio::time::timeout(Duration::from_secs(3), conn.open_bi()).await;
    assert!(
        matches!(reopened, Ok(Ok(_))),
        "stream credit never returned after the request deadline"
    );
    drop(reopened);

    // 3. A reset flood: 2,000 streams opened, one byte written, reset at once.
    let rss_before = rss_kib();
    let flood_started = Instant::now();
    for _ in 0..2000 {
        let Ok(Ok((mut send, mut recv))) =
            tokio::time::timeout(Duration::from_secs(5), conn.open_bi()).await
        else {
            panic!("the relay stopped granting streams during a reset flood");
        };
        let _ = send.write_all(&[0]).await;
        let _ = send.reset(0u32.into());
        let _ = recv.stop(0u32.into());
    }
    let flood_time = flood_started.elapsed();
    let rss_after = rss_kib();
    eprintln!(
        "2,000 reset streams in {flood_time:?}; resident memory {rss_before} -> {rss_after} KiB"
    );
    // Stated bound: a reset flood grows this process (relay + 3 links) by under 32 MiB.
    // Only meaningful when no other test shares the process (nextest runs one per process;
    // `cargo test` runs them all in one, where bulk tests dwarf this figure).
    if std::env::var("NEXTEST_EXECUTION_MODE").as_deref() == Ok("process-per-test") {
        assert!(
            rss_after.saturating_sub(rss_before) < 32 << 10,
            "{rss_before} -> {rss_after} KiB"
        );
    }
    // Legitimate traffic still flows, and the relay holds no splice for the flooder.
    send_to_sink(&a, b.node_id(), &data).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        net.relay().metrics().splices_open.load(Ordering::Relaxed),
        0
    );
}
