//! Cross-crate integration tests for nullport (test-only crate): the [`TestNet`] harness
//! that runs a real relay and real nodes (real QUIC on loopback, ephemeral ports) in-process.
#![forbid(unsafe_code)]
// A test-only crate: its harness reports failures by panicking.
#![allow(clippy::unwrap_used)]

pub mod etcd;
pub mod fleet;
pub mod fuzz;
pub mod netns;
pub mod skip;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use nullport_node::{Node, NodeConfig, NodeLimits, RelayAddr};
use nullport_protocol::{Identity, NodeId};
use nullport_relay::testing::TestHooks;
use nullport_relay::{Admission, Relay, RelayConfig, RelayLimits};

/// A relay and its configuration knobs, for one test.
pub struct TestNet {
    /// The running relay (drop it to kill it).
    pub relay: Option<Relay>,
    /// The relay's identity.
    pub relay_identity: Arc<Identity>,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// How to start a test relay.
#[derive(Default)]
pub struct RelayOptions {
    /// Allowlist (None: open).
    pub allow: Option<Vec<NodeId>>,
    /// Limits (None: defaults).
    pub limits: Option<RelayLimits>,
    /// Test hooks.
    pub hooks: TestHooks,
    /// Listen address (None: 127.0.0.1:0).
    pub listen: Option<SocketAddr>,
    /// State directory (witnessed checkpoints).
    pub state_dir: Option<std::path::PathBuf>,
    /// Let unknown keys connect to enroll with an invite.
    pub enroll: bool,
    /// The state store (None: the state directory's files).
    pub store: Option<nullport_relay::store::StoreSpec>,
}

impl TestNet {
    /// Starts an open relay with default limits on an ephemeral loopback port.
    pub async fn start() -> TestNet {
        Self::start_with(RelayOptions::default()).await
    }

    /// Starts a relay with options.
    pub async fn start_with(options: RelayOptions) -> TestNet {
        let identity = Arc::new(Identity::generate().unwrap());
        let relay = start_relay(&identity, options).await;
        TestNet {
            addr: relay.local_addr(),
            relay: Some(relay),
            relay_identity: identity,
        }
    }

    /// Kills the relay and starts a new one with the same identity and port.
    pub async fn restart(&mut self, options: RelayOptions) {
        if let Some(relay) = self.relay.take() {
            relay.shutdown().await;
        }
        let options = RelayOptions {
            listen: Some(self.addr),
            ..options
        };
        self.relay = Some(start_relay(&self.relay_identity, options).await);
    }

    /// The relay address nodes use.
    pub fn relay_addr(&self) -> RelayAddr {
        format!("{}@{}", self.relay_identity.node_id(), self.addr)
            .parse()
            .unwrap()
    }

    /// The running relay.
    pub fn relay(&self) -> &Relay {
        self.relay
            .as_ref()
            .unwrap_or_else(|| panic!("relay not running"))
    }

    /// Starts a node with a fresh identity and waits until it is online.
    pub async fn node(&self) -> Node {
        let node = self
            .node_unchecked(Arc::new(Identity::generate().unwrap()), fast_limits())
            .await;
        node.wait_online(Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("node not online: {e}"));
        node
    }

    /// Starts a node without waiting for it to come online.
    pub async fn node_unchecked(&self, identity: Arc<Identity>, limits: NodeLimits) -> Node {
        let mut config = NodeConfig::new(identity, self.relay_addr());
        config.limits = limits;
        Node::start(config)
            .await
            .unwrap_or_else(|e| panic!("node start: {e}"))
    }
}

/// Node limits with a quick reconnect, for tests.
pub fn fast_limits() -> NodeLimits {
    NodeLimits {
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        ..NodeLimits::default()
    }
}

async fn start_relay(identity: &Arc<Identity>, options: RelayOptions) -> Relay {
    let admission = match options.allow {
        Some(ids) => Admission::fixed(ids),
        None => Admission::open(),
    };
    admission.set_enrolling(options.enroll);
    let listen = options
        .listen
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    let mut config = RelayConfig::new(identity.clone(), listen, Arc::new(admission));
    if let Some(limits) = options.limits {
        config.limits = limits;
    }
    config.testing = options.hooks;
    config.state_dir = options.state_dir;
    config.store = options.store.unwrap_or_default();
    // A restarted relay reuses its port; the old socket may take a moment to be released.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let attempt = RelayConfig {
            identity: config.identity.clone(),
            listen: config.listen,
            admission: config.admission.clone(),
            limits: config.limits.clone(),
            state_dir: config.state_dir.clone(),
            store: config.store.clone(),
            testing: config.testing.clone(),
        };
        match Relay::bind(attempt).await {
            Ok(relay) => return relay,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("relay bind: {e}"),
        }
    }
}

