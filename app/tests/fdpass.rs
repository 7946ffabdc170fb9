//! `nullport connect` and `nullport pipe` hand their descriptors to the daemon, which splices
//! them to the channel itself: real daemons (`nullport up`) on a loopback relay, real
//! `connect`/`pipe` processes, byte-exact transfers, and the daemon's descriptors counted in
//! `/proc`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::fd::AsFd;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use nullport_tests::upstream::Upstream;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

const MIB: usize = 1 << 20;

/// A TCP echo server in this process (each connection: echo until end of input, then close
/// the write side); returns its port.
async fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    port
}

/// `len` bytes that are not all alike (a byte lost, doubled or reordered shows).
fn pattern(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Two daemons; the callee exposes its echo server as `echo` to the caller.
async fn echo_pair() -> (Net, std::path::PathBuf, std::path::PathBuf) {
    let (net, tool, agent) = pair().await;
    let port = echo_server().await;
    ok(
        &tool,
        &["expose", "tcp", "echo", &format!("127.0.0.1:{port}")],
    )
    .await;
    ok(&tool, &["allow", "agent", "echo"]).await;
    (net, tool, agent)
}

/// `nullport connect TARGET --listen 127.0.0.1:PORT`, once it listens.
async fn connect(home: &Path, target: &str) -> (Child, u16) {
    let port = free_port();
    let child = Command::new(NULLPORT)
        .arg("--home")
        .arg(home)
        .args(["connect", target, "--listen", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_tcp(port).await;
    (child, port)
}

/// Descriptors the process `pid` holds open.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// The channels `nullport status` lists on `home`.
async fn channels(home: &Path) -> usize {
    let status: serde_json::Value =
        serde_json::from_str(&ok(home, &["status", "--json"]).await).unwrap();
    status["channels"].as_array().map_or(0, Vec::len)
}

/// Waits (at most 15 s) until `home` lists no channel.
async fn no_channels(home: &Path) {
    let started = Instant::now();
    while channels(home).await > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "channels still open: {}",
            ok(home, &["status"]).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One 64-byte round trip through `port`, then close.
async fn echo_once(port: u16) {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let sent = pattern(64);
    tcp.write_all(&sent).await.unwrap();
    tcp.shutdown().await.unwrap();
    let mut got = Vec::new();
    tcp.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, sent);
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_carries_64_mib_both_ways_and_the_daemon_keeps_the_connection_when_connect_dies() {
    let (_net, _tool, agent) = echo_pair().await;
    let (mut connect, port) = connect(&agent, "tool/echo").await;
    let data = pattern(64 * MIB);
    let expected = Sha256::digest(&data);
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut from, mut to) = tcp.into_split();
    let (killed_tx, killed_rx) = tokio::sync::oneshot::channel::<()>();
    let upload = tokio::spawn(async move {
        // 16 MiB, then (once `connect` is dead) the rest.
        to.write_all(&data[..16 * MIB]).await.unwrap();
        killed_rx.await.unwrap();
        to.write_all(&data[16 * MIB..]).await.unwrap();
        to.shutdown().await.unwrap();
    });
    let mut hash = Sha256::new();
    let mut received = 0;
    let mut buf = vec![0u8; 256 << 10];
    let mut killed_tx = Some(killed_tx);
    loop {
        let n = from.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        received += n;
        if received >= 16 * MIB
            && let Some(tx) = killed_tx.take()
        {
            // The connection no longer runs through `connect`: it goes on without it.
            connect.kill().await.unwrap();
            tx.send(()).unwrap();
        }
    }
    upload.await.unwrap();
    assert!(killed_tx.is_none(), "connect was never killed");
    assert_eq!(received, 64 * MIB);
    assert_eq!(hash.finalize(), expected);
    no_channels(&agent).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pipe_carries_64_mib_both_ways() {
    let (_net, _tool, agent) = echo_pair().await;
    let data = pattern(64 * MIB);
    let expected = Sha256::digest(&data);
    let (mut child, mut stdin) = spawn_pipe(&agent, "tool/echo");
    let mut stdout = child.stdout.take().unwrap();
    let upload = tokio::spawn(async move {
        stdin.write_all(&data).await.unwrap();
        // Dropped: the end of input.
    });
    let mut hash = Sha256::new();
    let mut received = 0;
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = stdout.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        received += n;
    }
    upload.await.unwrap();
    let status = child.wait().await.unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    assert!(status.success(), "pipe failed: {stderr}");
    assert_eq!(received, 64 * MIB);
    assert_eq!(hash.finalize(), expected);
    no_channels(&agent).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pipe_reads_a_regular_file_on_standard_input() {
    let (net, _tool, agent) = echo_pair().await;
    let data = pattern(8 * MIB);
    let file = net.dir.path().join("input.bin");
    std::fs::write(&file, &data).unwrap();
    let out = Command::new(NULLPORT)
        .arg("--home")
        .arg(&agent)
        .args(["pipe", "tool/echo"])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), data.len());
    assert!(out.stdout == data, "bytes differ");
}

#[tokio::test(flavor = "multi_thread")]
async fn pipe_sends_what_its_input_holds_with_the_handshake() {
    let upstream = std::sync::Arc::new(Upstream::default());
    let mut net = Net {
        dir: tempfile::tempdir().unwrap(),
        relay: nullport_tests::TestNet::start_with(Upstream::relay_options(&upstream)).await,
        daemons: Vec::new(),
    };
    let (agent, _) = net.node("agent").await;
    net.up(&agent).await;
    let (callee, callee_id) = net.library_node().await;
    // The request is on pipe's standard input as it starts, as a client's first message is.
    let request = pattern(1000);
    let (mut child, mut stdin) = spawn_pipe(&agent, &format!("{}/svc", callee_id.node_id()));
    stdin.write_all(&request).await.unwrap();
    // The callee holds the channel undecided: the request crosses the relay anyway, behind
    // the handshake's last message (message 1: 34 bytes, message 3 for "svc" without a
    // token: 168, the data frame: 1,019), not a round trip after the verdict.
    let incoming = tokio::time::timeout(Duration::from_secs(10), callee.accept())
        .await
        .unwrap()
        .unwrap();
    upstream
        .wait_last_session_up(34 + 168 + (2 + 1 + request.len() + 16))
        .await;
    // Read only once accepted, intact; the channel then goes on as any other.
    let mut channel = incoming.accept().await.unwrap();
    let mut got = vec![0u8; request.len()];
    channel.read_exact(&mut got).await.unwrap();
    assert!(got == request, "the first bytes differ");
    stdin.write_all(b"more").await.unwrap();
    drop(stdin);
    let mut rest = Vec::new();
    channel.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"more");
    channel.write_all(b"answer").await.unwrap();
    channel.shutdown().await.unwrap();
    let mut out = Vec::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut out)
        .await
        .unwrap();
    assert_eq!(out, b"answer");
    assert!(child.wait().await.unwrap().success());
    drop(callee);
}

