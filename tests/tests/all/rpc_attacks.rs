//! Typed RPC against peers that break the protocol on purpose (the review's findings): a
//! caller repeating END or sending after it, reusing a call id after CANCEL, holding too many
//! channels; a callee that floods STATUS frames or stops reading. Raw frames over a real
//! channel through a real relay.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nullport_node::Channel;
use nullport_node::rpc::{CallOptions, Code, RpcClient};
use nullport_protocol::rpc::{Code as WireCode, Frame, Hello, Open, RPC_VERSION, Shape, Status};
use nullport_protocol::{DenyReason, NodeId};
use nullport_tests::TestNet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::rpc::{Probes, allow_all, callee};

fn hello(window: u32) -> Frame {
    Frame::Hello(Hello {
        version: RPC_VERSION,
        max_message: 1 << 20,
        max_in_flight: 64,
        window,
    })
}

fn open(call: u32, method: &str, shape: Shape) -> Frame {
    Frame::Open {
        call,
        open: Open {
            method: method.into(),
            shape,
            deadline_ms: None,
        },
    }
}

async fn send(channel: &mut Channel, frames: &[Frame]) {
    let mut bytes = Vec::new();
    for f in frames {
        f.encode(&mut bytes).unwrap();
    }
    channel.write_all(&bytes).await.unwrap();
    channel.flush().await.unwrap();
}

/// Reads frames until `want` says stop or the channel ends (`None`).
async fn read_until(
    channel: &mut Channel,
    buf: &mut Vec<u8>,
    mut want: impl FnMut(&Frame) -> bool,
) -> Option<Frame> {
    loop {
        while let Ok(Some((frame, used))) = Frame::decode(buf, 1 << 20) {
            buf.drain(..used);
            if want(&frame) {
                return Some(frame);
            }
        }
        let mut chunk = [0u8; 65536];
        match tokio::time::timeout(Duration::from_secs(5), channel.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return None,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => panic!("no frame within 5 s"),
        }
    }
}

fn echo_request(call: u32) -> Frame {
    Frame::Message {
        call,
        body: postcard::to_allocvec(&vec![7u8; 3]).unwrap(),
    }
}

