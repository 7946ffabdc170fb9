//! `np-bench rpc`: what a typed call costs over the channel it rides on, and what gRPC over
//! nullport costs over gRPC over TCP, in one run. The relay and the callee are processes of
//! their own (roles `relay` and `serve-rpc`); the caller is this process. Every call carries
//! 64 bytes each way:
//! - one at a time: round trips on a raw channel to an echo service, typed RPC unary calls
//!   (`RpcClient::unary`, a `Vec<u8>` echoed back), tonic unary calls through nullport
//!   (`http::connector` to `http::serve_tonic`) and tonic over direct TCP, interleaved in
//!   rounds so that drift on a shared machine falls on all four alike;
//! - many in flight from one caller over one client (one `RpcClient`, one tonic channel):
//!   calls per second, and the CPU each process spent per call.
//!
//! The callee lets RPC calls in through `PolicyAccess` and a policy file allowing this caller
//! (`[rpc.rpcbench.allow."<caller>"] methods = ["*"]`), so each call passes the real call gate.

mod grpc;
mod report;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use nullport_node::rpc::{CallOptions, PolicyAccess, RpcClient, RpcError, RpcServer, RpcService};
use nullport_node::{Channel, http};
use nullport_protocol::{DenyReason, NodeId};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use self::grpc::{EchoClient, EchoServer};
use crate::paths::nullport::start_node;
use crate::procs::{self, Proc};
use crate::report::Percentiles;

/// The callee's raw echo service (the baseline: the channel alone).
const RAW_SERVICE: &str = "echo";
/// The callee's typed RPC service, with one unary method `echo`.
const RPC_SERVICE: &str = "rpcbench";
/// The tonic service, on the callee's second node.
const GRPC_SERVICE: &str = "grpcbench";
/// Bytes in every request and every response.
const PAYLOAD: usize = 64;
/// Latency samples are taken in this many rounds, the four paths in turn.
const ROUNDS: usize = 10;

/// Role `serve-rpc`: the callee, admitting only `allow`. One node serves the raw echo and
/// the typed RPC service; a second node serves tonic with `serve_tonic` (which owns its
/// node's whole incoming side); tonic also listens on loopback TCP. Prints
/// `callee RPC_NODE GRPC_NODE TCP_ADDR`.
pub async fn serve(relay: &str, allow: NodeId) -> Result<()> {
    let home = tempfile::tempdir()?;
    std::fs::write(
        home.path().join("policy.toml"),
        format!("[rpc.{RPC_SERVICE}.allow.\"{allow}\"]\nmethods = [\"*\"]\n"),
    )?;
    let node = start_node(relay).await?;
    let access = PolicyAccess::from_home(node.node_id(), home.path())?;
    let service = RpcService::new(RPC_SERVICE).unary("echo", |_ctx, data: Vec<u8>| async move {
        Ok::<_, RpcError>(data)
    });
    let server = Arc::new(RpcServer::new(access).service(service));

    let grpc_node = start_node(relay).await?;
    let grpc_id = grpc_node.node_id();
    tokio::spawn(async move {
        let router = tonic::transport::Server::builder().add_service(EchoServer);
        let allowed = move |peer: NodeId, _: &str| peer == allow;
        if let Err(e) = http::serve_tonic(&grpc_node, GRPC_SERVICE, router, allowed).await {
            eprintln!("serve_tonic: {e}");
        }
    });
    let tcp = tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse()?)?
        .with_nodelay(Some(true));
    let tcp_addr = tcp.local_addr()?;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(EchoServer)
            .serve_with_incoming(tcp),
    );

    crate::say(&format!("callee {} {grpc_id} {tcp_addr}", node.node_id()));
    while let Some(incoming) = node.accept().await {
        let server = server.clone();
        tokio::spawn(async move {
            match incoming.service() {
                RPC_SERVICE => server.serve_channel(incoming).await,
                RAW_SERVICE if incoming.peer() == allow => {
                    if let Ok(ch) = incoming.accept().await {
                        let _ = crate::workload::serve(ch).await;
                    }
                }
                _ => {
                    let _ = incoming.deny(DenyReason::NotAllowed).await;
                }
            }
        });
    }
    drop(home);
    Ok(())
}

/// One way of making a 64-byte call.
trait Caller: Send + 'static {
    /// One call, its answer checked.
    fn call(&mut self) -> impl Future<Output = Result<()>> + Send;
}

