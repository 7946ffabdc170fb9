//! Resumed opens between real nodes through a real relay: which opens resume (seen from the
//! relay's side of the wire), bytes intact, a relay that tampers with, replays or splices a
//! resumed open, a callee that lost its state, and taking resumption away.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use nullport_node::{Error, Node};
use nullport_protocol::{DenyReason, NodeId, SessionId};
use nullport_relay::testing::{Direction, HookOutput, SpliceHook, TestHooks};
use nullport_tests::{RelayOptions, TestNet, exchange, pattern, serve_echo};
use sha2::{Digest, Sha256};

/// What the relay does to one session's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    /// Forward untouched.
    Pass,
    /// Flip a bit at this offset of this direction.
    Flip(Direction, usize),
    /// Replace the caller's first chunk with the one recorded from session number `n`.
    ReplayFrom(usize),
    /// Hold the caller's first chunk (R1) back this many milliseconds, then forward it.
    HoldFirst(u64),
    /// Answer the caller with a forged REFUSED instead of the callee's first chunk (R2), and
    /// drop everything else the callee sends.
    ForgeRefused,
}

/// A relay that records every session's first chunks and acts on chosen sessions (numbered
/// from 0 in the order they first carry a byte).
#[derive(Debug, Default)]
struct Scripted {
    acts: HashMap<usize, Act>,
    state: Mutex<Script>,
}

#[derive(Debug, Default)]
struct Script {
    order: Vec<SessionId>,
    /// The first chunk each way, per session number.
    first: HashMap<(usize, bool), Bytes>,
    offsets: HashMap<(usize, bool), usize>,
}

impl Scripted {
    fn with(acts: &[(usize, Act)]) -> Arc<Self> {
        Arc::new(Self {
            acts: acts.iter().copied().collect(),
            state: Mutex::default(),
        })
    }

    /// The first handshake message's length in session `n`, caller to callee: 32 for the
    /// full handshake's message 1, more for a resumed open.
    fn first_message_len(&self, n: usize) -> Option<usize> {
        let s = self.state.lock().unwrap();
        let chunk = s.first.get(&(n, true))?;
        Some(usize::from(u16::from_be_bytes([chunk[0], chunk[1]])))
    }

    fn sessions(&self) -> usize {
        self.state.lock().unwrap().order.len()
    }
}

impl SpliceHook for Scripted {
    fn on_chunk(&self, session: SessionId, direction: Direction, chunk: Bytes) -> HookOutput {
        let mut s = self.state.lock().unwrap();
        let n = match s.order.iter().position(|x| *x == session) {
            Some(n) => n,
            None => {
                s.order.push(session);
                s.order.len() - 1
            }
        };
        let up = direction == Direction::CallerToTarget;
        let start = *s.offsets.get(&(n, up)).unwrap_or(&0);
        s.offsets.insert((n, up), start + chunk.len());
        if start == 0 {
            s.first.insert((n, up), chunk.clone());
        }
        let out = match self.acts.get(&n).copied().unwrap_or(Act::Pass) {
            Act::Flip(d, at) if d == direction && (start..start + chunk.len()).contains(&at) => {
                let mut v = chunk.to_vec();
                v[at - start] ^= 0x01;
                Bytes::from(v)
            }
            Act::ReplayFrom(from) if up && start == 0 => {
                s.first.get(&(from, true)).cloned().unwrap_or(chunk)
            }
            Act::HoldFirst(ms) if up && start == 0 => {
                // The splice task waits: nothing of this session moves meanwhile.
                drop(s);
                std::thread::sleep(std::time::Duration::from_millis(ms));
                chunk
            }
            Act::ForgeRefused if !up && start == 0 => Bytes::from_static(&[0, 1, 1]),
            Act::ForgeRefused if !up => return HookOutput::forward(Vec::new()),
            _ => chunk,
        };
        HookOutput::forward(vec![out])
    }
}

/// A relay whose splices go through `hook`.
async fn hooked_net(hook: Arc<Scripted>) -> TestNet {
    TestNet::start_with(RelayOptions {
        hooks: TestHooks {
            splice: Some(hook),
            ..Default::default()
        },
        ..Default::default()
    })
    .await
}

async fn net_with(hook: Arc<Scripted>) -> (TestNet, Node, Arc<Node>) {
    let net = hooked_net(hook).await;
    let (a, b) = (net.node().await, Arc::new(net.node().await));
    (net, a, b)
}

