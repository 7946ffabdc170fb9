//! A small test program built on the libraries, for tests that need nullport in separate
//! processes (network namespaces): a relay, a sink node, and a sender.
//!
//! ```text
//! np-testnode relay --listen 0.0.0.0:7443          prints "relay <NodeId>", serves until killed
//! np-testnode sink --relay <id>@host:port          prints "node <NodeId>", answers sha256 of input
//! np-testnode send --relay <id>@host:port <peer> <bytes>   prints "ok <bytes> <seconds>"
//! ```

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
        "usage: np-testnode relay --listen ADDR | sink --relay ADDR | send --relay ADDR PEER BYTES"
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
    let identity = Arc::new(Identity::generate().unwrap_or_else(|_| usage()));
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
        _ => usage(),
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
