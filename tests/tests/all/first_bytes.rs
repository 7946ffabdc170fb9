//! A dial's first bytes (`Node::dial_sending`) between real nodes through a real relay:
//! they cross the relay before the callee decides (one round trip saved), reach the callee's
//! application only after it accepts, intact and in order, and never after a denial.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nullport_node::{Error, FirstBytes, Node};
use nullport_protocol::limits::MAX_FIRST_BYTES;
use nullport_protocol::{DenyReason, SessionId};
use nullport_tests::upstream::Upstream;
use nullport_tests::{TestNet, pattern};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn net() -> (TestNet, Arc<Upstream>, Arc<Node>, Node) {
    let counter = Arc::new(Upstream::default());
    let net = TestNet::start_with(Upstream::relay_options(&counter)).await;
    let (a, b) = (Arc::new(net.node().await), net.node().await);
    (net, counter, a, b)
}

/// Message 1 and message 3 of a full handshake for service "echo" and no token, and a data
/// frame of `len` bytes, each with its 2-byte length prefix.
fn full_handshake_then_data(len: usize) -> usize {
    let msg1 = 2 + 32;
    let msg3 = 2 + (32 + 16) + (96 + 1 + "echo".len() + 2) + 16;
    msg1 + msg3 + (2 + 1 + len + 16)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_bytes_cross_before_the_verdict_and_are_read_only_after_accept() {
    let (_net, counter, a, b) = net().await;
    let first = pattern(MAX_FIRST_BYTES, 7);
    let dial = {
        let (a, first, target) = (a.clone(), first.clone(), b.node_id());
        tokio::spawn(async move {
            a.dial_sending(target, "echo", Vec::new(), FirstBytes::Bytes(first))
                .await
        })
    };
    // The callee holds the request undecided while the first bytes cross the relay: they
    // do not wait for the verdict.
    let incoming = tokio::time::timeout(Duration::from_secs(10), b.accept())
        .await
        .unwrap()
        .unwrap();
    counter
        .wait_last_session_up(full_handshake_then_data(MAX_FIRST_BYTES))
        .await;
    assert!(!dial.is_finished(), "the dial waits for the verdict");
    let mut callee = incoming.accept().await.unwrap();
    let mut caller = dial.await.unwrap().unwrap();
    assert_eq!(caller.byte_counts().1, MAX_FIRST_BYTES as u64, "bytes out");
    let mut got = vec![0u8; MAX_FIRST_BYTES];
    callee.read_exact(&mut got).await.unwrap();
    assert!(got == first, "first bytes differ");
    // The channel goes on as any other, both ways.
    caller.write_all(b" and more").await.unwrap();
    caller.shutdown().await.unwrap();
    let mut rest = Vec::new();
    callee.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b" and more");
    callee.write_all(b"answer").await.unwrap();
    callee.shutdown().await.unwrap();
    let mut answer = Vec::new();
    caller.read_to_end(&mut answer).await.unwrap();
    assert_eq!(answer, b"answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_open_sends_first_bytes_too_and_a_denial_drops_them_unread() {
    let (_net, _counter, a, b) = net().await;
    let b = Arc::new(b);
    let server = {
        let b = b.clone();
        tokio::spawn(async move {
            while let Some(incoming) = b.accept().await {
                if incoming.service() == "closed" {
                    incoming.deny(DenyReason::NotAllowed).await.unwrap();
                    continue;
                }
                let mut ch = incoming.accept().await.unwrap();
                let mut buf = vec![0u8; 64];
                let n = ch.read(&mut buf).await.unwrap();
                ch.write_all(&buf[..n]).await.unwrap();
                ch.shutdown().await.unwrap();
            }
        })
    };
    // The first open is a full handshake, the others resume it.
    for i in 0..3u8 {
        let first = vec![b'0' + i; 10];
        let mut ch = a
            .dial_sending(
                b.node_id(),
                "echo",
                Vec::new(),
                FirstBytes::Bytes(first.clone()),
            )
            .await
            .unwrap();
        let mut echoed = Vec::new();
        ch.read_to_end(&mut echoed).await.unwrap();
        assert_eq!(echoed, first, "open {i}");
    }
    assert_eq!(
        a.resumption_secrets(),
        (1, 0),
        "opens after the first resumed"
    );
    // Denied: the caller gets the callee's reason, exactly as without first bytes.
    let r = a
        .dial_sending(
            b.node_id(),
            "closed",
            Vec::new(),
            FirstBytes::Bytes(b"secret".to_vec()),
        )
        .await;
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
    assert!(!server.is_finished());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_first_bytes_are_read_when_the_dial_starts_and_again_only_if_none_were_ready() {
    let (_net, _counter, a, b) = net().await;
    let b = Arc::new(b);
    let _server = nullport_tests::serve_echo(b.clone());
    // `gives[i]`: what the source gives on its i-th call (0: nothing ready yet).
    let dial = |gives: &'static [usize]| {
        let a = &a;
        let target = b.node_id();
        async move {
            let calls = AtomicUsize::new(0);
            let ready = FirstBytes::Ready(Box::new(|buf: &mut [u8]| {
                let i = calls.fetch_add(1, Ordering::SeqCst);
                assert_eq!(buf.len(), MAX_FIRST_BYTES);
                let n = gives[i];
                buf[..n].copy_from_slice(&b"ready"[..n]);
                n
            }));
            let mut ch = a
                .dial_sending(target, "echo", Vec::new(), ready)
                .await
                .unwrap();
            let mut echoed = [0u8; 5];
            ch.read_exact(&mut echoed).await.unwrap();
            assert_eq!(&echoed, b"ready");
            calls.load(Ordering::SeqCst)
        }
    };
    // A full handshake: the source gave its bytes at the start, once; they went behind
    // message 3.
    assert_eq!(dial(&[5]).await, 1);
    // Resumed opens: bytes ready at the start ride in R1, read once; a source with nothing
    // ready then is read again behind the answer, once more.
    assert_eq!(dial(&[5]).await, 1);
    assert_eq!(dial(&[0, 5]).await, 2);
    assert_eq!(a.resumption_secrets().0, 1, "still resuming");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_first_bytes_are_refused_before_any_dial() {
    let (_net, counter, a, b) = net().await;
    let r = a
        .dial_sending(
            b.node_id(),
            "echo",
            Vec::new(),
            FirstBytes::Bytes(vec![0; MAX_FIRST_BYTES + 1]),
        )
        .await;
    assert!(
        matches!(
            r,
            Err(Error::Protocol(nullport_protocol::Error::TooLarge {
                what: "first bytes of a dial",
                len,
                max: MAX_FIRST_BYTES,
            })) if len == MAX_FIRST_BYTES + 1
        ),
        "{r:?}"
    );
    assert_eq!(counter.last_session_up(), 0, "nothing was dialed");
}

/// A rogue caller's dial over a raw relay link: a real handshake, then `junk` bytes right
/// after message 3, before any verdict (the protocol allows one frame). Returns the task
/// writing them (it holds the sending side) and the receiving side.
async fn rogue_dial(
    conn: &quinn::Connection,
    keys: &nullport_protocol::HandshakeKeys,
    target: nullport_protocol::NodeId,
    session: u64,
    junk: usize,
) -> (
    tokio::task::JoinHandle<quinn::SendStream>,
    quinn::RecvStream,
) {
    use nullport_protocol::relay_link::{self, NodeToRelay, RelayToNode};
    use nullport_protocol::{DialRequest, Initiator, Limits, ServiceName};
    let session = SessionId(session);
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let mut out = Vec::new();
    relay_link::encode(
        &NodeToRelay::DialWith { target, session },
        relay_link::MAX_LINK_MESSAGE,
        &mut out,
    )
    .unwrap();
    let request = DialRequest {
        expected: target,
        session,
        service: ServiceName::new("echo").unwrap(),
        blob: Vec::new(),
    };
    let now = std::time::Instant::now();
    let init = Initiator::start(keys, request, Limits::default(), now, &mut out).unwrap();
    send.write_all(&out).await.unwrap();
    assert!(matches!(
        nullport_tests::read_relay_answer(&mut recv).await,
        Ok(RelayToNode::Dialed { .. })
    ));
    let mut len = [0u8; 2];
    recv.read_exact(&mut len).await.unwrap();
    let mut msg2 = vec![0u8; usize::from(u16::from_be_bytes(len))];
    recv.read_exact(&mut msg2).await.unwrap();
    out.clear();
    let _awaiting = init.handle_response(&msg2, now, &mut out).unwrap();
    out.extend(std::iter::repeat_n(0x42, junk));
    // Written in the background (flow control may hold it back); the task keeps the stream.
    let writer = tokio::spawn(async move {
        let _ = send.write_all(&out).await;
        send
    });
    (writer, recv)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_sending_more_than_its_first_bytes_before_the_verdict_is_cut_off_and_stalls_no_one()
 {
    let net = TestNet::start().await;
    let b = Arc::new(net.node().await);
    let honest = net.node().await;
    let honest_id = honest.node_id();
    // B accepts the honest caller at once and holds every other request undecided until
    // told, as an application that takes its time may.
    let (decide, decided) = tokio::sync::watch::channel(false);
    let (refused_tx, mut refused) = tokio::sync::mpsc::unbounded_channel();
    {
        let b = b.clone();
        tokio::spawn(async move {
            while let Some(incoming) = b.accept().await {
                let (mut decided, refused_tx) = (decided.clone(), refused_tx.clone());
                tokio::spawn(async move {
                    if incoming.peer() != honest_id {
                        let _ = decided.wait_for(|d| *d).await;
                    }
                    match incoming.accept().await {
                        Ok(mut ch) => {
                            let mut buf = vec![0u8; 64 * 1024];
                            while let Ok(n) = ch.read(&mut buf).await {
                                if n == 0 || ch.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                            let _ = ch.shutdown().await;
                        }
                        Err(e) => {
                            let _ = refused_tx.send(e.to_string());
                        }
                    }
                });
            }
        });
    }
    // Four rogue dials, each with 8 MiB after message 3: more than B's relay link's whole
    // receive window (16 MiB) if B left them unread.
    let (_ep, conn, identity) = nullport_tests::raw_connect(&net, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let _control = nullport_tests::raw_hello(&conn).await;
    let keys = nullport_protocol::HandshakeKeys::new(&identity).unwrap();
    let mut rogue = Vec::new();
    for i in 0..4 {
        rogue.push(rogue_dial(&conn, &keys, b.node_id(), 1000 + i, 8 << 20).await);
    }
    // The honest caller still gets through, both ways, byte for byte.
    let payload = pattern(1 << 20, 5);
    let exchange = async {
        let mut ch = honest.dial(b.node_id(), "echo").await.unwrap();
        nullport_tests::exchange(&mut ch, &payload).await
    };
    let (got, err) = tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .expect("the honest caller was stalled by the rogue's undecided channels");
    assert!(err.is_none(), "{err:?}");
    assert!(got == payload, "echo differs");
    // B's decision on each rogue channel: it cannot be accepted.
    decide.send(true).unwrap();
    for _ in 0..4 {
        let why = tokio::time::timeout(Duration::from_secs(10), refused.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(why.contains("beyond the first bytes"), "{why}");
    }
    drop(rogue);
}
