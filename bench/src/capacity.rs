//! The relay capacity load generator: many authenticated, idle, keep-alive nodes (raw relay
//! links from this one process) against one relay process.
//!
//! For each step it reports the relay's resident memory per node, its CPU use while the
//! nodes idle, admissions per second (TLS 1.3 with raw Ed25519 keys + Hello/Welcome), and
//! the dial latency of two real nodes through the loaded relay.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nullport_node::{Node, NodeConfig, RelayAddr};
use nullport_protocol::relay_link::{self, LINK_VERSION, NodeToRelay, RelayToNode};
use nullport_protocol::{Identity, NodeId};
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::procs::{self, Proc};
use crate::report::Percentiles;

/// Admissions in flight at once (the relay's per-IP pending cap in the bench config).
const CONCURRENCY: usize = 128;

/// One step's figures.
#[derive(Debug, Serialize)]
pub struct Step {
    /// Idle nodes connected.
    pub nodes: usize,
    /// Relay resident memory, KiB.
    pub relay_rss_kib: u64,
    /// (RSS now - RSS with no nodes) / nodes, KiB.
    pub relay_kib_per_node: f64,
    /// Admissions per second while adding this step's nodes.
    pub admissions_per_s: f64,
    /// Relay CPU time per admission while adding them, milliseconds (what the relay can
    /// admit per core-second, whatever the load generator manages: 1000 / this).
    pub relay_cpu_ms_per_admission: f64,
    /// Relay CPU while the nodes idle, percent of one core.
    pub relay_idle_cpu_percent: f64,
    /// Dial to first echo between two real nodes through the loaded relay, microseconds.
    pub dial_us: Percentiles,
}

/// An idle node: its connection and control stream, kept open.
pub(crate) struct Idle {
    _conn: quinn::Connection,
    _control: (quinn::SendStream, quinn::RecvStream),
}

fn transport() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(0u32.into())
        .max_concurrent_uni_streams(0u32.into())
        .keep_alive_interval(Some(Duration::from_secs(10)))
        .max_idle_timeout(quinn::IdleTimeout::try_from(Duration::from_secs(30)).ok());
    t
}

async fn admit(
    endpoint: &quinn::Endpoint,
    relay_id: NodeId,
    addr: std::net::SocketAddr,
    hello: bool,
) -> Result<Idle> {
    let identity = Identity::generate()?;
    let crypto = nullport_node::tls::client_crypto(&identity, relay_id, Arc::default())?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport()));
    let conn = endpoint.connect_with(config, addr, "relay")?.await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    if !hello {
        return Ok(Idle {
            _conn: conn,
            _control: (send, recv),
        });
    }
    let mut buf = Vec::new();
    relay_link::encode(
        &NodeToRelay::Hello {
            version: LINK_VERSION,
        },
        relay_link::MAX_LINK_MESSAGE,
        &mut buf,
    )?;
    send.write_all(&buf).await?;
    let mut prefix = [0u8; relay_link::LENGTH_PREFIX];
    recv.read_exact(&mut prefix).await?;
    let len = relay_link::decode_len(prefix, relay_link::MAX_LINK_MESSAGE)?;
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body).await?;
    match relay_link::decode::<RelayToNode>(&body) {
        Ok(RelayToNode::Welcome { .. }) => Ok(Idle {
            _conn: conn,
            _control: (send, recv),
        }),
        other => bail!("relay answered {other:?}"),
    }
}