/// Accepts `incoming` and echoes until the caller closes, then closes.
async fn echo(incoming: nullport_node::IncomingChannel) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut ch) = incoming.accept().await else {
        return;
    };
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = ch.read(&mut buf).await {
        if n == 0 || ch.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = ch.shutdown().await;
}

/// Serves echo on `b`, counting the requests its application sees.
fn counting_echo(
    b: &Arc<Node>,
) -> (
    Arc<std::sync::atomic::AtomicUsize>,
    tokio::task::JoinHandle<()>,
) {
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let server = {
        let (b, seen) = (b.clone(), seen.clone());
        tokio::spawn(async move {
            while let Some(incoming) = b.accept().await {
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(echo(incoming));
            }
        })
    };
    (seen, server)
}

async fn echo_ok(a: &Node, b: NodeId, payload: &[u8]) {
    let mut ch = a.dial(b, "echo").await.unwrap();
    let (got, err) = exchange(&mut ch, payload).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(Sha256::digest(&got), Sha256::digest(payload));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_after_the_first_are_resumed_and_carry_bytes_intact() {
    let hook = Scripted::with(&[]);
    let (_net, a, b) = net_with(hook.clone()).await;
    let _server = serve_echo(b.clone());
    let payload = pattern(1 << 20, 3);
    echo_ok(&a, b.node_id(), &payload).await;
    assert_eq!(hook.first_message_len(0), Some(32), "first: full handshake");
    assert_eq!(
        (a.resumption_secrets(), b.resumption_secrets()),
        ((1, 0), (0, 1))
    );
    echo_ok(&a, b.node_id(), &payload).await;
    let resumed = hook.first_message_len(1).unwrap();
    assert!(resumed > 32, "second: resumed open ({resumed} bytes)");
    // Many at once: each its own counter, none refused as a replay. As many as a callee
    // lets one caller have in progress (`max_pending_per_peer`, 32), no more: beyond it the
    // callee refuses handshakes, which a loaded machine reaches.
    let a = Arc::new(a);
    let mut tasks = Vec::new();
    let at_once = nullport_node::NodeLimits::default().max_pending_per_peer as u64;
    assert_eq!(at_once, 32);
    for i in 0..at_once {
        let (a, target) = (a.clone(), b.node_id());
        tasks.push(tokio::spawn(async move {
            echo_ok(&a, target, &pattern(4096, i)).await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(hook.sessions(), 34);
    for n in 2..34 {
        assert!(hook.first_message_len(n).unwrap() > 32, "session {n}");
    }
    // Resumed opens make no new secrets: still one each way.
    assert_eq!(
        (a.resumption_secrets(), b.resumption_secrets()),
        ((1, 0), (0, 1))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_tampers_with_a_resumed_open_is_detected_both_ways() {
    // Session 1 (a resumed open): a bit of R1's encrypted part flipped; session 3 (resumed
    // again after a full one): a bit of R2 flipped. A failed resumed open drops the caller's
    // secret (in case the two sides disagree about it): the open after each is full.
    let hook = Scripted::with(&[
        (1, Act::Flip(Direction::CallerToTarget, 2 + 25 + 5)),
        (3, Act::Flip(Direction::TargetToCaller, 2 + 10)),
    ]);
    let (_net, a, b) = net_with(hook.clone()).await;
    let _server = serve_echo(b.clone());
    echo_ok(&a, b.node_id(), b"first").await;
    // R1 tampered: the callee fails it and says nothing more (the stream just ends).
    let r = a.dial(b.node_id(), "echo").await;
    assert!(
        matches!(r, Err(Error::Protocol(nullport_protocol::Error::Truncated))),
        "{r:?}"
    );
    echo_ok(&a, b.node_id(), b"full again").await;
    assert_eq!(hook.first_message_len(2), Some(32));
    // R2 tampered: the caller fails it.
    let r = a.dial(b.node_id(), "echo").await;
    assert!(
        matches!(
            r,
            Err(Error::Protocol(nullport_protocol::Error::Authentication))
        ),
        "{r:?}"
    );
    assert!(
        hook.first_message_len(3).unwrap() > 32,
        "session 3 was resumed"
    );
    echo_ok(&a, b.node_id(), b"full once more").await;
    assert_eq!(hook.first_message_len(4), Some(32));
    echo_ok(&a, b.node_id(), b"resumed").await;
    assert!(hook.first_message_len(5).unwrap() > 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_open_replayed_into_another_session_reaches_no_one() {
    // Session 2's R1 is replaced by session 1's: the callee's prologue names session 2, so
    // the replay fails authentication and the callee's application never sees it.
    let hook = Scripted::with(&[(2, Act::ReplayFrom(1))]);
    let (_net, a, b) = net_with(hook.clone()).await;
    let (seen, server) = counting_echo(&b);
    echo_ok(&a, b.node_id(), b"full").await;
    echo_ok(&a, b.node_id(), b"resumed").await;
    let r = a.dial(b.node_id(), "echo").await;
    assert!(r.is_err(), "replayed open accepted");
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 2);
    echo_ok(&a, b.node_id(), b"after").await;
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callee_that_restarted_answers_with_the_full_handshake_on_the_same_dial() {
    let hook = Scripted::with(&[]);
    let net = TestNet::start_with(RelayOptions {
        hooks: TestHooks {
            splice: Some(hook.clone()),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let a = net.node().await;
    let identity = Arc::new(nullport_protocol::Identity::generate().unwrap());
    let b = Arc::new(
        net.node_unchecked(identity.clone(), nullport_tests::fast_limits())
            .await,
    );
    b.wait_online(std::time::Duration::from_secs(5))
        .await
        .unwrap();
    let server = serve_echo(b.clone());
    echo_ok(&a, b.node_id(), b"before").await;
    server.abort();
    b.close().await;
    drop(b);
    // The same identity in a new process state: no resumption secrets.
    let b = Arc::new(
        net.node_unchecked(identity, nullport_tests::fast_limits())
            .await,
    );
    b.wait_online(std::time::Duration::from_secs(5))
        .await
        .unwrap();
    let _server = serve_echo(b.clone());
    assert_eq!(b.resumption_secrets(), (0, 0));
    echo_ok(&a, b.node_id(), b"after restart").await;
    // One dial: R1 refused, then message 1 of the full handshake on the same stream.
    let s = hook.sessions() - 1;
    assert!(hook.first_message_len(s).unwrap() > 32, "tried to resume");
    assert_eq!(
        b.resumption_secrets(),
        (0, 1),
        "and the full handshake made a new secret"
    );
    echo_ok(&a, b.node_id(), b"resumed again").await;
    assert!(hook.first_message_len(s + 1).unwrap() > 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callee_decides_every_resumed_open_and_forgetting_a_peer_ends_resumption() {
    let hook = Scripted::with(&[]);
    let (_net, a, b) = net_with(hook.clone()).await;
    // The callee refuses any open whose token (blob) says "revoked": its decision, resumed
    // or not.
    let server = {
        let b = b.clone();
        tokio::spawn(async move {
            while let Some(incoming) = b.accept().await {
                if incoming.blob() == b"revoked" {
                    let _ = incoming.deny(DenyReason::NotAllowed).await;
                    continue;
                }
                tokio::spawn(echo(incoming));
            }
        })
    };
    echo_ok(&a, b.node_id(), b"granted").await;
    let r = a.dial_with(b.node_id(), "echo", b"revoked".to_vec()).await;
    assert!(
        matches!(
            r,
            Err(Error::Denied {
                reason: DenyReason::NotAllowed,
                ..
            })
        ),
        "{r:?}"
    );
    assert!(
        hook.first_message_len(1).unwrap() > 32,
        "that was a resumed open"
    );
    // The callee forgets the caller (as when its key is revoked): the next open runs the
    // full handshake.
    b.forget_sessions(&a.node_id());
    assert_eq!(b.resumption_secrets(), (0, 0));
    echo_ok(&a, b.node_id(), b"again").await;
    let s = hook.sessions() - 1;
    assert!(
        hook.first_message_len(s).unwrap() > 32,
        "the caller still tried"
    );
    assert_eq!(
        b.resumption_secrets(),
        (0, 1),
        "full handshake after the refusal"
    );
    // The caller forgets the callee: it does not even try.
    a.forget_sessions(&b.node_id());
    echo_ok(&a, b.node_id(), b"full again").await;
    assert_eq!(hook.first_message_len(hook.sessions() - 1), Some(32));
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_predates_dial_with_still_carries_channels() {
    // Such a relay answers DialWith "malformed"; the node dials again with Dial, waits for
    // the relay's session, and runs the same handshake (full, then resumed) behind it.
    let hook = Scripted::with(&[]);
    let net = TestNet::start_with(RelayOptions {
        hooks: TestHooks {
            splice: Some(hook.clone()),
            legacy_dial: true,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let (a, b) = (net.node().await, Arc::new(net.node().await));
    let _server = serve_echo(b.clone());
    let payload = pattern(256 * 1024, 8);
    echo_ok(&a, b.node_id(), &payload).await;
    echo_ok(&a, b.node_id(), &payload).await;
    assert_eq!(
        hook.sessions(),
        2,
        "one splice per channel: the refused DialWith carried none"
    );
    assert_eq!(hook.first_message_len(0), Some(32));
    assert!(hook.first_message_len(1).unwrap() > 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_open_the_relay_holds_back_is_refused_and_the_dial_completes_once() {
    // The relay holds R1 back longer than the callee's early delay (half its handshake
    // timeout: 1 s here), then delivers it. The callee sees from the caller's age of the
    // secret, sealed in R1, that R1 is stale: it answers REFUSED without acting, and the
    // caller runs the full handshake on the same dial. The application sees one request
    // for the dial, and the bytes arrive intact.
    let hook = Scripted::with(&[(1, Act::HoldFirst(1_500))]);
    let net = TestNet::start_with(RelayOptions {
        hooks: TestHooks {
            splice: Some(hook.clone()),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let a = net.node().await;
    let mut limits = nullport_tests::fast_limits();
    limits.handshake.handshake_timeout = std::time::Duration::from_secs(2);
    let b = Arc::new(
        net.node_unchecked(
            Arc::new(nullport_protocol::Identity::generate().unwrap()),
            limits,
        )
        .await,
    );
    b.wait_online(std::time::Duration::from_secs(5))
        .await
        .unwrap();
    let (seen, server) = counting_echo(&b);
    echo_ok(&a, b.node_id(), b"full").await;
    let payload = pattern(100_000, 7);
    let mut ch = a
        .dial_sending(
            b.node_id(),
            "echo",
            Vec::new(),
            nullport_node::FirstBytes::Bytes(b"held".to_vec()),
        )
        .await
        .expect("the dial completes with the full handshake");
    let (got, err) = exchange(&mut ch, &payload).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(&got[..4], b"held", "the first bytes arrive once, first");
    assert_eq!(Sha256::digest(&got[4..]), Sha256::digest(&payload));
    assert!(
        hook.first_message_len(1).unwrap() > 32,
        "it was a resumed open"
    );
    assert_eq!(
        seen.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "one request per dial"
    );
    // The full handshake left a new ticket: the next dial resumes again.
    echo_ok(&a, b.node_id(), b"next").await;
    assert!(hook.first_message_len(2).unwrap() > 32);
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 3);
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_refused_makes_a_resumed_open_take_effect_at_most_once() {
    // The relay delivers R1 (the callee acts on it at once), then tells the caller the
    // callee refused it. The caller falls back to the full handshake on the same dial,
    // naming the R1; that fallback reaches a callee that is past its handshake, so the dial
    // fails. The callee's application saw the dial's request once, and the caller's next
    // dial works.
    let hook = Scripted::with(&[(1, Act::ForgeRefused)]);
    let (_net, a, b) = net_with(hook.clone()).await;
    let (seen, server) = counting_echo(&b);
    echo_ok(&a, b.node_id(), b"full").await;
    let r = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        a.dial_sending(
            b.node_id(),
            "echo",
            Vec::new(),
            nullport_node::FirstBytes::Bytes(b"once".to_vec()),
        ),
    )
    .await
    .expect("the dial ends");
    assert!(
        r.is_err(),
        "a dial through a forged REFUSED completed: {r:?}"
    );
    assert!(
        hook.first_message_len(1).unwrap() > 32,
        "it was a resumed open"
    );
    assert_eq!(
        seen.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "the callee's application saw the dial once"
    );
    echo_ok(&a, b.node_id(), b"next").await;
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 3);
    server.abort();
}

#[path = "resume_kinds.rs"]
mod kinds;
