//! Relay path benchmark: bulk throughput A -> relay -> B and 64-byte round trips, next to
//! direct TCP over loopback measured in the same run.
//!
//! `cargo bench -p nullport-tests --bench relay` (1 GiB, 10k round trips), or with
//! `-- --quick` for a smoke run. The relay and both nodes run in this process on loopback
//! (real QUIC, real Noise); the benchmark of separate processes and other peers is the
//! performance suite's job.
// A benchmark program: a failed step ends the run with its error.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use nullport_tests::TestNet;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const CHUNK: usize = 256 * 1024;

async fn sink<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> u64 {
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    while let Ok(n) = s.read(&mut buf).await {
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    let _ = s.write_all(&total.to_le_bytes()).await;
    let _ = s.shutdown().await;
    total
}

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = s.read(&mut buf).await {
        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = s.shutdown().await;
}

async fn bulk<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, bytes: u64) -> f64 {
    let chunk = vec![0x42u8; CHUNK];
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < bytes {
        let n = (bytes - sent).min(CHUNK as u64) as usize;
        s.write_all(&chunk[..n]).await.unwrap();
        sent += n as u64;
    }
    s.shutdown().await.unwrap();
    let mut ack = [0u8; 8];
    s.read_exact(&mut ack).await.unwrap();
    assert_eq!(u64::from_le_bytes(ack), bytes);
    bytes as f64 * 8.0 / started.elapsed().as_secs_f64() / 1e9
}

async fn round_trips<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, n: usize) -> Vec<Duration> {
    let msg = [7u8; 64];
    let mut back = [0u8; 64];
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        s.write_all(&msg).await.unwrap();
        s.read_exact(&mut back).await.unwrap();
        samples.push(t.elapsed());
    }
    samples.sort();
    samples
}

fn pct(s: &[Duration], p: f64) -> f64 {
    let i = ((s.len() as f64 - 1.0) * p).round() as usize;
    s[i].as_secs_f64() * 1e6
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (bytes, trips) = if quick {
        (64u64 << 20, 1_000)
    } else {
        (1u64 << 30, 10_000)
    };

    // Direct TCP over loopback.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        sink(s).await;
        let (s, _) = listener.accept().await.unwrap();
        s.set_nodelay(true).ok();
        echo(s).await;
    });
    let tcp_bulk = bulk(TcpStream::connect(addr).await.unwrap(), bytes).await;
    let s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).ok();
    let tcp_rtt = round_trips(s, trips).await;

    // nullport: A -> relay -> B.
    let net = TestNet::start().await;
    let (a, b) = (net.node().await, Arc::new(net.node().await));
    let b2 = b.clone();
    tokio::spawn(async move {
        let ch = b2
            .accept()
            .await
            .unwrap_or_else(|| panic!("no dial"))
            .accept()
            .await
            .unwrap();
        sink(ch).await;
        let ch = b2
            .accept()
            .await
            .unwrap_or_else(|| panic!("no dial"))
            .accept()
            .await
            .unwrap();
        echo(ch).await;
    });
    let np_bulk = bulk(a.dial(b.node_id(), "sink").await.unwrap(), bytes).await;
    let setup = Instant::now();
    let ch = a.dial(b.node_id(), "echo").await.unwrap();
    let setup = setup.elapsed();
    let np_rtt = round_trips(ch, trips).await;

    println!(
        "nullport relay path vs direct TCP, loopback, one process, {} MiB bulk, {trips} round trips",
        bytes >> 20
    );
    println!();
    println!("| path | bulk Gbit/s | 64 B RTT p50 us | 64 B RTT p99 us |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| direct TCP | {tcp_bulk:.2} | {:.1} | {:.1} |",
        pct(&tcp_rtt, 0.5),
        pct(&tcp_rtt, 0.99)
    );
    println!(
        "| nullport A -> relay -> B | {np_bulk:.2} | {:.1} | {:.1} |",
        pct(&np_rtt, 0.5),
        pct(&np_rtt, 0.99)
    );
    println!(
        "| ratio nullport / TCP | {:.3} | {:.2} | {:.2} |",
        np_bulk / tcp_bulk,
        pct(&np_rtt, 0.5) / pct(&tcp_rtt, 0.5),
        pct(&np_rtt, 0.99) / pct(&tcp_rtt, 0.99)
    );
    println!();
    println!(
        "channel setup (dial to accepted, warm relay link): {:.0} us",
        setup.as_secs_f64() * 1e6
    );
}
