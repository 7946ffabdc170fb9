//! Resource exhaustion against the relay and a callee: the relay and everyone else keep
//! serving legitimate traffic.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nullport_node::{Node, NodeConfig};
use nullport_protocol::Identity;
use nullport_protocol::relay_link::{self, NodeToRelay};
use nullport_relay::RelayLimits;
use nullport_tests::{RelayOptions, TestNet, fast_limits, pattern, raw_hello};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_flood_is_bounded_and_reclaimed() {
    nullport_tests::init_tracing();
    let limits = RelayLimits {
        admission_deadline: Duration::from_secs(2),
        max_pending: 100,
        max_pending_per_ip: 10,
        ..RelayLimits::default()
    };
    let net = TestNet::start_with(RelayOptions {
        limits: Some(limits),
        ..Default::default()
    })
    .await;
    let metrics = net.relay().metrics();
    // 20 connections from 127.0.0.1 that finish TLS but never say hello; 3 of them drip one
    // byte of a hello a second.
    let mut stallers = Vec::new();
    let mut refused_at_once = 0;
    for i in 0..20 {
        match nullport_tests::raw_connect(&net, "127.0.0.1:0".parse().unwrap()).await {
            Ok((endpoint, conn, _)) => {
                if i < 3 {
                    let c = conn.clone();
                    tokio::spawn(async move {
                        if let Ok((mut send, _recv)) = c.open_bi().await {
                            for b in [0u8, 3, 0] {
                                let _ = send.write_all(&[b]).await;
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                        }
                    });
                }
                stallers.push((endpoint, conn));
            }
            Err(_) => refused_at_once += 1,
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        metrics.pending.load(Ordering::Relaxed) <= 10,
        "pending over the per-IP cap"
    );
    // quinn's refusal reaches the client as a failed or immediately closed connection.
    let closed_now = stallers
        .iter()
        .filter(|(_, c)| c.close_reason().is_some())
        .count();
    assert!(
        refused_at_once + closed_now >= 10,
        "only {refused_at_once} + {closed_now} of 20 refused at once"
    );
    // A legitimate node from another source address is admitted promptly meanwhile.
    let mut config = NodeConfig::new(Arc::new(Identity::generate().unwrap()), net.relay_addr());
    config.limits = fast_limits();
    config.bind = Some("127.0.0.2:0".parse().unwrap());
    let started = Instant::now();
    let legit = Node::start(config).await.unwrap();
    legit
        .wait_online(Duration::from_secs(2))
        .await
        .unwrap_or_else(|e| panic!("legit node not admitted: {e}"));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "admission took {:?}",
        started.elapsed()
    );
    // Every staller is closed at the admission deadline, and every permit is reclaimed.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for (_, conn) in &stallers {
        assert!(
            conn.close_reason().is_some(),
            "a staller outlived the admission deadline"
        );
    }
    assert_eq!(metrics.pending.load(Ordering::Relaxed), 0);
    assert_eq!(metrics.nodes_online.load(Ordering::Relaxed), 1);
}

/// `n` dials to `target` over a raw relay link that never send message 1: handshakes the
/// callee holds in progress until its deadline.
async fn half_open_dials(
    conn: &quinn::Connection,
    target: nullport_protocol::NodeId,
    n: usize,
) -> Vec<(StopWatch, quinn::RecvStream)> {
    let mut streams = Vec::new();
    for _ in 0..n {
        let (mut send, recv) = conn.open_bi().await.unwrap();
        let mut buf = Vec::new();
        relay_link::encode(
            &NodeToRelay::Dial { target },
            relay_link::MAX_LINK_MESSAGE,
            &mut buf,
        )
        .unwrap();
        let _ = send.write_all(&buf).await;
        // A refused dial's stream is stopped by the callee (through the relay); quinn does
        // not answer a stop by itself, and a stream never reset keeps counting against the
        // relay's stream limit for this connection, which would stall the next `open_bi`
        // until the connection idles out. So the sending half is reset once stopped, with
        // the stop's code, as a client that drops it would.
        let watch = tokio::spawn(async move {
            let code = send.stopped().await.ok().flatten()?;
            let _ = send.reset(code);
            Some(code)
        });
        streams.push((watch, recv));
    }
    streams
}