#[tokio::test(flavor = "multi_thread")]
async fn pipe_refuses_a_datagram_or_packet_socket_on_standard_input() {
    // Such a socket cuts a message larger than one read to the read's size and never ends:
    // refused with a clear error, never carried with bytes silently lost.
    use rustix::net::{AddressFamily, SocketFlags, SocketType, socketpair};
    let (_net, _tool, agent) = echo_pair().await;
    for kind in [SocketType::SEQPACKET, SocketType::DGRAM] {
        let (ours, theirs) =
            socketpair(AddressFamily::UNIX, kind, SocketFlags::CLOEXEC, None).unwrap();
        rustix::net::send(&ours, &pattern(100_000), rustix::net::SendFlags::empty()).unwrap();
        let out = Command::new(NULLPORT)
            .arg("--home")
            .arg(&agent)
            .args(["pipe", "tool/echo"])
            .stdin(std::fs::File::from(theirs))
            .output()
            .await
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{kind:?}: {said}");
        assert!(
            said.contains("standard input: a datagram or packet socket, not a byte stream"),
            "{kind:?}: {said}"
        );
        assert!(out.stdout.is_empty());
        drop(ours);
    }
    no_channels(&agent).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pipe_whose_daemon_dies_during_the_dial_says_so() {
    let mut net = Net::start().await;
    let (agent, _) = net.node("agent").await;
    net.up(&agent).await;
    // The callee never decides: the dial waits for its verdict.
    let (callee, callee_id) = net.library_node().await;
    let (mut child, _stdin) = spawn_pipe(&agent, &format!("{}/svc", callee_id.node_id()));
    let held = tokio::time::timeout(Duration::from_secs(10), callee.accept())
        .await
        .unwrap()
        .unwrap();
    let mut daemon = net.daemons.pop().unwrap();
    daemon.kill().await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("pipe did not notice its daemon died")
        .unwrap();
    let mut said = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut said)
        .await
        .unwrap();
    assert_eq!(status.code(), Some(1), "{said}");
    assert!(
        said.contains("closed the connection before answering (it stopped or crashed"),
        "{said}"
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_pipe_closes_the_channel_at_the_callee() {
    let (_net, tool, agent) = pair().await;
    // The callee's service: reports its first bytes, then the end of its connection.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<Vec<u8>>();
    let (ended_tx, ended_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 5];
        s.read_exact(&mut buf).await.unwrap();
        first_tx.send(buf).unwrap();
        let mut rest = [0u8; 1024];
        while matches!(s.read(&mut rest).await, Ok(n) if n > 0) {}
        let _ = ended_tx.send(());
    });
    ok(
        &tool,
        &["expose", "tcp", "hold", &format!("127.0.0.1:{port}")],
    )
    .await;
    ok(&tool, &["allow", "agent", "hold"]).await;
    let (mut child, mut stdin) = spawn_pipe(&agent, "tool/hold");
    stdin.write_all(b"ping\n").await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), first_rx)
        .await
        .expect("the service never got the bytes")
        .unwrap();
    assert_eq!(first, b"ping\n");
    assert_eq!(channels(&agent).await, 1);
    assert_eq!(channels(&tool).await, 1);
    // Killed, with its standard input still open here: the daemon must notice by itself.
    child.kill().await.unwrap();
    tokio::time::timeout(Duration::from_secs(15), ended_rx)
        .await
        .expect("the callee's connection stayed open after pipe was killed")
        .unwrap();
    no_channels(&agent).await;
    no_channels(&tool).await;
    drop(stdin);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_holds_no_more_descriptors_after_200_connections() {
    let (net, _tool, agent) = echo_pair().await;
    let daemon = net.daemons[1].id().unwrap();
    let (_connect, port) = connect(&agent, "tool/echo").await;
    echo_once(port).await;
    no_channels(&agent).await;
    let baseline = fd_count(daemon);
    // Paced under the relay's default dial rate (50/s per identity): the daemon now accepts
    // and dials as fast as connections come, and a dial over the rate is refused.
    for _ in 0..200 {
        echo_once(port).await;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    no_channels(&agent).await;
    let started = Instant::now();
    while fd_count(daemon) > baseline && started.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        fd_count(daemon) <= baseline,
        "the daemon holds {} descriptors, {baseline} before 200 connections",
        fd_count(daemon)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_reports_a_refused_dial_and_closes_the_connection() {
    let (_net, _tool, agent) = echo_pair().await;
    let (mut connect, port) = connect(&agent, "tool/nothing").await;
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut got = Vec::new();
    // Closed by the daemon (a reset or an end, either way nothing arrives).
    let _ = tcp.read_to_end(&mut got).await;
    assert!(got.is_empty());
    // `connect` prints why (for this connection and the one that waited for the port).
    let mut lines = tokio::io::BufReader::new(connect.stderr.take().unwrap()).lines();
    let said = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("does not expose") {
                return line;
            }
        }
        String::new()
    })
    .await
    .expect("connect never said why");
    assert!(
        said.starts_with("127.0.0.1:")
            && said.ends_with(": tool does not expose a service named \"nothing\""),
        "{said}"
    );
    connect.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_dial_resets_a_client_that_already_sent_its_request() {
    // The daemon sends what the client wrote during the handshake as the dial's first bytes
    // (peeked, not read): when the dial is refused, the client must see a failure, never a
    // clean end that a send-then-read-to-end client would take for success.
    let (_net, _tool, agent) = echo_pair().await;
    let (mut connect, port) = connect(&agent, "tool/nothing").await;
    for size in [0usize, 100, 60_000] {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        tcp.write_all(&vec![b'x'; size]).await.unwrap();
        tcp.shutdown().await.unwrap();
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(20), tcp.read_to_end(&mut got))
            .await
            .expect("the refused connection was never closed");
        assert_eq!(
            read.map_err(|e| e.kind()),
            Err(std::io::ErrorKind::ConnectionReset),
            "{size} bytes sent"
        );
        assert!(got.is_empty());
    }
    connect.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn status_counts_the_bytes_sent_with_the_handshake() {
    let (_net, _tool, agent) = echo_pair().await;
    let (mut connect, port) = connect(&agent, "tool/echo").await;
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    // Written at once: most of it leaves as the dial's first bytes.
    let sent = pattern(50_000);
    tcp.write_all(&sent).await.unwrap();
    let mut got = vec![0u8; sent.len()];
    tcp.read_exact(&mut got).await.unwrap();
    assert!(got == sent, "echo differs");
    let status: serde_json::Value =
        serde_json::from_str(&ok(&agent, &["status", "--json"]).await).unwrap();
    let channel = &status["channels"][0];
    assert_eq!(
        (channel["bytes_out"].as_u64(), channel["bytes_in"].as_u64()),
        (Some(50_000), Some(50_000)),
        "{status}"
    );
    drop(tcp);
    connect.kill().await.unwrap();
}