#[tokio::test]
async fn rpc_attack_end_twice_or_data_after_end_loses_the_channel() {
    let net = TestNet::start().await;
    let attacker = net.node().await;
    let me = attacker.node_id();
    let probes = Probes::default();
    let callee = callee(&net, |_| allow_all(&[me]), |s| s, &probes).await;
    let sleep = Frame::Message {
        call: 1,
        body: postcard::to_allocvec(&60_000u64).unwrap(),
    };
    for second in [Frame::End { call: 1 }, echo_request(1)] {
        let mut raw = attacker.dial(callee.node.node_id(), "work").await.unwrap();
        // A call whose handler is still running (sleeping) after its END; then END again,
        // or another request after the END.
        send(
            &mut raw,
            &[
                hello(8),
                open(1, "sleep", Shape::Unary),
                sleep.clone(),
                Frame::End { call: 1 },
            ],
        )
        .await;
        let deadline = Instant::now() + Duration::from_secs(5);
        while callee.server.calls_in_flight() != 1 {
            assert!(Instant::now() < deadline, "the call never started");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        send(&mut raw, &[second]).await;
        // The channel ends (no frame but the HELLO ever comes back) and the call is stopped.
        let mut buf = Vec::new();
        let seen = read_until(&mut raw, &mut buf, |f| !matches!(f, Frame::Hello(_))).await;
        assert!(seen.is_none(), "{seen:?}");
        let deadline = Instant::now() + Duration::from_secs(5);
        while callee.server.calls_in_flight() != 0 {
            assert!(Instant::now() < deadline, "the call was not stopped");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test]
async fn rpc_attack_call_id_reused_after_cancel_is_answered() {
    let net = TestNet::start().await;
    let attacker = net.node().await;
    let me = attacker.node_id();
    let probes = Probes::default();
    let callee = callee(&net, |_| allow_all(&[me]), |s| s, &probes).await;
    let mut raw = attacker.dial(callee.node.node_id(), "work").await.unwrap();
    let sleep = |call| Frame::Message {
        call,
        body: postcard::to_allocvec(&60_000u64).unwrap(),
    };
    send(&mut raw, &[hello(8)]).await;
    for _ in 0..20 {
        // Open a sleeping call, cancel it, and reuse its id at once for an echo.
        send(
            &mut raw,
            &[
                open(5, "sleep", Shape::Unary),
                sleep(5),
                Frame::End { call: 5 },
                Frame::Cancel { call: 5 },
                open(5, "echo", Shape::Unary),
                echo_request(5),
                Frame::End { call: 5 },
            ],
        )
        .await;
        let mut buf = Vec::new();
        let status = read_until(&mut raw, &mut buf, |f| matches!(f, Frame::Status { .. })).await;
        assert!(
            matches!(
                status,
                Some(Frame::Status {
                    call: 5,
                    status: Status {
                        code: WireCode::Ok,
                        ..
                    }
                })
            ),
            "the reused id's call is answered: {status:?}"
        );
    }
}

#[tokio::test]
async fn rpc_attack_channels_per_caller_are_capped() {
    let net = TestNet::start().await;
    let greedy = net.node().await;
    let other = net.node().await;
    let ids = [greedy.node_id(), other.node_id()];
    let probes = Probes::default();
    let callee = callee(&net, |_| allow_all(&ids), |s| s, &probes).await;
    let target = callee.node.node_id();
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(RpcClient::connect(&greedy, target, "work").await.unwrap());
    }
    let e = RpcClient::connect(&greedy, target, "work")
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::Denied, "{e}");
    assert!(
        e.message.contains(&DenyReason::RateLimited.to_string()),
        "{e}"
    );
    // Another caller is not affected, and a freed slot is usable again.
    let client = RpcClient::connect(&other, target, "work").await.unwrap();
    let sum: u64 = client
        .unary("add", &(1u64, 2u64), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(sum, 3);
    drop(held.pop());
    let mut again = None;
    for _ in 0..40 {
        match RpcClient::connect(&greedy, target, "work").await {
            Ok(c) => {
                again = Some(c);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert!(again.is_some(), "the slot of a closed channel comes back");
}

/// A fake callee: accepts one channel, announces `window`, and hands it to `act`.
async fn fake_callee<F, Fut>(
    net: &TestNet,
    window: u32,
    act: F,
) -> (Arc<nullport_node::Node>, NodeId)
where
    F: FnOnce(Channel) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let node = Arc::new(net.node().await);
    let id = node.node_id();
    let n = node.clone();
    tokio::spawn(async move {
        let incoming = n.accept().await.unwrap();
        let mut channel = incoming.accept().await.unwrap();
        send(&mut channel, &[hello(window)]).await;
        act(channel).await;
    });
    (node, id)
}

#[tokio::test]
async fn rpc_attack_a_callee_flooding_status_frames_ends_only_its_call() {
    let net = TestNet::start().await;
    let caller = net.node().await;
    let (_callee, id) = fake_callee(&net, 8, |mut channel| async move {
        let mut buf = Vec::new();
        // Wait for the first call, answer it 20,000 times, then answer the second properly.
        let _ = read_until(&mut channel, &mut buf, |f| {
            matches!(f, Frame::Open { call: 1, .. })
        })
        .await;
        let denied = Frame::Status {
            call: 1,
            status: Status {
                code: WireCode::Denied,
                message: "no".into(),
            },
        };
        let flood: Vec<Frame> = (0..20_000).map(|_| denied.clone()).collect();
        send(&mut channel, &flood).await;
        let _ = read_until(&mut channel, &mut buf, |f| {
            matches!(f, Frame::Open { call: 2, .. })
        })
        .await;
        send(
            &mut channel,
            &[
                Frame::Message {
                    call: 2,
                    body: postcard::to_allocvec(&7u64).unwrap(),
                },
                Frame::Status {
                    call: 2,
                    status: Status {
                        code: WireCode::Ok,
                        message: String::new(),
                    },
                },
                // Frames for a call that ended are dropped.
                Frame::Message {
                    call: 1,
                    body: vec![0; 1000],
                },
            ],
        )
        .await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    })
    .await;
    let client = RpcClient::connect(&caller, id, "work").await.unwrap();
    let e = client
        .unary::<_, u64>("a", &(), CallOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::Denied);
    let seven: u64 = client
        .unary("b", &(), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(seven, 7);
}

#[tokio::test]
async fn rpc_attack_a_callee_that_stops_reading_cannot_outlast_deadlines() {
    let net = TestNet::start().await;
    let caller = net.node().await;
    let (_callee, id) = fake_callee(&net, 8, |channel| async move {
        // Never reads: the caller's writes back up into its queue.
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(channel);
    })
    .await;
    let client = RpcClient::connect(&caller, id, "work").await.unwrap();
    let started = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let client = client.clone();
        calls.spawn(async move {
            client
                .unary::<_, ()>(
                    "x",
                    &vec![0u8; 256 * 1024],
                    CallOptions::deadline(Duration::from_secs(1)),
                )
                .await
        });
    }
    while let Some(r) = calls.join_next().await {
        let e = r.unwrap().unwrap_err();
        assert_eq!(e.code, Code::DeadlineExceeded, "{e}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