/// The stop code a half-open dial's sending half received (`None`: the connection ended).
type StopWatch = tokio::task::JoinHandle<Option<quinn::VarInt>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_flood_at_a_callee_is_capped_per_caller() {
    nullport_tests::init_tracing();
    let net = TestNet::start().await;
    let limits = nullport_node::NodeLimits {
        max_pending_per_peer: 8,
        ..fast_limits()
    };
    let b = Arc::new(
        net.node_unchecked(Arc::new(Identity::generate().unwrap()), limits)
            .await,
    );
    b.wait_online(Duration::from_secs(5)).await.unwrap();
    let c = net.node().await;
    let b2 = b.clone();
    tokio::spawn(async move {
        while let Some(incoming) = b2.accept().await {
            tokio::spawn(async move {
                if let Ok(mut ch) = incoming.accept().await {
                    let _ = ch.write_all(b"hi").await;
                    let _ = ch.shutdown().await;
                }
            });
        }
    });
    // The attacker: an admitted node that opens 50 dials to B and never sends message 1.
    let (_ep, conn, _) = nullport_tests::raw_connect(&net, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let _control = raw_hello(&conn).await;
    let mut reset = 0;
    let mut streams = half_open_dials(&conn, b.node_id(), 50).await;
    // Past its per-caller cap, B resets the extra streams (the relay propagates the reset).
    // A refused stream is reset (its `Dialed` may be discarded with it); one still waiting
    // for the handshake just stays silent.
    for (_, recv) in &mut streams {
        let mut buf = [0u8; 64];
        let refused = loop {
            match tokio::time::timeout(Duration::from_millis(300), recv.read(&mut buf)).await {
                Ok(Ok(Some(_))) => continue, // the Dialed answer
                Ok(Ok(None) | Err(_)) => break true,
                Err(_) => break false,
            }
        };
        reset += usize::from(refused);
    }
    assert!(
        reset >= 40,
        "only {reset} of 50 half-open handshakes were refused"
    );
    // Another caller still gets through promptly.
    let started = Instant::now();
    let mut ch = c.dial(b.node_id(), "greet").await.unwrap();
    let mut got = Vec::new();
    ch.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"hi");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callee_at_its_handshake_cap_answers_busy_and_the_caller_says_so() {
    let net = TestNet::start().await;
    // B holds at most 8 handshakes in progress (all of them over its one relay link).
    let limits = nullport_node::NodeLimits {
        max_pending_handshakes: 8,
        ..fast_limits()
    };
    let b = Arc::new(
        net.node_unchecked(Arc::new(Identity::generate().unwrap()), limits)
            .await,
    );
    b.wait_online(Duration::from_secs(5)).await.unwrap();
    let _server = nullport_tests::serve_echo(b.clone());
    let a = net.node().await;
    // The attacker: half-open dials that never send message 1, one more than B takes.
    let (_ep, conn, _) = nullport_tests::raw_connect(&net, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let _control = raw_hello(&conn).await;
    let mut streams = half_open_dials(&conn, b.node_id(), 9).await;
    // The ninth is refused with the busy code, passed on by the relay.
    let mut refused = 0;
    for (watch, recv) in &mut streams {
        let mut buf = [0u8; 64];
        loop {
            match tokio::time::timeout(Duration::from_millis(500), recv.read(&mut buf)).await {
                Ok(Ok(Some(_))) => continue, // the Dialed answer
                Ok(Err(quinn::ReadError::Reset(code))) => {
                    assert_eq!(code, relay_link::STREAM_BUSY.into());
                    // B stopped reading it with the same code, and the relay passed the
                    // stop on too.
                    let stopped = tokio::time::timeout(Duration::from_secs(5), watch)
                        .await
                        .expect("the refused dial was never stopped")
                        .unwrap();
                    assert_eq!(stopped, Some(relay_link::STREAM_BUSY.into()));
                    refused += 1;
                    break;
                }
                Ok(other) => panic!("unexpected end of a half-open dial: {other:?}"),
                Err(_) => break, // still waiting for its message 1
            }
        }
    }
    assert_eq!(refused, 1);
    // A real caller now gets a clear "busy", not a stream reset.
    let r = a.dial(b.node_id(), "echo").await;
    assert!(
        matches!(r, Err(nullport_node::Error::PeerBusy(id)) if id == b.node_id()),
        "{r:?}"
    );
    // Once the half-open dials are gone, it gets through.
    drop(streams);
    drop(conn);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match a.dial(b.node_id(), "echo").await {
            Ok(_) => break,
            Err(nullport_node::Error::PeerBusy(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_the_callee_cuts_is_a_dial_reset_and_the_relay_link_stays_up() {
    let net = TestNet::start().await;
    let a = net.node().await;
    let b = Arc::new(net.node().await);
    let _server = nullport_tests::serve_echo(b.clone());
    // C, on a raw relay link, cuts every incoming dial once the relay has announced it:
    // reset and stop with code 7.
    let (_ep, conn, c) = nullport_tests::raw_connect(&net, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let _control = raw_hello(&conn).await;
    let cutter = {
        let conn = conn.clone();
        tokio::spawn(async move {
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                let header = nullport_tests::read_relay_answer(&mut recv).await;
                assert!(
                    matches!(header, Ok(relay_link::RelayToNode::Incoming { .. })),
                    "{header:?}"
                );
                let _ = send.reset(7u32.into());
                let _ = recv.stop(7u32.into());
            }
        })
    };
    // The caller names the cut, its peer and its code, instead of "relay link lost".
    for _ in 0..3 {
        let r = a.dial(c.node_id(), "echo").await;
        assert!(
            matches!(&r, Err(nullport_node::Error::DialReset { peer, code: 7 }) if *peer == c.node_id()),
            "{r:?}"
        );
    }
    // Its relay link is up: the next dial, to B, goes through on it at once.
    let started = Instant::now();
    let mut ch = a.dial(b.node_id(), "echo").await.unwrap();
    ch.write_all(b"still here").await.unwrap();
    ch.shutdown().await.unwrap();
    let mut got = Vec::new();
    ch.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"still here");
    assert!(started.elapsed() < Duration::from_secs(2));
    cutter.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_backpressures_only_its_sender() {
    let net = TestNet::start().await;
    let (a, b, c, d) = (
        net.node().await,
        Arc::new(net.node().await),
        net.node().await,
        Arc::new(net.node().await),
    );
    // B accepts and then never reads.
    let b2 = b.clone();
    let held = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let held2 = held.clone();
    tokio::spawn(async move {
        while let Some(incoming) = b2.accept().await {
            if let Ok(ch) = incoming.accept().await {
                held2.lock().await.push(ch);
            }
        }
    });
    // D echoes.
    let d2 = d.clone();
    tokio::spawn(async move {
        while let Some(incoming) = d2.accept().await {
            tokio::spawn(async move {
                if let Ok(mut ch) = incoming.accept().await {
                    let mut buf = vec![0u8; 65536];
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
    let mut flood = a.dial(b.node_id(), "sink").await.unwrap();
    let chunk = vec![0u8; 64 * 1024];
    let flooded = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let f2 = flooded.clone();
    let flooder = tokio::spawn(async move {
        loop {
            if flood.write_all(&chunk).await.is_err() {
                return;
            }
            f2.fetch_add(chunk.len(), Ordering::Relaxed);
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Meanwhile C and D exchange 8 MiB with the right bytes.
    let data = pattern(8 << 20, 5);
    let mut ch = c.dial(d.node_id(), "echo").await.unwrap();
    let (mut r, mut w) = tokio::io::split(&mut ch);
    let write = async {
        w.write_all(&data).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let mut got = Vec::new();
    let started = Instant::now();
    let (_, n) = tokio::join!(write, r.read_to_end(&mut got));
    assert_eq!(n.ok(), Some(data.len()));
    assert!(got == data);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "C-D slowed: {:?}",
        started.elapsed()
    );
    // A is held back by flow control: what it could write is bounded by the windows on its
    // path (relay and B stream windows, 4 MiB each, plus the channel's own buffer).
    let stuck_at = flooded.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        flooded.load(Ordering::Relaxed),
        stuck_at,
        "A is still writing: no backpressure"
    );
    assert!(
        stuck_at < 12 << 20,
        "A buffered {stuck_at} bytes into a consumer that never reads"
    );
    flooder.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_channels_dripping_a_byte_a_second_do_not_slow_others() {
    nullport_tests::init_tracing();
    let net = TestNet::start().await;
    let (attacker, a, b) = (
        net.node().await,
        net.node().await,
        Arc::new(net.node().await),
    );
    let b2 = b.clone();
    tokio::spawn(async move { nullport_tests::sink(&b2).await });
    // 32 established channels to B, each sending one byte a second for 3 seconds.
    let mut drips = Vec::new();
    for _ in 0..32 {
        let mut ch = attacker.dial(b.node_id(), "sink").await.unwrap();
        drips.push(tokio::spawn(async move {
            for _ in 0..3 {
                ch.write_all(b"x").await?;
                ch.flush().await?;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            ch.shutdown().await?;
            let mut digest = Vec::new();
            ch.read_to_end(&mut digest).await?;
            Ok::<_, std::io::Error>(digest)
        }));
    }
    let metrics = net.relay().metrics();
    assert!(metrics.splices_open.load(Ordering::Relaxed) >= 32);
    // Meanwhile a legitimate caller moves 4 MiB to the same callee, intact and promptly.
    let data = pattern(4 << 20, 9);
    let started = Instant::now();
    nullport_tests::send_to_sink(&a, b.node_id(), &data).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "legitimate transfer took {took:?}"
    );
    // The slow channels are legitimate too: each completes with its 3 bytes.
    for d in drips {
        let got = d.await.unwrap().unwrap();
        use sha2::Digest;
        assert_eq!(got, sha2::Sha256::digest(b"xxx").to_vec());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        metrics.splices_open.load(Ordering::Relaxed),
        0,
        "splices leaked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_forged_quic_initials_cost_nothing_lasting() {
    nullport_tests::init_tracing();
    let net = TestNet::start().await;
    let metrics = net.relay().metrics();
    // 5,000 datagrams that look like QUIC v1 Initial packets (long header, version 1,
    // random connection ids, padded to 1,200 bytes) from 50 source ports: each makes the
    // relay derive Initial keys and try to open a packet it cannot authenticate.
    let mut sockets = Vec::new();
    for _ in 0..50 {
        sockets.push(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    }
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let started = Instant::now();
    for i in 0..5_000usize {
        let mut packet = vec![0u8; 1200];
        for chunk in packet.chunks_mut(8) {
            let r = next().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
        packet[0] = 0xC0 | (packet[0] & 0x0F); // long header, Initial
        packet[1..5].copy_from_slice(&1u32.to_be_bytes()); // QUIC v1
        packet[5] = 8; // DCID length
        packet[14] = 8; // SCID length
        packet[23] = 0; // token length
        packet[24] = 0x44; // payload length (2-byte varint) ...
        packet[25] = 0x96; // ... 1,174: the rest of the datagram
        let _ = sockets[i % sockets.len()].send_to(&packet, net.addr).await;
    }
    let flood_time = started.elapsed();
    // The relay stays responsive: a node is admitted and two nodes talk right after.
    let started = Instant::now();
    let (a, b) = (net.node().await, Arc::new(net.node().await));
    let b2 = b.clone();
    tokio::spawn(async move { nullport_tests::sink(&b2).await });
    nullport_tests::send_to_sink(&a, b.node_id(), &pattern(1 << 20, 4)).await;
    let served = started.elapsed();
    eprintln!(
        "5,000 forged Initials sent in {flood_time:?}; two nodes admitted and served in {served:?}"
    );
    assert!(served < Duration::from_secs(3), "{served:?}");
    // Nothing from the flood is left pending, nothing was admitted.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(metrics.pending.load(Ordering::Relaxed), 0);
    assert_eq!(metrics.nodes_online.load(Ordering::Relaxed), 2);
}
