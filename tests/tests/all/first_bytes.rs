//! A dial's first bytes (`Node::dial_sending`) between real nodes through a real relay:
//! they cross the relay before the callee decides (one round trip saved), reach the callee's
//! application only after it accepts, intact and in order, and never after a denial.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use nullport_node::{Error, FirstBytes, Node};
use nullport_protocol::limits::MAX_FIRST_BYTES;
use nullport_protocol::{DenyReason, SessionId};
use nullport_relay::testing::{Direction, HookOutput, SpliceHook, TestHooks};
use nullport_tests::{RelayOptions, TestNet, pattern};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Counts the bytes each session carried from caller to callee.
#[derive(Debug, Default)]
struct Counter {
    up: Mutex<Vec<(SessionId, usize)>>,
}

impl Counter {
    /// Bytes carried caller to callee in the last session that carried any.
    fn last_session_up(&self) -> usize {
        self.up.lock().unwrap().last().map_or(0, |(_, n)| *n)
    }
}

impl SpliceHook for Counter {
    fn on_chunk(&self, session: SessionId, direction: Direction, chunk: Bytes) -> HookOutput {
        if direction == Direction::CallerToTarget {
            let mut up = self.up.lock().unwrap();
            match up.iter_mut().find(|(s, _)| *s == session) {
                Some((_, n)) => *n += chunk.len(),
                None => up.push((session, chunk.len())),
            }
        }
        HookOutput::forward(vec![chunk])
    }
}

async fn net() -> (TestNet, Arc<Counter>, Arc<Node>, Node) {
    let counter = Arc::new(Counter::default());
    let net = TestNet::start_with(RelayOptions {
        hooks: TestHooks {
            splice: Some(counter.clone()),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
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
    let want = full_handshake_then_data(MAX_FIRST_BYTES);
    let crossed = async {
        while counter.last_session_up() < want {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), crossed)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "only {} of {want} bytes crossed before the verdict",
                counter.last_session_up()
            )
        });
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
async fn ready_first_bytes_are_read_once_when_the_last_message_goes_out() {
    let (_net, _counter, a, b) = net().await;
    let b = Arc::new(b);
    let _server = nullport_tests::serve_echo(b.clone());
    let calls = AtomicUsize::new(0);
    let ready = FirstBytes::Ready(Box::new(|buf: &mut [u8]| {
        calls.fetch_add(1, Ordering::SeqCst);
        assert_eq!(buf.len(), MAX_FIRST_BYTES);
        buf[..5].copy_from_slice(b"ready");
        5
    }));
    let mut ch = a
        .dial_sending(b.node_id(), "echo", Vec::new(), ready)
        .await
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let mut echoed = [0u8; 5];
    ch.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"ready");
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