/// 64 bytes written to a raw channel and read back (`np-bench run`'s 64 B round trip).
struct Raw {
    channel: Channel,
    request: Vec<u8>,
    reply: Vec<u8>,
}

impl Caller for Raw {
    async fn call(&mut self) -> Result<()> {
        self.channel.write_all(&self.request).await?;
        self.channel.flush().await?;
        self.channel.read_exact(&mut self.reply).await?;
        ensure!(self.reply == self.request, "raw echo differs");
        Ok(())
    }
}

/// A typed unary call.
#[derive(Clone)]
struct Rpc {
    client: RpcClient,
    request: Vec<u8>,
}

impl Caller for Rpc {
    async fn call(&mut self) -> Result<()> {
        let options = CallOptions::default();
        let back: Vec<u8> = self.client.unary("echo", &self.request, options).await?;
        ensure!(back == self.request, "rpc echo differs");
        Ok(())
    }
}

/// A tonic unary call (over nullport or TCP, whichever channel the client has).
#[derive(Clone)]
struct Grpc {
    client: EchoClient,
    request: Vec<u8>,
}

impl Caller for Grpc {
    async fn call(&mut self) -> Result<()> {
        let back = self.client.echo(self.request.clone()).await?;
        ensure!(back == self.request, "grpc echo differs");
        Ok(())
    }
}

/// `count` calls one after another, in microseconds each, into `out`.
async fn sample(c: &mut impl Caller, count: usize, out: &mut Vec<f64>) -> Result<()> {
    for _ in 0..count {
        let started = Instant::now();
        c.call().await?;
        out.push(started.elapsed().as_secs_f64() * 1e6);
    }
    Ok(())
}

/// CPU time per call, in microseconds, over a rate window.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct CpuPerCall {
    /// This process (the caller).
    caller: f64,
    /// The relay process.
    relay: f64,
    /// The callee process.
    callee: f64,
}

/// Calls per second with `in_flight` calls at a time over one client.
#[derive(Debug, Clone, Copy, Serialize)]
struct Rate {
    in_flight: usize,
    calls_per_s: f64,
    cpu_us_per_call: CpuPerCall,
}

/// The processes whose CPU time is counted.
#[derive(Clone, Copy)]
struct Pids {
    relay: u32,
    callee: u32,
}