/// A backend for `expose tcp`: for each connection, reads 5 bytes, reports them, then
/// reports how its connection ended (a clean end or the error kind); with `reset_after`, it
/// resets the connection itself after the 5 bytes instead.
async fn reporting_backend(
    reset_after: bool,
) -> (
    u16,
    tokio::sync::mpsc::Receiver<Result<usize, std::io::ErrorKind>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut first = [0u8; 5];
                s.read_exact(&mut first).await.unwrap();
                let _ = tx.send(Ok(first.len())).await;
                if reset_after {
                    s.set_zero_linger().unwrap();
                    return;
                }
                let mut rest = Vec::new();
                let end = s.read_to_end(&mut rest).await.map_err(|e| e.kind());
                let _ = tx.send(end).await;
            });
        }
    });
    (port, rx)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reset_on_either_side_reaches_the_other_as_a_reset_not_a_clean_end() {
    let (_net, tool, agent) = pair().await;
    for (service, reset_by_backend) in [("quiet", false), ("rude", true)] {
        let (port, mut backend) = reporting_backend(reset_by_backend).await;
        ok(
            &tool,
            &["expose", "tcp", service, &format!("127.0.0.1:{port}")],
        )
        .await;
        ok(&tool, &["allow", "agent", service]).await;
        let (mut connect, listen) = connect(&agent, &format!("tool/{service}")).await;
        let mut client = TcpStream::connect(("127.0.0.1", listen)).await.unwrap();
        client.write_all(b"hello").await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), backend.recv()).await;
        assert_eq!(got.unwrap().unwrap(), Ok(5));
        if reset_by_backend {
            // The backend reset: the client reads a reset, not an end.
            let mut rest = Vec::new();
            let end = tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut rest))
                .await
                .expect("the client's connection stayed open");
            assert_eq!(
                end.map_err(|e| e.kind()),
                Err(std::io::ErrorKind::ConnectionReset)
            );
        } else {
            // The client resets: the backend reads a reset, not an end.
            client.set_zero_linger().unwrap();
            drop(client);
            let end = tokio::time::timeout(Duration::from_secs(10), backend.recv())
                .await
                .expect("the backend's connection stayed open");
            assert_eq!(end.unwrap(), Err(std::io::ErrorKind::ConnectionReset));
        }
        connect.kill().await.unwrap();
    }
}

