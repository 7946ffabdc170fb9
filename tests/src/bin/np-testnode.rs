//! A small test program built on the libraries, for tests that need nullport in separate
//! processes (network namespaces): a relay, a sink node, and a sender.
//!
//! ```text
//! np-testnode relay --listen 0.0.0.0:7443          prints "relay <NodeId>", serves until killed
//! np-testnode sink --relay <id>@host:port          prints "node <NodeId>", answers sha256 of input
//! np-testnode send --relay <id>@host:port <peer> <bytes>   prints "ok <bytes> <seconds>"
//! np-testnode lag --listen ADDR --to ADDR --delay-ms D --jitter-ms J
//!                                                   prints "lag <addr>", forwards UDP both ways
//! np-testnode fleet-nodes --bootstrap fleet:<admin>/<relay>@host:port --seeds S,S,...
//!     [--keep-alive-ms N] [--idle-ms N] [--settle-ms N] [--extra-idle-ms N]
//!                                                   fleet nodes in one process, see below
//! ```
//!
//! `fleet-nodes` starts one fleet node per seed (identity:
//! `nullport_tests::netns::seeded_identity`), node `i` being the `i`-th seed, each serving the
//! sink. Limits are the fleet defaults (`NodeConfig::fleet`) unless given. It prints, one line
//! per event:
//!
//! ```text
//! node <i> <NodeId>                  once per node, as it starts
//! home <i> <relay NodeId|none> <unix-ms>   whenever node i's home relay changes (looked at
//!                                    every 10 ms)
//! sent <tag> <bytes> <ms>            a `send` delivered intact (the sink's SHA-256 matched)
//! links <tag> <relay>=<up|down>,...  node i's relay links, for `links`
//! error <tag> <what>                 a command failed
//! ```
//!
//! and reads commands on stdin, one a line, each run at once beside the others (the tag names
//! the answer):
//!
//! ```text
//! send <tag> <i> <peer NodeId> <bytes> [<pace-ms>]   node i sends to peer's sink, spread over
//!                                                     pace-ms if given, and checks the digest
//! links <tag> <i>
//! ```
//!
//! It exits when stdin closes.
//!
//! `lag` stands in for `tc netem delay` where the kernel has no netem: every datagram, each
//! way, waits D ms plus a pseudo-random 0..J ms, so packets are also reordered.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nullport_keyring::relay_map::FleetBootstrap;
use nullport_node::{Node, NodeConfig, RelayAddr};
use nullport_protocol::{Identity, NodeId};
use nullport_relay::{Admission, Relay, RelayConfig};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn usage() -> ! {
    eprintln!(
        "usage: np-testnode relay --listen ADDR | sink --relay ADDR | send --relay ADDR PEER BYTES \
         | lag --listen ADDR --to ADDR --delay-ms D --jitter-ms J \
         | fleet-nodes --bootstrap FLEET --seeds S,S,... [--keep-alive-ms N] [--idle-ms N] \
         [--settle-ms N] [--extra-idle-ms N]"
    );
    std::process::exit(2)
}

fn say(line: &str) {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // NP_TESTNODE_SEED (one byte, decimal) gives a fixed identity, so a killed node can be
    // restarted as itself.
    let identity = match std::env::var("NP_TESTNODE_SEED") {
        Ok(s) => Identity::from_seed([s.parse::<u8>().unwrap_or_else(|_| usage()); 32]),
        Err(_) => Identity::generate().unwrap_or_else(|_| usage()),
    };
    let identity = Arc::new(identity);
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["relay", "--listen", addr] => {
            let listen: SocketAddr = addr.parse().unwrap_or_else(|_| usage());
            let config = RelayConfig::new(identity.clone(), listen, Arc::new(Admission::open()));
            let relay = match Relay::bind(config).await {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("relay: {e}");
                    std::process::exit(1);
                }
            };
            say(&format!("relay {}", relay.node_id()));
            std::future::pending::<()>().await;
        }
        ["sink", "--relay", relay] => {
            let node = start(identity, relay).await;
            say(&format!("node {}", node.node_id()));
            nullport_tests::sink(&node).await;
        }
        ["send", "--relay", relay, peer, bytes] => {
            let peer: NodeId = peer.parse().unwrap_or_else(|_| usage());
            let len: usize = bytes.parse().unwrap_or_else(|_| usage());
            let node = start(identity, relay).await;
            let started = Instant::now();
            match send(&node, peer, len, Duration::ZERO).await {
                Ok(()) => say(&format!("ok {len} {:.3}", started.elapsed().as_secs_f64())),
                Err(e) => {
                    say(&format!("error {e}"));
                    std::process::exit(1);
                }
            }
        }
        [
            "lag",
            "--listen",
            listen,
            "--to",
            to,
            "--delay-ms",
            delay,
            "--jitter-ms",
            jitter,
        ] => {
            let parse = |s: &str| s.parse::<u64>().unwrap_or_else(|_| usage());
            let (listen, to) = (
                listen.parse().unwrap_or_else(|_| usage()),
                to.parse().unwrap_or_else(|_| usage()),
            );
            if let Err(e) = lag(listen, to, parse(delay), parse(jitter)).await {
                eprintln!("lag: {e}");
                std::process::exit(1);
            }
        }
        ["fleet-nodes", options @ ..] => fleet_nodes(fleet_options(options)).await,
        _ => usage(),
    }
}

