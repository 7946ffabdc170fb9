//! nullport: node A (this process) -> relay -> node B, three processes, real QUIC and the
//! end-to-end Noise channel.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use nullport_node::{FirstBytes, Node, NodeConfig, RelayAddr};
use nullport_protocol::{Identity, NodeId};
use nullport_relay::{Admission, Relay, RelayConfig, RelayLimits};

use super::Path;
use crate::procs::Proc;
use crate::workload::{self, Opener, Stream};

/// The bench service name.
const SERVICE: &str = "bench";

/// Opens channels from a node to one peer's bench service.
pub struct NodeOpener {
    /// The calling node (shared: one caller may open to several peers).
    pub node: Arc<Node>,
    /// The node serving the bench service.
    pub peer: NodeId,
}

impl Opener for NodeOpener {
    fn open(&self) -> Pin<Box<dyn std::future::Future<Output = io::Result<Stream>> + Send + '_>> {
        Box::pin(async move {
            let ch = self
                .node
                .dial(self.peer, SERVICE)
                .await
                .map_err(io::Error::other)?;
            Ok(Box::pin(ch) as Stream)
        })
    }

    fn open_sending<'a>(
        &'a self,
        first: &'a [u8],
    ) -> Pin<Box<dyn std::future::Future<Output = io::Result<Stream>> + Send + 'a>> {
        Box::pin(async move {
            let ch = self
                .node
                .dial_sending(
                    self.peer,
                    SERVICE,
                    Vec::new(),
                    FirstBytes::Bytes(first.to_vec()),
                )
                .await
                .map_err(io::Error::other)?;
            Ok(Box::pin(ch) as Stream)
        })
    }
}

/// The relay limits the suite runs with: defaults, except no per-identity dial rate (the
/// suite measures how many channels one relay can set up, from one caller).
pub fn bench_limits() -> RelayLimits {
    RelayLimits {
        dials_per_second: 0,
        max_pending_per_ip: 4_096,
        ..RelayLimits::default()
    }
}

/// Role `relay`: a relay on loopback; prints `relay ID ADDR`. With `map_file`, it serves
/// the relay map in that file once the file appears (`np-bench fleet`).
pub async fn relay(map_file: Option<std::path::PathBuf>) -> Result<()> {
    let identity = Arc::new(Identity::generate()?);
    let listen: SocketAddr = "127.0.0.1:0".parse()?;
    let mut config = RelayConfig::new(identity, listen, Arc::new(Admission::open()));
    config.limits = bench_limits();
    let relay = Relay::bind(config).await?;
    crate::say(&format!("relay {} {}", relay.node_id(), relay.local_addr()));
    if let Some(path) = map_file {
        serve_map_file(relay.handle(), path).await;
    }
    std::future::pending::<()>().await;
    Ok(())
}

/// Relay role option: wait for a map file at `path`, then serve it.
async fn serve_map_file(relay: nullport_relay::RelayHandle, path: std::path::PathBuf) {
    loop {
        if path.exists() {
            match nullport_relay::map_file::load(&path) {
                Ok(verified) => {
                    if let Err(e) = relay.set_relay_map(verified.signed) {
                        eprintln!("relay map refused: {e}");
                    }
                    return;
                }
                Err(e) => eprintln!("{e}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts a node with a fresh identity on the relay at `relay` (`ID@ADDR`) and waits until
/// it is online. With `NP_BENCH_RESUME_DH=1` in the environment, its resumed opens mix in a
/// fresh DH (`[link] resume_dh`), to compare both kinds of resumed open with one build.
pub async fn start_node(relay: &str) -> Result<Node> {
    let relay: RelayAddr = relay.parse().context("relay address")?;
    let mut config = NodeConfig::new(Arc::new(Identity::generate()?), relay);
    config.limits.handshake.resume_dh =
        std::env::var_os("NP_BENCH_RESUME_DH").is_some_and(|v| v == "1");
    let node = Node::start(config).await?;
    node.wait_online(Duration::from_secs(10)).await?;
    Ok(node)
}

/// Role `serve-node`: node B serving the bench service; prints `node ID`.
pub async fn serve(relay: &str) -> Result<()> {
    let node = start_node(relay).await?;
    crate::say(&format!("node {}", node.node_id()));
    while let Some(incoming) = node.accept().await {
        tokio::spawn(async move {
            if let Ok(ch) = incoming.accept().await {
                let _ = workload::serve(ch).await;
            }
        });
    }
    Ok(())
}

/// Starts the relay and node B as processes; node A lives in this process.
pub async fn start() -> Result<Path> {
    let relay = Proc::role(&["relay"])?;
    let relay_addr = format!("{}@{}", relay.word(1)?, relay.word(2)?);
    let server = Proc::role(&["serve-node", "--relay", &relay_addr])?;
    let peer: NodeId = server.word(1)?.parse()?;
    let node = start_node(&relay_addr).await?;
    Ok(Path {
        name: "nullport",
        security: "end to end (Noise XX, Ed25519 identities), relay-blind",
        opener: Arc::new(NodeOpener {
            node: Arc::new(node),
            peer,
        }),
        relay_pid: Some(relay.pid()),
        _procs: vec![relay, server],
        _keep: Vec::new(),
    })
}