/// Deterministic pseudo-random bytes (xorshift), to fill transfers.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Installs a tracing subscriber honouring `RUST_LOG` (once).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Accepts every incoming channel on `node` and answers each with the SHA-256 of all it read
/// (after the caller's close frame). Runs until the node shuts down.
pub async fn sink(node: &Node) {
    use sha2::{Digest, Sha256};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    while let Some(incoming) = node.accept().await {
        tokio::spawn(async move {
            let Ok(mut ch) = incoming.accept().await else {
                return;
            };
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = ch.read(&mut buf).await {
                if n == 0 {
                    let _ = ch.write_all(&hasher.finalize()).await;
                    let _ = ch.shutdown().await;
                    return;
                }
                hasher.update(&buf[..n]);
            }
        });
    }
}

/// Sends `data` on a new channel to the [`sink`] service of `to`, checks the SHA-256 it
/// answers, and returns how long it all took. Panics on any error or a wrong digest.
pub async fn send_to_sink(node: &Node, to: NodeId, data: &[u8]) -> Duration {
    use sha2::{Digest, Sha256};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = std::time::Instant::now();
    let mut ch = node
        .dial(to, "sink")
        .await
        .unwrap_or_else(|e| panic!("dial: {e}"));
    ch.write_all(data).await.unwrap();
    ch.shutdown().await.unwrap();
    let mut digest = Vec::new();
    ch.read_to_end(&mut digest).await.unwrap();
    assert_eq!(
        digest,
        Sha256::digest(data).to_vec(),
        "the sink saw other bytes"
    );
    started.elapsed()
}

/// A raw relay-link client: completes TLS with a valid key, then does what the test says.
pub async fn raw_connect(
    net: &TestNet,
    bind: SocketAddr,
) -> Result<(quinn::Endpoint, quinn::Connection, Identity), String> {
    let identity = Identity::generate().map_err(|e| e.to_string())?;
    let crypto =
        nullport_node::tls::client_crypto(&identity, net.relay_identity.node_id(), Arc::default())
            .map_err(|e| e.to_string())?;
    let endpoint = quinn::Endpoint::client(bind).map_err(|e| e.to_string())?;
    let connecting = endpoint
        .connect_with(
            quinn::ClientConfig::new(Arc::new(crypto)),
            net.addr,
            "nullport-relay",
        )
        .map_err(|e| e.to_string())?;
    let conn = connecting.await.map_err(|e| e.to_string())?;
    Ok((endpoint, conn, identity))
}

/// Says `Hello` on a new control stream and checks the relay answers `Welcome`.
pub async fn raw_hello(conn: &quinn::Connection) -> (quinn::SendStream, quinn::RecvStream) {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let mut buf = Vec::new();
    nullport_protocol::relay_link::encode(
        &nullport_protocol::relay_link::NodeToRelay::Hello {
            version: nullport_protocol::relay_link::LINK_VERSION,
        },
        nullport_protocol::relay_link::MAX_LINK_MESSAGE,
        &mut buf,
    )
    .unwrap();
    send.write_all(&buf).await.unwrap();
    assert!(matches!(
        read_relay_answer(&mut recv).await,
        Ok(nullport_protocol::relay_link::RelayToNode::Welcome { .. })
    ));
    (send, recv)
}

/// Reads one relay-link message (`len || postcard`) from the relay on a raw stream.
pub async fn read_relay_answer(
    recv: &mut quinn::RecvStream,
) -> Result<
    nullport_protocol::relay_link::RelayToNode,
    nullport_protocol::relay_link::LinkDecodeError,
> {
    let mut prefix = [0u8; 4];
    recv.read_exact(&mut prefix).await.unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(prefix) as usize];
    recv.read_exact(&mut body).await.unwrap();
    nullport_protocol::relay_link::decode(&body)
}

/// Echoes every byte of every channel `node` accepts, until the node shuts down (a channel
/// ends when the caller closes it, with a close of its own).
pub fn serve_echo(node: Arc<Node>) -> tokio::task::JoinHandle<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tokio::spawn(async move {
        while let Some(incoming) = node.accept().await {
            tokio::spawn(async move {
                let Ok(mut ch) = incoming.accept().await else {
                    return;
                };
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match ch.read(&mut buf).await {
                        Ok(0) => {
                            let _ = ch.shutdown().await;
                            return;
                        }
                        Ok(n) => {
                            if ch.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                        Err(_) => return,
                    }
                }
            });
        }
    })
}

/// Writes `payload` on `ch`, closes its sending side and reads everything back: what came
/// back, and the error that ended it (none: a clean close).
pub async fn exchange(
    ch: &mut nullport_node::Channel,
    payload: &[u8],
) -> (Vec<u8>, Option<std::io::Error>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut got = Vec::new();
    let r = async {
        ch.write_all(payload).await?;
        ch.shutdown().await?;
        ch.read_to_end(&mut got).await
    }
    .await;
    (got, r.err())
}
