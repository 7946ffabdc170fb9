//! The local iroh-relay server process, relay-only iroh endpoints, and the `iroh` path
//! (the library: a bench server process, the opener in this process).

use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use iroh::endpoint::{Connection, QuicTransportConfig, VarInt, presets};
use iroh::{Endpoint, EndpointAddr, EndpointId, RelayConfig, RelayMap, RelayMode, RelayUrl};
use iroh_relay::server::{self as relay_server, Server, ServerConfig};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use crate::paths::Path;
use crate::procs::Proc;
use crate::workload::{self, Opener, Stream};

/// The ALPN of the bench protocol over iroh.
pub const ALPN: &[u8] = b"np-bench/iroh/0";

/// How long an endpoint may take to reach its home relay.
const ONLINE: Duration = Duration::from_secs(15);

/// The same windows and stream limit as the quinn splice and nullport's link (4 MiB per
/// stream, 16 MiB per connection, 256 bidirectional streams).
fn transport() -> QuicTransportConfig {
    QuicTransportConfig::builder()
        .max_concurrent_bidi_streams(VarInt::from_u32(256))
        .stream_receive_window(VarInt::from_u32(4 << 20))
        .receive_window(VarInt::from_u32(16 << 20))
        .send_window(16 << 20)
        .build()
}

/// A relay-only endpoint: the local relay is its only relay, and it has no IP transport
/// (no UDP socket), so it can reach a peer through the relay and no other way.
pub async fn endpoint(relay: &RelayUrl, accept: bool) -> Result<Endpoint> {
    let map = RelayMap::from(RelayConfig::new(relay.clone(), None));
    // `Minimal`: only a crypto provider (ring); no address lookup, no relay of n0's.
    let mut builder = Endpoint::builder(presets::Minimal)
        .relay_mode(RelayMode::Custom(map))
        .clear_ip_transports()
        .transport_config(transport());
    if accept {
        builder = builder.alpns(vec![ALPN.to_vec()]);
    }
    let ep = builder
        .bind()
        .await
        .map_err(|e| anyhow::anyhow!("binding an iroh endpoint: {e:?}"))?;
    tokio::time::timeout(ONLINE, ep.online())
        .await
        .context("the iroh endpoint never reached its relay")?;
    Ok(ep)
}

/// Connects to `peer` through `relay` (its only address).
pub async fn connect(ep: &Endpoint, relay: &RelayUrl, peer: EndpointId) -> Result<Connection> {
    let addr = EndpointAddr::new(peer).with_relay_url(relay.clone());
    Ok(ep.connect(addr, ALPN).await?)
}

/// Fails unless every open path of `conn` goes through a relay (and there is one).
pub fn relay_only(conn: &Connection) -> io::Result<()> {
    let paths = conn.paths();
    if paths.is_empty() || paths.iter().any(|p| !p.is_relay()) {
        let all: Vec<String> = paths
            .iter()
            .map(|p| format!("{:?}", p.remote_addr()))
            .collect();
        return Err(io::Error::other(format!(
            "iroh connection is not relay-only: paths {all:?}"
        )));
    }
    Ok(())
}

/// Starts an iroh-relay server on loopback, plain HTTP (the client speaks `ws://` to an
/// `http://` relay URL), no QUIC address discovery, no rate limits.
pub async fn spawn_relay() -> Result<(Server, RelayUrl)> {
    let mut config = ServerConfig::default();
    config.relay = Some(relay_server::RelayConfig::new((Ipv4Addr::LOCALHOST, 0)));
    let server = Server::spawn(config).await?;
    let addr = server
        .http_addr()
        .context("the relay has no HTTP address")?;
    let url: RelayUrl = format!("http://{addr}").parse()?;
    Ok((server, url))
}

/// Role `iroh relay`: prints `iroh-relay URL STATS_ADDR`; a connection to STATS_ADDR gets
/// `RECEIVED SENT`, the datagram bytes the relay has carried from and to clients.
pub async fn relay() -> Result<()> {
    let (server, url) = spawn_relay().await?;
    let stats = TcpListener::bind("127.0.0.1:0").await?;
    crate::say(&format!("iroh-relay {url} {}", stats.local_addr()?));
    let metrics = server.metrics().server.clone();
    loop {
        let (mut s, _) = stats.accept().await?;
        let line = format!(
            "{} {}\n",
            metrics.bytes_recv.get(),
            metrics.bytes_sent.get()
        );
        let _ = s.write_all(line.as_bytes()).await;
    }
}