/// Sends `line` with `fds` on a new control connection to the daemon of `home`; returns
/// its answer.
async fn raw_request(home: &Path, line: &str, fds: &[std::os::fd::BorrowedFd<'_>]) -> String {
    let socket = nullport::home::Home::at(home).socket();
    let stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    nullport::fdpass::send_with_fds(&stream, line.as_bytes(), fds)
        .await
        .unwrap();
    let mut answer = String::new();
    let mut reader = tokio::io::BufReader::new(stream);
    tokio::io::AsyncBufReadExt::read_line(&mut reader, &mut answer)
        .await
        .unwrap();
    answer
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_takes_only_the_descriptors_a_request_carries() {
    let (net, _tool, agent) = echo_pair().await;
    let daemon = net.daemons[1].id().unwrap();
    let file = std::fs::File::open(NULLPORT).unwrap();
    let fd = file.as_fd();
    ok(&agent, &["status"]).await;
    let baseline = fd_count(daemon);
    let attach = r#"{"op":"attach","peer":"tool","service":"echo","local":"socket"}"#;
    let stdio = r#"{"op":"attach","peer":"tool","service":"echo","local":"stdio"}"#;
    let cases: [(&str, Vec<_>, &str); 5] = [
        (
            "{\"op\":\"status\"}\n",
            vec![fd],
            "this request takes 0 file descriptor(s), 1 were sent",
        ),
        (
            &format!("{attach}\n"),
            vec![fd, fd, fd],
            "more than 2 file descriptors sent on one control connection",
        ),
        (
            &format!("{attach}\n"),
            vec![fd, fd],
            "this request takes 1 file descriptor(s), 2 were sent",
        ),
        (
            &format!("{attach}\n"),
            vec![fd],
            "the connection handed over: not a socket",
        ),
        (
            &format!("{stdio}\n"),
            vec![fd],
            "this request takes 2 file descriptor(s), 1 were sent",
        ),
    ];
    for (line, fds, error) in &cases {
        let answer = raw_request(&agent, line, fds).await;
        let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(answer["ok"], false, "{line}: {answer}");
        let said = answer["error"].as_str().unwrap();
        assert!(said.contains(error), "{line}: {said}");
    }
    let started = Instant::now();
    while fd_count(daemon) > baseline && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(fd_count(daemon) <= baseline, "descriptors kept");
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_hands_its_listener_over_again_after_a_daemon_restart_and_killing_it_closes_the_port()
 {
    let (mut net, _tool, agent) = echo_pair().await;
    let (mut connect, port) = connect(&agent, "tool/echo").await;
    echo_once(port).await;
    // The caller's daemon goes away and comes back: `connect` hands the socket over again.
    let mut old = net.daemons.remove(1);
    old.kill().await.unwrap();
    old.wait().await.unwrap();
    net.up(&agent).await;
    let started = Instant::now();
    loop {
        // Until the new daemon holds the socket, a connection is told "not running" and
        // closed; then it is served.
        let served = async {
            let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
            tcp.write_all(b"after restart").await.ok()?;
            tcp.shutdown().await.ok()?;
            let mut got = Vec::new();
            tcp.read_to_end(&mut got).await.ok()?;
            (got == b"after restart").then_some(())
        };
        if served.await.is_some() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not served again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // `connect` ends: the daemon lets go of the socket, and the port is closed.
    connect.kill().await.unwrap();
    connect.wait().await.unwrap();
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the port still accepts after connect ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
