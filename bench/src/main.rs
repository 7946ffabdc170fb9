//! `np-bench`: nullport's performance suite.
//!
//! `np-bench run` measures the same workloads, in one invocation, over direct TCP, an
//! OpenSSH reverse tunnel, a bare quinn splice and nullport (node A -> relay -> node B as
//! three processes), and prints Markdown tables with ratios (plus JSON with `--json`).
//! `np-bench capacity` holds many idle authenticated nodes on one relay and reports its
//! memory per node, idle CPU, admissions per second and dial latency under load.
//! `np-bench rpc` measures typed RPC calls against the raw channel under them, and gRPC
//! (tonic) over nullport against tonic over TCP. `np-bench compare` sets a run's
//! nullport/splice ratios against a committed baseline (CI's regression report).
#![forbid(unsafe_code)]

mod capacity;
mod compare;
mod fleet;
mod paths;
mod pattern;
mod procs;
mod report;
mod rounds;
mod rpc;
mod workload;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::report::{PathResult, Percentiles};

#[derive(Parser)]
#[command(name = "np-bench", about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the workloads over every path, side by side, and print the tables.
    Run {
        /// Seconds, not minutes: 32 MiB transfers, 500 round trips (for CI smoke).
        #[arg(long)]
        quick: bool,
        /// Also write the raw results as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Only these paths (comma separated): tcp, ssh, rathole, quinn, nullport,
        /// nullport-user, iroh, iroh-tunnel (the last two need the cargo feature `iroh`).
        #[arg(long, value_delimiter = ',')]
        paths: Option<Vec<String>>,
        /// Bytes per bulk run (default 1 GiB; 32 MiB with --quick).
        #[arg(long)]
        bytes: Option<u64>,
        /// Measure every path this many times in turn, all paths running side by side and
        /// the order reversed each round; report each figure's median over the rounds and
        /// nullport's ratios paired within rounds (median, min-max). For targets on a
        /// machine whose speed drifts; 1 measures each path once, one after the other.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
        rounds: u32,
    },
    /// Hold N idle, authenticated, keep-alive nodes on one relay process; report its
    /// memory per node, idle CPU, admissions/s and dial latency while loaded.
    Capacity {
        /// Node counts to step through (comma separated).
        #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
        nodes: Vec<usize>,
        /// Also write the raw results as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Measure a bare quinn server with the same TLS and transport settings instead
        /// (what quinn and TLS cost per connection, without nullport's relay link).
        #[arg(long)]
        baseline: bool,
        /// Load a relay that is already running (`ID@ADDR`, e.g. `np-bench relay` started
        /// under `taskset` or a heap profiler) instead of starting one.
        #[arg(long, requires = "relay_pid", conflicts_with = "baseline")]
        relay: Option<String>,
        /// That relay's process id (its memory and CPU are read from `/proc`).
        #[arg(long, requires = "relay")]
        relay_pid: Option<u32>,
        /// Keep the nodes connected this many seconds after the last step (time to take a
        /// heap snapshot of the loaded relay).
        #[arg(long, default_value_t = 0)]
        hold: u64,
    },
    /// Typed RPC against the raw channel, and tonic over nullport against tonic over TCP:
    /// 64 B calls one at a time (p50/p99) and many in flight (calls/s), with ratios.
    Rpc {
        /// A few seconds: 500 calls per path, 1 s rate windows (for CI smoke).
        #[arg(long)]
        quick: bool,
        /// Also write the raw results as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// A fleet of three relay processes under one signed map: setup and round trip on one
    /// relay against through the callee's relay (link cold and warm), failover after
    /// kill -9 of a relay, and relay memory per idle node in the fleet against alone.
    Fleet {
        /// Seconds: 100 samples, 6 nodes failing over, 500 idle links.
        #[arg(long)]
        quick: bool,
        /// Also write the raw results as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// nullport's ratios to the bare quinn splice in `run --json` results against a
    /// committed baseline: metric, baseline, current, change in %. Reports, never fails on
    /// the figures (only on a missing or malformed file).
    Compare {
        /// The baseline file (e.g. bench/baseline/run-quick.json).
        #[arg(long)]
        baseline: PathBuf,
        /// The results of `np-bench run --json` to compare.
        #[arg(long)]
        current: PathBuf,
        /// Write the current ratios to the baseline file instead (refresh it).
        #[arg(long)]
        write: bool,
    },
    #[command(hide = true)]
    ServeTcp,
    #[command(hide = true)]
    Relay {
        /// Serve the relay map in this file once it appears.
        #[arg(long)]
        map_file: Option<PathBuf>,
    },
    #[command(hide = true)]
    ServeNode {
        #[arg(long)]
        relay: String,
    },
    #[command(hide = true)]
    ServeRpc {
        #[arg(long)]
        relay: String,
        #[arg(long)]
        allow: nullport_protocol::NodeId,
    },
    #[command(hide = true)]
    QuinnRelay,
    #[command(hide = true)]
    ServeQuinn {
        #[arg(long)]
        relay: String,
    },
    /// The iroh paths' processes: `iroh relay|serve|tunnel-out|tunnel-in ARGS...`.
    #[command(hide = true)]
    Iroh { role: String, args: Vec<String> },
}

/// Prints one line to standard output and flushes it (children announce themselves so).
pub fn say(line: &str) {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Run {
            quick,
            json,
            paths,
            bytes,
            rounds,
        } => run(quick, json, paths, bytes, rounds as usize).await,
        Cmd::Capacity {
            nodes,
            json,
            baseline,
            relay,
            relay_pid,
            hold,
        } => {
            let external = relay.zip(relay_pid);
            let hold = Duration::from_secs(hold);
            capacity::run(&nodes, json, baseline, external, hold).await
        }
        Cmd::Compare {
            baseline,
            current,
            write,
        } => Ok(compare::run(&baseline, &current, write)?),
        Cmd::Rpc { quick, json } => rpc::run(quick, json).await,
        Cmd::ServeRpc { relay, allow } => rpc::serve(&relay, allow).await,
        Cmd::ServeTcp => paths::tcp::serve().await,
        Cmd::Fleet { quick, json } => fleet::run(quick, json).await,
        Cmd::Relay { map_file } => paths::nullport::relay(map_file).await,
        Cmd::ServeNode { relay } => paths::nullport::serve(&relay).await,
        Cmd::QuinnRelay => paths::quinn_splice::relay().await,
        Cmd::ServeQuinn { relay } => paths::quinn_splice::serve(&relay).await,
        Cmd::Iroh { role, args } => paths::over_iroh::role(&role, &args).await,
    }
}

