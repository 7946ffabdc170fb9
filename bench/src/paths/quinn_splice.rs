//! A bare quinn splice: client -> relay -> server, QUIC on both hops with the same TLS
//! (TLS 1.3, raw Ed25519 keys) and transport settings as nullport's relay link, and no
//! end-to-end layer. The ceiling of this architecture; a bench-only baseline.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use nullport_protocol::{Identity, NodeId};
use nullport_relay::Admission;

use super::Path;
use crate::procs::Proc;
use crate::workload::{self, Opener, Stream};

const CHUNK: usize = 64 * 1024;

struct QuinnOpener(quinn::Connection);

impl Opener for QuinnOpener {
    fn open(&self) -> Pin<Box<dyn std::future::Future<Output = io::Result<Stream>> + Send + '_>> {
        Box::pin(async move {
            let (send, recv) = self.0.open_bi().await?;
            Ok(Box::pin(tokio::io::join(recv, send)) as Stream)
        })
    }
}

/// The client side transport settings of a nullport node (windows, streams).
fn client_transport() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(256u32.into())
        .max_concurrent_uni_streams(0u32.into())
        .stream_receive_window((4u32 << 20).into())
        .receive_window((16u32 << 20).into())
        .send_window(16 << 20)
        .keep_alive_interval(Some(std::time::Duration::from_secs(10)));
    t
}

async fn connect(relay: &str) -> Result<quinn::Connection> {
    let (id, addr) = relay.split_once('@').context("relay as ID@ADDR")?;
    let relay_id: NodeId = id.parse()?;
    let addr: SocketAddr = addr.parse()?;
    let identity = Identity::generate()?;
    let crypto = nullport_node::tls::client_crypto(&identity, relay_id, Arc::default())?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(client_transport()));
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    let conn = endpoint.connect_with(config, addr, "relay")?.await?;
    Ok(conn)
}

fn endpoint(identity: &Identity) -> Result<quinn::Endpoint> {
    let crypto = nullport_relay::tls::server_crypto(identity, Arc::new(Admission::open()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(
        crate::paths::nullport::bench_limits().transport_config(),
    ));
    Ok(quinn::Endpoint::server(config, "127.0.0.1:0".parse()?)?)
}

async fn pump(mut from: quinn::RecvStream, mut to: quinn::SendStream) {
    loop {
        match from.read_chunk(CHUNK, true).await {
            Ok(Some(chunk)) => {
                if to.write_chunk(chunk.bytes).await.is_err() {
                    let _ = from.stop(0u32.into());
                    return;
                }
            }
            Ok(None) => {
                let _ = to.finish();
                return;
            }
            Err(_) => {
                let _ = to.reset(0u32.into());
                return;
            }
        }
    }
}

/// Role `quinn-relay`: prints `quinn-relay ID CLIENT_ADDR SERVER_ADDR`; splices every
/// stream a client opens to a new stream on the (one) server connection.
pub async fn relay() -> Result<()> {
    let identity = Identity::generate()?;
    let (clients, servers) = (endpoint(&identity)?, endpoint(&identity)?);
    crate::say(&format!(
        "quinn-relay {} {} {}",
        identity.node_id(),
        clients.local_addr()?,
        servers.local_addr()?
    ));
    let server: Arc<Mutex<Option<quinn::Connection>>> = Arc::default();
    let slot = server.clone();
    tokio::spawn(async move {
        while let Some(incoming) = servers.accept().await {
            if let Ok(conn) = incoming.await
                && let Ok(mut s) = slot.lock()
            {
                *s = Some(conn);
            }
        }
    });
    while let Some(incoming) = clients.accept().await {
        let server = server.clone();
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            while let Ok((send, recv)) = conn.accept_bi().await {
                let target = server.lock().ok().and_then(|s| s.clone());
                let Some(target) = target else {
                    continue;
                };
                tokio::spawn(async move {
                    let Ok((t_send, t_recv)) = target.open_bi().await else {
                        return;
                    };
                    tokio::join!(pump(recv, t_send), pump(t_recv, send));
                });
            }
        });
    }
    Ok(())
}

/// Role `serve-quinn`: connects to the relay's server side and serves every stream.
pub async fn serve(relay: &str) -> Result<()> {
    let conn = connect(relay).await?;
    crate::say("ready");
    while let Ok((send, recv)) = conn.accept_bi().await {
        tokio::spawn(workload::serve(tokio::io::join(recv, send)));
    }
    Ok(())
}

/// Starts the splice relay and the server as processes; the client lives here.
pub async fn start() -> Result<Path> {
    let relay = Proc::role(&["quinn-relay"])?;
    let id = relay.word(1)?.to_owned();
    let server = Proc::role(&[
        "serve-quinn",
        "--relay",
        &format!("{id}@{}", relay.word(3)?),
    ])?;
    if server.line != "ready" {
        bail!("quinn server said {:?}", server.line);
    }
    let conn = connect(&format!("{id}@{}", relay.word(2)?)).await?;
    Ok(Path {
        name: "bare quinn splice",
        security: "hop by hop TLS only; the relay sees plaintext",
        opener: Arc::new(QuinnOpener(conn)),
        relay_pid: Some(relay.pid()),
        _procs: vec![relay, server],
        _keep: Vec::new(),
    })
}