/// The relay's byte counters (received from clients, sent to clients), read from its
/// stats address.
pub fn relay_bytes(stats: SocketAddr) -> Result<(u64, u64)> {
    let mut s = std::net::TcpStream::connect_timeout(&stats, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let mut words = text.split_whitespace().map(str::parse::<u64>);
    match (words.next(), words.next()) {
        (Some(Ok(r)), Some(Ok(s))) => Ok((r, s)),
        _ => bail!("unexpected relay stats {text:?}"),
    }
}

/// Reports, when the path is dropped, how many bytes crossed the relay while it ran.
pub struct RelayWitness {
    /// The relay's stats address.
    pub stats: SocketAddr,
    /// Its counters when the path started.
    pub at_start: (u64, u64),
}

impl Drop for RelayWitness {
    fn drop(&mut self) {
        match relay_bytes(self.stats) {
            Ok((r, s)) => eprintln!(
                "iroh relay carried {:.2} GiB in, {:.2} GiB out while the path ran",
                r.saturating_sub(self.at_start.0) as f64 / f64::from(1u32 << 30),
                s.saturating_sub(self.at_start.1) as f64 / f64::from(1u32 << 30),
            ),
            Err(e) => eprintln!("iroh relay stats unavailable: {e:#}"),
        }
    }
}

/// Role `iroh serve URL`: the bench server as an iroh endpoint behind the relay; prints
/// `iroh-serve ENDPOINT_ID` and serves every bi-stream of every connection.
pub async fn serve(relay: &str) -> Result<()> {
    let url: RelayUrl = relay.parse()?;
    let ep = endpoint(&url, true).await?;
    crate::say(&format!("iroh-serve {}", ep.id()));
    while let Some(incoming) = ep.accept().await {
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            while let Ok((send, recv)) = conn.accept_bi().await {
                tokio::spawn(workload::serve(tokio::io::join(recv, send)));
            }
        });
    }
    Ok(())
}

/// Each new stream is a bi-stream on one iroh connection (checked relay-only first).
struct IrohOpener(Connection);

impl Opener for IrohOpener {
    fn open(&self) -> Pin<Box<dyn std::future::Future<Output = io::Result<Stream>> + Send + '_>> {
        Box::pin(async move {
            relay_only(&self.0)?;
            let (send, recv) = self.0.open_bi().await.map_err(io::Error::other)?;
            Ok(Box::pin(tokio::io::join(recv, send)) as Stream)
        })
    }
}

/// Starts the relay process; its URL and stats address.
pub fn relay_process() -> Result<(Proc, RelayUrl, SocketAddr)> {
    let relay = Proc::role(&["iroh", "relay"])?;
    let url: RelayUrl = relay.word(1)?.parse()?;
    let stats: SocketAddr = relay.word(2)?.parse()?;
    Ok((relay, url, stats))
}

/// Time from dialing a new iroh connection (an endpoint that already reached its relay)
/// to the first echoed byte, `count` times; microseconds.
async fn new_connection_times(
    ep: &Endpoint,
    url: &RelayUrl,
    peer: EndpointId,
    count: usize,
) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        let conn = connect(ep, url, peer).await?;
        let (mut send, mut recv) = conn.open_bi().await?;
        send.write_all(b"E!").await?;
        let mut b = [0u8; 1];
        recv.read_exact(&mut b).await?;
        out.push(started.elapsed().as_secs_f64() * 1e6);
        relay_only(&conn)?;
        conn.close(0u32.into(), b"done");
    }
    Ok(out)
}

/// Starts the relay and the server as processes; the client endpoint lives here.
pub async fn start() -> Result<Path> {
    let (relay, url, stats) = relay_process()?;
    let server = Proc::role(&["iroh", "serve", url.as_str()])?;
    let peer: EndpointId = server.word(1)?.parse()?;
    let ep = endpoint(&url, false).await?;
    // Not in the table (setup there is a new stream, as for the quinn splice): what a new
    // connection to the first echoed byte costs.
    let mut times = new_connection_times(&ep, &url, peer, 50).await?;
    times.sort_by(f64::total_cmp);
    eprintln!(
        "iroh new connection to first echo: p50 {:.0} us, p99 {:.0} us ({} samples)",
        times[times.len() / 2],
        times[times.len() * 99 / 100],
        times.len()
    );
    let conn = connect(&ep, &url, peer).await?;
    relay_only(&conn)?;
    let witness = RelayWitness {
        stats,
        at_start: relay_bytes(stats)?,
    };
    Ok(Path {
        name: "iroh (relay only)",
        security: "end to end (QUIC TLS 1.3 between endpoints); relay sees ciphertext",
        opener: Arc::new(IrohOpener(conn)),
        relay_pid: Some(relay.pid()),
        _procs: Vec::new(),
        // In this order: the witness reads the relay's counters before it is killed.
        _keep: vec![
            Box::new(witness),
            Box::new(ep),
            Box::new(server),
            Box::new(relay),
        ],
    })
}
