//! Typed RPC between nodes through a real relay: every call shape byte-exact, concurrency,
//! deadlines and cancellation that reach the callee, a caller going away, and the bounds
//! (message size, calls in flight) refusing one caller without disturbing another. The
//! per-method policy and the examples as processes are in `rpc_policy.rs`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use nullport_node::Node;
use nullport_node::rpc::{
    CallOptions, Code, PolicyAccess, Requests, Responses, RpcClient, RpcLimits, RpcServer,
    RpcService,
};
use nullport_protocol::NodeId;
use nullport_protocol::rpc::{Frame, Hello, Open, RPC_VERSION, Shape};
use nullport_tests::{TestNet, pattern};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

pub(crate) fn sha(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Sets a flag when dropped: proves a handler's future was dropped (stopped).
pub(crate) struct Stopped(Arc<AtomicBool>);
impl Drop for Stopped {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[derive(Default)]
pub(crate) struct Probes {
    pub(crate) stopped: Arc<AtomicBool>,
    pub(crate) saw_cancel: Arc<AtomicBool>,
    pub(crate) handler_ran: Arc<AtomicUsize>,
}

pub(crate) fn service(probes: &Probes) -> RpcService {
    let (stopped, saw_cancel, ran) = (
        probes.stopped.clone(),
        probes.saw_cancel.clone(),
        probes.handler_ran.clone(),
    );
    let ran2 = ran.clone();
    RpcService::new("work")
        .unary("echo", |_ctx, data: Vec<u8>| async move { Ok(data) })
        .unary("whoami", |ctx, (): ()| async move {
            Ok((ctx.peer.to_string(), ctx.alias, ctx.rule))
        })
        .unary("add", |_ctx, (a, b): (u64, u64)| async move { Ok(a + b) })
        .unary("explode", |_ctx, (): ()| async move {
            if std::hint::black_box(true) {
                panic!("handler bug");
            }
            Ok(())
        })
        .unary("admin.reset", move |_ctx, (): ()| {
            let ran = ran.clone();
            async move {
                ran.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .unary("jobs.delete", move |_ctx, (): ()| {
            let ran = ran2.clone();
            async move {
                ran.fetch_add(1, Ordering::SeqCst);
                Ok("deleted".to_owned())
            }
        })
        .unary("sleep", move |ctx, ms: u64| {
            let stopped = stopped.clone();
            let saw_cancel = saw_cancel.clone();
            async move {
                let _guard = Stopped(stopped);
                // Work handed to another task learns of the cancellation through the context.
                let watcher = ctx.clone();
                tokio::spawn(async move {
                    watcher.cancelled().await;
                    saw_cancel.store(true, Ordering::SeqCst);
                });
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(ms)
            }
        })
        .server_stream(
            "chunks",
            |_ctx, (len, seed): (usize, u64), out: Responses<Vec<u8>>| async move {
                let data = pattern(len, seed);
                for chunk in data.chunks(100_000) {
                    out.send(&chunk.to_vec()).await?;
                }
                Ok(())
            },
        )
        .client_stream("digest", |_ctx, mut input: Requests<Vec<u8>>| async move {
            let mut hasher = Sha256::new();
            let mut n = 0u64;
            while let Some(chunk) = input.next().await? {
                hasher.update(&chunk);
                n += chunk.len() as u64;
            }
            Ok((n, <[u8; 32]>::from(hasher.finalize())))
        })
        .bidi(
            "upper",
            |_ctx, mut input: Requests<String>, out: Responses<String>| async move {
                while let Some(line) = input.next().await? {
                    out.send(&line.to_uppercase()).await?;
                }
                Ok(())
            },
        )
}

pub(crate) struct Callee {
    pub(crate) node: Arc<Node>,
    pub(crate) server: Arc<RpcServer>,
    pub(crate) home: tempfile::TempDir,
    serving: tokio::task::JoinHandle<()>,
}

impl Drop for Callee {
    fn drop(&mut self) {
        self.serving.abort();
    }
}

pub(crate) fn write_policy(home: &Path, text: &str) {
    // A new mtime second is not guaranteed: rewrite through a rename so the stamp changes.
    let tmp = home.join("policy.toml.new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, home.join("policy.toml")).unwrap();
}

pub(crate) async fn callee(
    net: &TestNet,
    policy: impl Fn(NodeId) -> String,
    configure: impl FnOnce(RpcServer) -> RpcServer,
    probes: &Probes,
) -> Callee {
    let node = Arc::new(net.node().await);
    let home = tempfile::tempdir().unwrap();
    write_policy(home.path(), &policy(node.node_id()));
    let access = PolicyAccess::from_home(node.node_id(), home.path()).unwrap();
    let server = Arc::new(configure(RpcServer::new(access).service(service(probes))));
    let serving = tokio::spawn({
        let (node, server) = (node.clone(), server.clone());
        async move { server.serve(&node).await }
    });
    Callee {
        node,
        server,
        home,
        serving,
    }
}

pub(crate) fn allow_all(callers: &[NodeId]) -> String {
    let mut text = String::from("[rpc.work]\napprove = [\"jobs.delete\"]\n");
    for c in callers {
        text.push_str(&format!("[rpc.work.allow.\"{c}\"]\nmethods = [\"*\"]\n"));
    }
    text
}

#[tokio::test]
async fn rpc_every_shape_round_trips_byte_exact() {
    let net = TestNet::start().await;
    let caller = net.node().await;
    let me = caller.node_id();
    let probes = Probes::default();
    let callee = callee(&net, |_| allow_all(&[me]), |s| s, &probes).await;
    let client = RpcClient::connect(&caller, callee.node.node_id(), "work")
        .await
        .unwrap();
    let opts = CallOptions::default();
    // Unary, 1 MiB each way.
    let data = pattern(1 << 20, 7);
    let back: Vec<u8> = client.unary("echo", &data, opts).await.unwrap();
    assert_eq!(sha(&back), sha(&data));
    let (peer, _, rule): (String, Option<String>, String) =
        client.unary("whoami", &(), opts).await.unwrap();
    assert_eq!(peer, me.to_string(), "the handler sees the proven caller");
    assert_eq!(rule, me.to_string());
    // Server stream: 8 MiB in 100 kB chunks.
    let mut call = client
        .server_stream::<_, Vec<u8>>("chunks", &(8usize << 20, 3u64), opts)
        .await
        .unwrap();
    let mut got = Vec::new();
    while let Some(chunk) = call.recv().await.unwrap() {
        got.extend_from_slice(&chunk);
    }
    assert_eq!(sha(&got), sha(&pattern(8 << 20, 3)));
    // Client stream: 8 MiB up, the callee's digest back.
    let up = pattern(8 << 20, 11);
    let mut call = client
        .client_stream::<Vec<u8>, (u64, [u8; 32])>("digest", opts)
        .await
        .unwrap();
    for chunk in up.chunks(65_536) {
        call.send(&chunk.to_vec()).await.unwrap();
    }
    assert_eq!(call.response().await.unwrap(), (up.len() as u64, sha(&up)));
    // Bidi: interleaved.
    let mut call = client.bidi::<String, String>("upper", opts).await.unwrap();
    for word in ["alpha", "ünïcode", ""] {
        call.send(&word.to_owned()).await.unwrap();
        assert_eq!(call.recv().await.unwrap(), Some(word.to_uppercase()));
    }
    call.finish().await.unwrap();
    assert_eq!(call.recv().await.unwrap(), None);
    // A method that does not exist, and one called with the wrong shape.
    let e = client.unary::<_, ()>("nope", &(), opts).await.unwrap_err();
    assert_eq!(e.code, Code::NotFound, "{e}");
    let e = client
        .unary::<_, Vec<u8>>("chunks", &(1usize, 1u64), opts)
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::InvalidArgument, "{e}");
    // A request that does not decode as the method's type (trailing bytes, and short).
    let e = client
        .unary::<_, u64>("add", &(1u64, 2u64, 3u64), opts)
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::InvalidArgument, "{e}");
    let e = client
        .unary::<_, u64>("add", &1u64, opts)
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::InvalidArgument, "{e}");
    assert_eq!(
        client
            .unary::<_, u64>("add", &(2u64, 40u64), opts)
            .await
            .unwrap(),
        42
    );
    drop(callee);
}

#[tokio::test]
async fn rpc_ten_thousand_concurrent_calls_from_two_callers() {
    let net = TestNet::start().await;
    let a = net.node().await;
    let b = net.node().await;
    let ids = [a.node_id(), b.node_id()];
    let probes = Probes::default();
    let callee = callee(&net, |_| allow_all(&ids), |s| s, &probes).await;
    let mut calls = tokio::task::JoinSet::new();
    for node in [&a, &b] {
        let client = RpcClient::connect(node, callee.node.node_id(), "work")
            .await
            .unwrap();
        for i in 0..5_000u64 {
            let client = client.clone();
            calls.spawn(async move {
                let sum: u64 = client
                    .unary("add", &(i, 1_000_000u64), CallOptions::default())
                    .await
                    .unwrap();
                assert_eq!(sum, i + 1_000_000);
            });
        }
    }
    let mut done = 0;
    while let Some(r) = calls.join_next().await {
        r.unwrap();
        done += 1;
    }
    assert_eq!(done, 10_000);
    assert_eq!(callee.server.calls_in_flight(), 0);
}

#[tokio::test]
async fn rpc_deadline_and_cancellation_reach_the_handler() {
    let net = TestNet::start().await;
    let caller = net.node().await;
    let me = caller.node_id();
    let probes = Probes::default();
    let callee = callee(&net, |_| allow_all(&[me]), |s| s, &probes).await;
    let client = RpcClient::connect(&caller, callee.node.node_id(), "work")
        .await
        .unwrap();
    // The deadline passes: the caller gets DeadlineExceeded, the handler is stopped and its
    // spawned work sees the cancellation.
    let e = client
        .unary::<_, u64>(
            "sleep",
            &60_000u64,
            CallOptions::deadline(Duration::from_millis(300)),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::DeadlineExceeded, "{e}");
    wait_until(|| probes.stopped.load(Ordering::SeqCst), "handler stopped").await;
    wait_until(
        || probes.saw_cancel.load(Ordering::SeqCst),
        "cancellation seen",
    )
    .await;
    wait_until(|| callee.server.calls_in_flight() == 0, "call slot freed").await;
    // A caller that gives up (drops the call) cancels it at the callee.
    probes.stopped.store(false, Ordering::SeqCst);
    let call = client.unary::<_, u64>("sleep", &60_000u64, CallOptions::default());
    assert!(
        tokio::time::timeout(Duration::from_millis(300), call)
            .await
            .is_err()
    );
    wait_until(|| probes.stopped.load(Ordering::SeqCst), "handler stopped").await;
    wait_until(|| callee.server.calls_in_flight() == 0, "call slot freed").await;
    // The channel still serves.
    assert_eq!(
        client
            .unary::<_, u64>("sleep", &1u64, CallOptions::default())
            .await
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn rpc_caller_gone_mid_stream_frees_the_callee() {
    let net = TestNet::start().await;
    let caller = net.node().await;
    let me = caller.node_id();
    let probes = Probes::default();
    let callee = callee(&net, |_| allow_all(&[me]), |s| s, &probes).await;
    let client = RpcClient::connect(&caller, callee.node.node_id(), "work")
        .await
        .unwrap();
    let mut streams = Vec::new();
    for _ in 0..8 {
        let mut call = client
            .bidi::<String, String>("upper", CallOptions::default())
            .await
            .unwrap();
        call.send(&"x".to_owned()).await.unwrap();
        assert_eq!(call.recv().await.unwrap().as_deref(), Some("X"));
        streams.push(call);
    }
    let _sleeping = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .unary::<_, u64>("sleep", &60_000u64, CallOptions::default())
                .await
        }
    });
    wait_until(
        || callee.server.calls_in_flight() == 9,
        "nine calls running",
    )
    .await;
    // The caller's node goes away without a word.
    caller.shutdown().await;
    wait_until(|| callee.server.calls_in_flight() == 0, "every call freed").await;
    assert!(
        probes.stopped.load(Ordering::SeqCst),
        "the sleeping handler was stopped"
    );
    drop(streams);
}

#[tokio::test]
async fn rpc_bounds_refuse_one_caller_without_disturbing_another() {
    let net = TestNet::start().await;
    let greedy = net.node().await;
    let honest = net.node().await;
    let ids = [greedy.node_id(), honest.node_id()];
    let probes = Probes::default();
    let limits = RpcLimits {
        max_message: 64 * 1024,
        max_in_flight_per_caller: 4,
        window: 8,
        ..RpcLimits::default()
    };
    let callee = callee(&net, |_| allow_all(&ids), |s| s.limits(limits), &probes).await;
    let target = callee.node.node_id();
    let honest_client = RpcClient::connect(&honest, target, "work").await.unwrap();
    // The honest caller keeps a stream open throughout.
    let mut stream = honest_client
        .bidi::<String, String>("upper", CallOptions::default())
        .await
        .unwrap();
    // An oversize request is refused at the caller, typed, before it is sent.
    let client = RpcClient::connect(&greedy, target, "work").await.unwrap();
    assert_eq!(client.limits().max_message, 64 * 1024);
    let e = client
        .unary::<_, Vec<u8>>("echo", &vec![0u8; 100_000], CallOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::ResourceExhausted, "{e}");
    assert!(
        e.message
            .contains("exceeds the peer's limit of 65536 bytes"),
        "{e}"
    );
    // Calls past the in-flight bound: two channels from one caller, four slow calls each.
    let second = RpcClient::connect(&greedy, target, "work").await.unwrap();
    let mut slow = tokio::task::JoinSet::new();
    for c in [&client, &second] {
        for _ in 0..4 {
            let c = c.clone();
            slow.spawn(async move {
                c.unary::<_, u64>("sleep", &1_500u64, CallOptions::default())
                    .await
            });
        }
    }
    let (mut ok, mut refused) = (0, 0);
    while let Some(r) = slow.join_next().await {
        match r.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => {
                assert_eq!(e.code, Code::ResourceExhausted, "{e}");
                assert!(e.message.contains("too many calls in flight"), "{e}");
                refused += 1;
            }
        }
    }
    assert_eq!((ok, refused), (4, 4));
    // A caller that ignores the announced limit and sends an oversize frame anyway loses
    // its channel; nobody else notices.
    let mut raw = greedy.dial(target, "work").await.unwrap();
    let mut bytes = Vec::new();
    Frame::Hello(Hello {
        version: RPC_VERSION,
        max_message: 1 << 20,
        max_in_flight: 0,
        window: 8,
    })
    .encode(&mut bytes)
    .unwrap();
    Frame::Open {
        call: 1,
        open: Open {
            method: "echo".into(),
            shape: Shape::Unary,
            deadline_ms: None,
        },
    }
    .encode(&mut bytes)
    .unwrap();
    Frame::Message {
        call: 1,
        body: vec![0; 200_000],
    }
    .encode(&mut bytes)
    .unwrap();
    let _ = raw.write_all(&bytes).await;
    let _ = raw.flush().await;
    let mut sink = Vec::new();
    let read = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut raw, &mut sink),
    )
    .await
    .unwrap();
    // It ended (the timeout above) after the callee's HELLO and nothing else: no answer
    // was produced for the oversize call.
    let _ = read;
    let (first, used) = Frame::decode(&sink, 1 << 20).unwrap().unwrap();
    assert!(matches!(first, Frame::Hello(_)), "{first:?}");
    assert_eq!(used, sink.len(), "nothing after the HELLO");
    // The honest stream never noticed.
    for word in ["still", "here"] {
        stream.send(&word.to_owned()).await.unwrap();
        assert_eq!(stream.recv().await.unwrap(), Some(word.to_uppercase()));
    }
    assert_eq!(
        honest_client
            .unary::<_, u64>("add", &(1u64, 1u64), CallOptions::default())
            .await
            .unwrap(),
        2
    );
}

async fn wait_until(check: impl Fn() -> bool, what: &str) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting: {what}");
}