struct Sizes {
    bulk: u64,
    round_trips: usize,
    setups: usize,
    rate_window: Duration,
}

/// The paths `run` knows, in table order.
const PATHS: [&str; 8] = [
    "tcp",
    "ssh",
    "rathole",
    "quinn",
    "nullport",
    "nullport-user",
    "iroh",
    "iroh-tunnel",
];

async fn run(
    quick: bool,
    json: Option<PathBuf>,
    only: Option<Vec<String>>,
    bytes: Option<u64>,
    rounds: usize,
) -> Result<()> {
    let sizes = if quick {
        Sizes {
            bulk: bytes.unwrap_or(32 << 20),
            round_trips: 500,
            setups: 100,
            rate_window: Duration::from_secs(1),
        }
    } else {
        Sizes {
            bulk: bytes.unwrap_or(1 << 30),
            round_trips: 10_000,
            setups: 1_000,
            rate_window: Duration::from_secs(5),
        }
    };
    let limit = if quick {
        Duration::from_secs(120)
    } else {
        Duration::from_secs(900)
    };
    let wanted = |name: &str| only.as_ref().is_none_or(|o| o.iter().any(|p| p == name));
    let keys = PATHS.into_iter().filter(|k| wanted(k));
    let mut header = format!(
        "## np-bench run{} on {}, {} MiB per bulk run, {} round trips, {} setups",
        if quick { " --quick" } else { "" },
        machine(),
        sizes.bulk >> 20,
        sizes.round_trips,
        sizes.setups
    );
    let report = if rounds <= 1 {
        // One path at a time: started, measured, stopped.
        let mut results = Vec::new();
        for key in keys {
            let Some(path) = start_path(key, only.is_some()).await? else {
                continue;
            };
            match tokio::time::timeout(limit, measure(&path, &sizes)).await {
                Ok(Ok(result)) => {
                    eprintln!("{result:?}");
                    results.push(result);
                }
                Ok(Err(e)) => eprintln!("{}: failed: {e:#}", path.name),
                Err(_) => eprintln!("{}: gave up after {limit:?}", path.name),
            }
            drop(path);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        (report::markdown(&results, &header), results)
    } else {
        // Every path at once, measured in turn, round after round; a path that fails in
        // any round fails the run (its medians would rest on fewer rounds than the rest).
        let mut started = Vec::new();
        for key in keys {
            if let Some(path) = start_path(key, only.is_some()).await? {
                started.push(path);
            }
        }
        let mut per_round = Vec::with_capacity(rounds);
        for round in 0..rounds {
            let mut this: Vec<Option<PathResult>> = vec![None; started.len()];
            for i in rounds::order(round, started.len()) {
                let path = &started[i];
                eprintln!("--- round {} of {rounds}: {}", round + 1, path.name);
                let result = tokio::time::timeout(limit, measure(path, &sizes))
                    .await
                    .map_err(|_| anyhow::anyhow!("{}: gave up after {limit:?}", path.name))?
                    .with_context(|| format!("{} in round {}", path.name, round + 1))?;
                this[i] = Some(result);
            }
            per_round.push(this.into_iter().flatten().collect::<Vec<_>>());
        }
        header.push_str(&format!(
            "; every figure the median of {rounds} rounds (paths side by side, order reversed each round)"
        ));
        let medians = rounds::medians(&per_round);
        (rounds::markdown(&per_round, &medians, &header), medians)
    };
    println!("{}", report.0);
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_vec_pretty(&report.1)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("raw results: {}", path.display());
    }
    Ok(())
}