/// Sends `len` bytes of the test pattern to `peer`'s sink, spread evenly over `pace` (zero:
/// as fast as the channel takes them), and checks the SHA-256 the sink answers.
async fn send(node: &Node, peer: NodeId, len: usize, pace: Duration) -> Result<(), String> {
    const CHUNK: usize = 64 * 1024;
    let data = nullport_tests::pattern(len, 7);
    let mut ch = node.dial(peer, "sink").await.map_err(|e| e.to_string())?;
    let chunks = len.div_ceil(CHUNK).max(1);
    let started = tokio::time::Instant::now();
    for (k, chunk) in data.chunks(CHUNK).enumerate() {
        ch.write_all(chunk).await.map_err(|e| e.to_string())?;
        if !pace.is_zero() {
            let due = started + pace.mul_f64((k + 1) as f64 / chunks as f64);
            tokio::time::sleep_until(due).await;
        }
    }
    ch.shutdown().await.map_err(|e| e.to_string())?;
    let mut digest = Vec::new();
    ch.read_to_end(&mut digest)
        .await
        .map_err(|e| e.to_string())?;
    if digest != Sha256::digest(&data).to_vec() {
        return Err("digest mismatch".to_owned());
    }
    Ok(())
}

/// Per-datagram delays: `delay_ms` plus a pseudo-random 0..=`jitter_ms` (xorshift).
#[derive(Clone, Copy)]
struct Lag {
    delay_ms: u64,
    jitter_ms: u64,
    state: u64,
}

impl Lag {
    fn next(&mut self) -> Duration {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        Duration::from_millis(self.delay_ms + self.state % (self.jitter_ms + 1))
    }
}

/// Forwards datagrams between clients of `listen` and `to`, each delayed by `delay_ms` plus
/// up to `jitter_ms` (xorshift, so runs differ only by seed; reordering is the point).
async fn lag(
    listen: SocketAddr,
    to: SocketAddr,
    delay_ms: u64,
    jitter_ms: u64,
) -> std::io::Result<()> {
    use std::collections::HashMap;
    use tokio::net::UdpSocket;
    let front = Arc::new(UdpSocket::bind(listen).await?);
    say(&format!("lag {}", front.local_addr()?));
    let mut lag = Lag {
        delay_ms,
        jitter_ms,
        state: u64::from(std::process::id()) | 1,
    };
    let mut backs: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, client) = front.recv_from(&mut buf).await?;
        let back = match backs.get(&client) {
            Some(b) => b.clone(),
            None => {
                let any = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
                let back = Arc::new(UdpSocket::bind(any).await?);
                back.connect(to).await?;
                let (front, reply_to) = (front.clone(), back.clone());
                let mut reply_lag = Lag {
                    state: u64::from(client.port()) | 1,
                    ..lag
                };
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65_536];
                    while let Ok(n) = reply_to.recv(&mut buf).await {
                        let wait = reply_lag.next();
                        let (front, packet) = (front.clone(), buf[..n].to_vec());
                        tokio::spawn(async move {
                            tokio::time::sleep(wait).await;
                            let _ = front.send_to(&packet, client).await;
                        });
                    }
                });
                backs.insert(client, back.clone());
                back
            }
        };
        let (wait, packet) = (lag.next(), buf[..n].to_vec());
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let _ = back.send(&packet).await;
        });
    }
}

async fn start(identity: Arc<Identity>, relay: &str) -> Node {
    let relay: RelayAddr = relay.parse().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    });
    let node = match Node::start(NodeConfig::new(identity, relay)).await {
        Ok(n) => n,
        Err(e) => {
            eprintln!("node: {e}");
            std::process::exit(1)
        }
    };
    if let Err(e) = node.wait_online(Duration::from_secs(10)).await {
        say(&format!("error {e}"));
        std::process::exit(1);
    }
    node
}

/// What `fleet-nodes` runs.
struct FleetOptions {
    bootstrap: FleetBootstrap,
    seeds: Vec<u64>,
    keep_alive: Option<Duration>,
    idle: Option<Duration>,
    settle: Option<Duration>,
    extra_idle: Option<Duration>,
}

