//! A small test program built on the libraries, for tests that need nullport in separate
//! processes (network namespaces): a relay, a sink node, and a sender.
//!
//! ```text
//! np-testnode relay --listen 0.0.0.0:7443          prints "relay <NodeId>", serves until killed
//! np-testnode sink --relay <id>@host:port          prints "node <NodeId>", answers sha256 of input
//! np-testnode send --relay <id>@host:port <peer> <bytes>   prints "ok <bytes> <seconds>"
//! np-testnode lag --listen ADDR --to ADDR --delay-ms D --jitter-ms J
//!                                                   prints "lag <addr>", forwards UDP both ways
//! ```
//!
//! `lag` stands in for `tc netem delay` where the kernel has no netem: every datagram, each
//! way, waits D ms plus a pseudo-random 0..J ms, so packets are also reordered.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nullport_node::{Node, NodeConfig, RelayAddr};
use nullport_protocol::{Identity, NodeId};
use nullport_relay::{Admission, Relay, RelayConfig};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn usage() -> ! {
    eprintln!(
        "usage: np-testnode relay --listen ADDR | sink --relay ADDR | send --relay ADDR PEER BYTES \
         | lag --listen ADDR --to ADDR --delay-ms D --jitter-ms J"
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
            let data = nullport_tests::pattern(len, 7);
            let started = Instant::now();
            let result = async {
                let mut ch = node.dial(peer, "sink").await.map_err(|e| e.to_string())?;
                ch.write_all(&data).await.map_err(|e| e.to_string())?;
                ch.shutdown().await.map_err(|e| e.to_string())?;
                let mut digest = Vec::new();
                ch.read_to_end(&mut digest)
                    .await
                    .map_err(|e| e.to_string())?;
                if digest != Sha256::digest(&data).to_vec() {
                    return Err("digest mismatch".to_owned());
                }
                Ok::<_, String>(())
            }
            .await;
            match result {
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
        _ => usage(),
    }
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