/// `in_flight` tasks calling over clones of `c` for a warm-up of `window / 10`, then
/// `window` counted.
async fn rate<C: Caller + Clone>(
    c: &C,
    in_flight: usize,
    window: Duration,
    pids: Pids,
) -> Result<Rate> {
    let cpu = || {
        [
            procs::own_cpu_seconds(std::process::id()),
            procs::cpu_seconds(pids.relay),
            procs::cpu_seconds(pids.callee),
        ]
    };
    let warm = window / 10;
    let end = tokio::time::Instant::now() + warm + window;
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..in_flight {
        let (mut c, done) = (c.clone(), done.clone());
        tasks.spawn(async move {
            while tokio::time::Instant::now() < end {
                c.call().await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    tokio::time::sleep(warm).await;
    let (cpu0, from, started) = (cpu(), done.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep_until(end).await;
    let (calls, elapsed) = (done.load(Ordering::Relaxed) - from, started.elapsed());
    let cpu1 = cpu();
    while let Some(task) = tasks.join_next().await {
        task??;
    }
    let per_call = |i: usize| (cpu1[i] - cpu0[i]) * 1e6 / calls.max(1) as f64;
    Ok(Rate {
        in_flight,
        calls_per_s: calls as f64 / elapsed.as_secs_f64(),
        cpu_us_per_call: CpuPerCall {
            caller: per_call(0),
            relay: per_call(1),
            callee: per_call(2),
        },
    })
}

/// One column of the report.
#[derive(Debug, Clone, Serialize)]
struct Column {
    name: &'static str,
    /// 64-byte calls one at a time, microseconds.
    rtt_us: Percentiles,
    /// Calls per second at each concurrency (none for the raw channel).
    rates: Vec<Rate>,
}

/// Runs the measurement and prints the tables (and writes JSON to `json`).
pub async fn run(quick: bool, json: Option<PathBuf>) -> Result<()> {
    let (count, window) = if quick {
        (500, Duration::from_secs(1))
    } else {
        (10_000, Duration::from_secs(5))
    };
    let in_flight = [64, 128];
    let relay = Proc::role(&["relay"])?;
    let relay_addr = format!("{}@{}", relay.word(1)?, relay.word(2)?);
    let node = Arc::new(start_node(&relay_addr).await?);
    let me = node.node_id().to_string();
    let callee = Proc::role(&["serve-rpc", "--relay", &relay_addr, "--allow", &me])?;
    let rpc_peer: NodeId = callee.word(1)?.parse()?;
    let grpc_peer: NodeId = callee.word(2)?.parse()?;
    let tcp_addr: SocketAddr = callee.word(3)?.parse()?;
    let pids = Pids {
        relay: relay.pid(),
        callee: callee.pid(),
    };
    let request = vec![0x5Au8; PAYLOAD];

    let mut channel = node.dial(rpc_peer, RAW_SERVICE).await?;
    channel.write_all(b"E").await?;
    let mut raw = Raw {
        channel,
        request: request.clone(),
        reply: vec![0; PAYLOAD],
    };
    let mut rpc = Rpc {
        client: RpcClient::connect(&node, rpc_peer, RPC_SERVICE).await?,
        request: request.clone(),
    };
    let over_nullport = tonic::transport::Endpoint::from_static("http://grpcbench.nullport")
        .connect_with_connector(http::connector(node.clone(), grpc_peer, GRPC_SERVICE))
        .await
        .context("tonic over nullport")?;
    let mut grpc_np = Grpc {
        client: EchoClient::new(over_nullport),
        request: request.clone(),
    };
    let over_tcp = tonic::transport::Endpoint::from_shared(format!("http://{tcp_addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await
        .context("tonic over TCP")?;
    let mut grpc_tcp = Grpc {
        client: EchoClient::new(over_tcp),
        request,
    };

    let limit = if quick { 120 } else { 900 };
    let measured = tokio::time::timeout(Duration::from_secs(limit), async {
        eprintln!("--- round trips: {count} per path, in {ROUNDS} rounds");
        let warm = count / 10 + 10;
        let mut junk = Vec::new();
        sample(&mut raw, warm, &mut junk).await?;
        sample(&mut rpc, warm, &mut junk).await?;
        sample(&mut grpc_np, warm, &mut junk).await?;
        sample(&mut grpc_tcp, warm, &mut junk).await?;
        let mut rtt: [Vec<f64>; 4] = Default::default();
        let each = count.div_ceil(ROUNDS);
        for _ in 0..ROUNDS {
            sample(&mut raw, each, &mut rtt[0]).await?;
            sample(&mut rpc, each, &mut rtt[1]).await?;
            sample(&mut grpc_np, each, &mut rtt[2]).await?;
            sample(&mut grpc_tcp, each, &mut rtt[3]).await?;
        }
        let mut rates: [Vec<Rate>; 3] = Default::default();
        for n in in_flight {
            eprintln!("--- calls/s, {n} in flight, {window:?} each");
            rates[0].push(rate(&rpc, n, window, pids).await?);
            rates[1].push(rate(&grpc_np, n, window, pids).await?);
            rates[2].push(rate(&grpc_tcp, n, window, pids).await?);
        }
        let [r0, r1, r2, r3] = rtt;
        let [s1, s2, s3] = rates;
        Ok::<_, anyhow::Error>(vec![
            column("raw channel", r0, Vec::new()),
            column("typed RPC", r1, s1),
            column("tonic over nullport", r2, s2),
            column("tonic over TCP", r3, s3),
        ])
    })
    .await
    .map_err(|_| anyhow::anyhow!("gave up after {limit} s"))??;
    node.close().await;

    let header = format!(
        "## np-bench rpc{} on {}, {PAYLOAD} B each way, {count} calls one at a time per path, \
         {} s per rate window",
        if quick { " --quick" } else { "" },
        crate::machine(),
        window.as_secs_f64()
    );
    println!("{}", report::markdown(&measured, &header));
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_vec_pretty(&measured)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("raw results: {}", path.display());
    }
    Ok(())
}

fn column(name: &'static str, rtt: Vec<f64>, rates: Vec<Rate>) -> Column {
    let column = Column {
        name,
        rtt_us: Percentiles::of(rtt),
        rates,
    };
    eprintln!("{column:?}");
    column
}