fn fleet_options(args: &[&str]) -> FleetOptions {
    let ms = |v: &str| Duration::from_millis(v.parse().unwrap_or_else(|_| usage()));
    let (mut bootstrap, mut seeds) = (None, Vec::new());
    let (mut keep_alive, mut idle, mut settle, mut extra_idle) = (None, None, None, None);
    let mut words = args.iter();
    while let Some(flag) = words.next() {
        let value = words.next().unwrap_or_else(|| usage());
        match *flag {
            "--bootstrap" => bootstrap = Some(value.parse().unwrap_or_else(|_| usage())),
            "--seeds" => {
                seeds = value
                    .split(',')
                    .map(|s| s.parse().unwrap_or_else(|_| usage()))
                    .collect();
            }
            "--keep-alive-ms" => keep_alive = Some(ms(value)),
            "--idle-ms" => idle = Some(ms(value)),
            "--settle-ms" => settle = Some(ms(value)),
            "--extra-idle-ms" => extra_idle = Some(ms(value)),
            _ => usage(),
        }
    }
    FleetOptions {
        bootstrap: bootstrap.unwrap_or_else(|| usage()),
        seeds,
        keep_alive,
        idle,
        settle,
        extra_idle,
    }
}

fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// `fleet-nodes`: starts the nodes, reports their homes, runs commands until stdin closes.
async fn fleet_nodes(options: FleetOptions) {
    use tokio::io::AsyncBufReadExt;
    let mut nodes = Vec::new();
    for (i, seed) in options.seeds.iter().enumerate() {
        let identity = Arc::new(nullport_tests::netns::seeded_identity(*seed));
        let mut config = NodeConfig::fleet(identity, &options.bootstrap).unwrap_or_else(|e| {
            eprintln!("{e}");
            std::process::exit(2)
        });
        let limits = &mut config.limits;
        limits.keep_alive = options.keep_alive.unwrap_or(limits.keep_alive);
        limits.idle_timeout = options.idle.unwrap_or(limits.idle_timeout);
        limits.home_settle = options.settle.unwrap_or(limits.home_settle);
        limits.extra_link_idle = options.extra_idle.unwrap_or(limits.extra_link_idle);
        let node = match Node::start(config).await {
            Ok(n) => Arc::new(n),
            Err(e) => {
                eprintln!("node {i}: {e}");
                std::process::exit(1)
            }
        };
        say(&format!("node {i} {}", node.node_id()));
        let serving = node.clone();
        tokio::spawn(async move { nullport_tests::sink(&serving).await });
        nodes.push(node);
    }
    let nodes: Arc<[Arc<Node>]> = nodes.into();
    let watcher = tokio::spawn(watch_homes(nodes.clone()));
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        let node = |i: &str| i.parse::<usize>().ok().and_then(|i| nodes.get(i).cloned());
        match words.as_slice() {
            ["send", tag, from, peer, bytes, pace @ ..] if pace.len() <= 1 => {
                let tag = (*tag).to_owned();
                let parsed = (
                    node(from),
                    peer.parse::<NodeId>(),
                    bytes.parse::<usize>(),
                    pace.first().map_or(Ok(0), |p| p.parse::<u64>()),
                );
                let (Some(from), Ok(peer), Ok(len), Ok(pace)) = parsed else {
                    say(&format!("error {tag} bad send command: {line}"));
                    continue;
                };
                let pace = Duration::from_millis(pace);
                tokio::spawn(async move {
                    let started = Instant::now();
                    let within = pace + Duration::from_secs(60);
                    let result = tokio::time::timeout(within, send(&from, peer, len, pace))
                        .await
                        .unwrap_or_else(|_| Err(format!("not done within {within:?}")));
                    match result {
                        Ok(()) => say(&format!(
                            "sent {tag} {len} {}",
                            started.elapsed().as_millis()
                        )),
                        Err(e) => say(&format!("error {tag} {e}")),
                    }
                });
            }
            ["links", tag, i] => match node(i) {
                Some(n) => {
                    let links: Vec<String> = n
                        .relay_links()
                        .iter()
                        .map(|(r, up)| format!("{r}={}", if *up { "up" } else { "down" }))
                        .collect();
                    say(&format!("links {tag} {}", links.join(",")));
                }
                None => say(&format!("error {tag} no node {i}")),
            },
            _ => say(&format!("error - unknown command: {line}")),
        }
    }
    watcher.abort();
}

/// Prints `home <i> <relay|none> <unix-ms>` whenever a node's home changes.
async fn watch_homes(nodes: Arc<[Arc<Node>]>) {
    let mut seen: Vec<Option<Option<NodeId>>> = vec![None; nodes.len()];
    loop {
        for (i, node) in nodes.iter().enumerate() {
            let home = node.home_relay();
            if seen[i] != Some(home) {
                seen[i] = Some(home);
                let home = home.map_or_else(|| "none".to_owned(), |r| r.to_string());
                say(&format!("home {i} {home} {}", unix_ms()));
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