/// Starts the path `key`; None when its peer is missing here and no `--paths` named it
/// (said so on standard error). A path named by `--paths` must run.
async fn start_path(key: &str, named: bool) -> Result<Option<paths::Path>> {
    let missing = match key {
        "ssh" => paths::ssh::unavailable(),
        "rathole" => paths::rathole::unavailable(),
        "nullport-user" => paths::nullport_user::unavailable(),
        "iroh" | "iroh-tunnel" => paths::over_iroh::unavailable(),
        _ => None,
    };
    if let Some(why) = missing {
        if named {
            anyhow::bail!("path {key} was asked for but cannot run: {why}");
        }
        eprintln!("skipping {key}: {why}");
        return Ok(None);
    }
    eprintln!("--- {key}");
    let path = match key {
        "tcp" => paths::tcp::start()?,
        "ssh" => paths::ssh::start().await?,
        "rathole" => paths::rathole::start().await?,
        "quinn" => paths::quinn_splice::start().await?,
        "nullport-user" => paths::nullport_user::start().await?,
        "iroh" => paths::over_iroh::start(false).await?,
        "iroh-tunnel" => paths::over_iroh::start(true).await?,
        _ => paths::nullport::start().await?,
    };
    Ok(Some(path))
}

/// The CPU model and how many CPUs this process may use: `MODEL (N CPUs)`.
pub fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")?
                    .split(':')
                    .nth(1)
                    .map(|s| s.trim().to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!("{model} ({cpus} CPUs)")
}

async fn measure(path: &paths::Path, sizes: &Sizes) -> Result<PathResult> {
    let opener = path.opener.clone();
    let cpu = || path.relay_pid.map(procs::cpu_seconds);
    // Warm up: one small transfer each way.
    workload::upload(opener.as_ref(), 1 << 20).await?;
    workload::download(opener.as_ref(), 1 << 20).await?;
    let cpu_before = cpu();
    let bulk1_up_gbps = workload::bulk(opener.clone(), 1, sizes.bulk, true).await?;
    let bulk1_down_gbps = workload::bulk(opener.clone(), 1, sizes.bulk, false).await?;
    let bulk8_up_gbps = workload::bulk(opener.clone(), 8, sizes.bulk, true).await?;
    let bulk8_down_gbps = workload::bulk(opener.clone(), 8, sizes.bulk, false).await?;
    let relay_cpu_s_per_gib = match (cpu_before, cpu()) {
        (Some(a), Some(b)) => Some((b - a) / (4.0 * sizes.bulk as f64 / f64::from(1u32 << 30))),
        _ => None,
    };
    let mut pids = vec![std::process::id()];
    pids.extend(path._procs.iter().flat_map(|p| procs::tree(p.pid())));
    let switches = || -> u64 { pids.iter().map(|&p| procs::context_switches(p)).sum() };
    let switches_before = switches();
    let rtt64 = workload::round_trips(opener.as_ref(), 64, sizes.round_trips).await?;
    // Counted over the whole call (its warm-up and stream setup too: about 1.1x the
    // round trips, a constant share on every path).
    let rtt64_switches = Some(
        switches().saturating_sub(switches_before) as f64
            / (sizes.round_trips / 10 + 10 + rtt64.len()) as f64,
    );
    let rtt16k = workload::round_trips(opener.as_ref(), 16 << 10, sizes.round_trips).await?;
    let setup = workload::setup_times(opener.as_ref(), sizes.setups).await?;
    let channels_per_s = workload::streams_per_second(opener.clone(), 8, sizes.rate_window).await?;
    Ok(PathResult {
        name: path.name.to_owned(),
        security: path.security.to_owned(),
        bulk1_up_gbps,
        bulk1_down_gbps,
        bulk8_up_gbps,
        bulk8_down_gbps,
        relay_cpu_s_per_gib,
        rtt64_us: Percentiles::of(rtt64),
        rtt64_switches,
        rtt16k_us: Percentiles::of(rtt16k),
        setup_us: Percentiles::of(setup),
        channels_per_s,
    })
}