/// Connects `want` more nodes (`CONCURRENCY` at a time, spread over `endpoints`), adding
/// them to `idle`; returns how many failed and the first error.
pub(crate) async fn admit_many(
    endpoints: &[quinn::Endpoint],
    want: usize,
    relay_id: NodeId,
    addr: std::net::SocketAddr,
    hello: bool,
    idle: &mut Vec<Idle>,
) -> Result<(usize, Option<String>)> {
    let gate = Arc::new(Semaphore::new(CONCURRENCY));
    let mut tasks = Vec::with_capacity(want);
    for i in 0..want {
        let permit = gate.clone().acquire_owned().await?;
        let endpoint = endpoints[i % endpoints.len()].clone();
        tasks.push(tokio::spawn(async move {
            let r = admit(&endpoint, relay_id, addr, hello).await;
            drop(permit);
            r
        }));
    }
    let mut failed = 0usize;
    let mut first_error = None;
    for t in tasks {
        match t.await? {
            Ok(node) => idle.push(node),
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    Ok((failed, first_error))
}

async fn echo_server(node: Arc<Node>) {
    while let Some(incoming) = node.accept().await {
        tokio::spawn(async move {
            if let Ok(ch) = incoming.accept().await {
                let _ = crate::workload::serve(ch).await;
            }
        });
    }
}

/// Runs the steps in `counts` (cumulative) and prints a Markdown table. With `baseline`,
/// the relay is the bare quinn splice server (same TLS and transport settings, no relay
/// link): how much of the per-node memory is quinn and TLS's own. With `external`
/// (`ID@ADDR` and process id), the relay is one already running, started by the caller
/// (pinned to its own core, or under a heap profiler). The nodes stay connected `hold`
/// longer after the last step.
pub async fn run(
    counts: &[usize],
    json: Option<PathBuf>,
    baseline: bool,
    external: Option<(String, u32)>,
    hold: Duration,
) -> Result<()> {
    if baseline {
        return run_baseline(counts).await;
    }
    // Held until the end: dropping it stops the relay this run started.
    let mut started: Option<Proc> = None;
    let (text, relay_pid) = match external {
        Some(given) => given,
        None => {
            let relay = Proc::role(&["relay"])?;
            let text = format!("{}@{}", relay.word(1)?, relay.word(2)?);
            let pid = relay.pid();
            started = Some(relay);
            (text, pid)
        }
    };
    let (id, addr) = text.split_once('@').context("relay as ID@ADDR")?;
    let relay_id: NodeId = id.parse()?;
    let addr: std::net::SocketAddr = addr.parse()?;
    let relay_addr: RelayAddr = text.parse()?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let base_rss = procs::rss_kib(relay_pid);

    // Two real nodes for dial latency under load.
    let a = Node::start(NodeConfig::new(
        Arc::new(Identity::generate()?),
        relay_addr.clone(),
    ))
    .await?;
    let b =
        Arc::new(Node::start(NodeConfig::new(Arc::new(Identity::generate()?), relay_addr)).await?);
    a.wait_online(Duration::from_secs(10)).await?;
    b.wait_online(Duration::from_secs(10)).await?;
    tokio::spawn(echo_server(b.clone()));
    let opener = crate::paths::nullport::NodeOpener {
        node: Arc::new(a),
        peer: b.node_id(),
    };

    // A few client endpoints (UDP sockets) share the connections.
    let endpoints: Vec<quinn::Endpoint> = (0..8)
        .map(|_| quinn::Endpoint::client("127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!())))
        .collect::<Result<_, _>>()
        .context("client endpoint")?;
    let mut idle: Vec<Idle> = Vec::new();
    let mut steps = Vec::new();
    for &count in counts {
        let want = count.saturating_sub(idle.len());
        let started = Instant::now();
        let cpu_before = procs::cpu_seconds(relay_pid);
        let (failed, first_error) =
            admit_many(&endpoints, want, relay_id, addr, true, &mut idle).await?;
        let admitted = (want - failed).max(1) as f64;
        let admissions_per_s = (want - failed) as f64 / started.elapsed().as_secs_f64();
        let relay_cpu_ms_per_admission =
            (procs::cpu_seconds(relay_pid) - cpu_before) * 1000.0 / admitted;
        if let Some(e) = first_error {
            eprintln!("{failed} of {want} admissions failed; first: {e}");
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss = procs::rss_kib(relay_pid);
        let cpu0 = procs::cpu_seconds(relay_pid);
        let window = Duration::from_secs(10);
        tokio::time::sleep(window).await;
        let idle_cpu = (procs::cpu_seconds(relay_pid) - cpu0) / window.as_secs_f64() * 100.0;
        let dial = crate::workload::setup_times(&opener, 200).await?;
        let step = Step {
            nodes: idle.len(),
            relay_rss_kib: rss,
            relay_kib_per_node: rss.saturating_sub(base_rss) as f64 / idle.len().max(1) as f64,
            admissions_per_s,
            relay_cpu_ms_per_admission,
            relay_idle_cpu_percent: idle_cpu,
            dial_us: Percentiles::of(dial),
        };
        eprintln!("{step:?}");
        steps.push(step);
    }
    println!(
        "## np-bench capacity: one relay process, idle authenticated nodes from one load generator\n\n\
         Relay RSS with no nodes: {base_rss} KiB.\n\n\
         | nodes | relay RSS MiB | KiB per node | admissions/s | relay CPU ms per admission | idle CPU % of a core | dial to first echo p50 / p99 us |\n\
         | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for s in &steps {
        println!(
            "| {} | {:.0} | {:.1} | {:.0} | {:.2} | {:.1} | {:.0} / {:.0} |",
            s.nodes,
            s.relay_rss_kib as f64 / 1024.0,
            s.relay_kib_per_node,
            s.admissions_per_s,
            s.relay_cpu_ms_per_admission,
            s.relay_idle_cpu_percent,
            s.dial_us.p50,
            s.dial_us.p99
        );
    }
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_vec_pretty(&steps)?)?;
    }
    if !hold.is_zero() {
        eprintln!("holding {} nodes for {hold:?}", idle.len());
        tokio::time::sleep(hold).await;
    }
    drop(idle);
    drop(started);
    Ok(())
}

async fn run_baseline(counts: &[usize]) -> Result<()> {
    let relay = Proc::role(&["quinn-relay"])?;
    let relay_id: NodeId = relay.word(1)?.parse()?;
    let addr: std::net::SocketAddr = relay.word(2)?.parse()?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let base_rss = procs::rss_kib(relay.pid());
    let endpoints = [quinn::Endpoint::client("127.0.0.1:0".parse()?)?];
    let mut idle = Vec::new();
    println!(
        "| bare quinn connections | server RSS MiB | KiB per connection |\n| ---: | ---: | ---: |"
    );
    for &count in counts {
        let want = count.saturating_sub(idle.len());
        if let (failed @ 1.., Some(e)) =
            admit_many(&endpoints, want, relay_id, addr, false, &mut idle).await?
        {
            bail!("{failed} of {want} connections failed; first: {e}");
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss = procs::rss_kib(relay.pid());
        println!(
            "| {} | {:.0} | {:.1} |",
            idle.len(),
            rss as f64 / 1024.0,
            rss.saturating_sub(base_rss) as f64 / idle.len().max(1) as f64
        );
    }
    Ok(())
}
