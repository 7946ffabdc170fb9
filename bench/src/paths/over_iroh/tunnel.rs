//! iroh as a tunnel (the user path, like dumbpipe): `tunnel-in` listens for TCP on
//! loopback and carries each TCP connection as one bi-stream on its iroh connection to
//! `tunnel-out`, which connects each stream to a TCP address. The workloads then run TCP
//! through it, as over the ssh -R and rathole paths.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use iroh::endpoint::{Connection, RecvStream, SendStream};
use iroh::{Endpoint, EndpointId, RelayUrl};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use super::net::{self, RelayWitness};
use crate::paths::Path;
use crate::paths::tcp::TcpOpener;
use crate::procs::Proc;
use crate::workload::Opener;

/// Copy buffer per direction.
const BUFFER: usize = 64 * 1024;

/// Copies `from` to `to` until its end, then closes `to` for writing.
async fn copy_then_close<R, W>(from: R, to: &mut W) -> std::io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut from = BufReader::with_capacity(BUFFER, from);
    let n = tokio::io::copy_buf(&mut from, to).await?;
    to.shutdown().await?;
    Ok(n)
}

/// Carries one TCP connection over one bi-stream, both ways, each end of stream passed on
/// (a failed direction resets or stops its stream so the other side sees it).
async fn splice(tcp: TcpStream, mut send: SendStream, mut recv: RecvStream) {
    let _ = tcp.set_nodelay(true);
    let (tcp_read, mut tcp_write) = tcp.into_split();
    let up = async {
        if copy_then_close(tcp_read, &mut send).await.is_err() {
            let _ = send.reset(0u32.into());
        }
    };
    let down = async {
        let mut from = BufReader::with_capacity(BUFFER, &mut recv);
        let ok = tokio::io::copy_buf(&mut from, &mut tcp_write).await.is_ok()
            && tcp_write.shutdown().await.is_ok();
        if !ok {
            let _ = recv.stop(0u32.into());
        }
    };
    tokio::join!(up, down);
}

/// Serves `ep`'s incoming connections: each bi-stream becomes a TCP connection to `to`.
pub async fn forward_out(ep: Endpoint, to: SocketAddr) {
    while let Some(incoming) = ep.accept().await {
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            while let Ok((send, recv)) = conn.accept_bi().await {
                tokio::spawn(async move {
                    match TcpStream::connect(to).await {
                        Ok(tcp) => splice(tcp, send, recv).await,
                        Err(_) => {
                            let mut send = send;
                            let _ = send.reset(1u32.into());
                        }
                    }
                });
            }
        });
    }
}

/// Carries every TCP connection `listener` accepts as a new bi-stream on `conn` (refused
/// unless the connection is relay-only).
pub async fn forward_in(listener: TcpListener, conn: Connection) -> Result<()> {
    loop {
        let (tcp, _) = listener.accept().await?;
        let conn = conn.clone();
        tokio::spawn(async move {
            if net::relay_only(&conn).is_err() {
                return;
            }
            if let Ok((send, recv)) = conn.open_bi().await {
                splice(tcp, send, recv).await;
            }
        });
    }
}

/// Role `iroh tunnel-out URL TCP_ADDR`: prints `iroh-tunnel-out ENDPOINT_ID`.
pub async fn out(relay: &str, to: &str) -> Result<()> {
    let url: RelayUrl = relay.parse()?;
    let to: SocketAddr = to.parse()?;
    let ep = net::endpoint(&url, true).await?;
    crate::say(&format!("iroh-tunnel-out {}", ep.id()));
    forward_out(ep, to).await;
    Ok(())
}

/// Role `iroh tunnel-in URL ENDPOINT_ID`: connects to the tunnel's other end, listens on
/// loopback, prints `iroh-tunnel-in TCP_ADDR`.
pub async fn into(relay: &str, peer: &str) -> Result<()> {
    let url: RelayUrl = relay.parse()?;
    let peer: EndpointId = peer.parse()?;
    let ep = net::endpoint(&url, false).await?;
    let conn = net::connect(&ep, &url, peer).await?;
    net::relay_only(&conn)?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    crate::say(&format!("iroh-tunnel-in {}", listener.local_addr()?));
    forward_in(listener, conn).await
}

/// Starts the relay, the TCP bench server, and both ends of the tunnel as processes; the
/// client connects to the tunnel's TCP port.
pub async fn start() -> Result<Path> {
    let (relay, url, stats) = net::relay_process()?;
    let server = Proc::role(&["serve-tcp"])?;
    let exit = Proc::role(&["iroh", "tunnel-out", url.as_str(), server.word(1)?])?;
    let entry = Proc::role(&["iroh", "tunnel-in", url.as_str(), exit.word(1)?])?;
    let opener = TcpOpener(entry.word(1)?.parse()?);
    let deadline = Instant::now() + Duration::from_secs(15);
    while crate::workload::setup_times(&opener as &dyn Opener, 1)
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            bail!("the iroh tunnel never carried an echo");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let witness = RelayWitness {
        stats,
        at_start: net::relay_bytes(stats)?,
    };
    Ok(Path {
        name: "iroh tunnel (TCP over iroh, relay only)",
        security: "end to end (QUIC TLS 1.3 between the tunnel ends); relay sees ciphertext",
        opener: Arc::new(opener),
        relay_pid: Some(relay.pid()),
        _procs: Vec::new(),
        // In this order: the witness reads the relay's counters before it is killed.
        _keep: vec![
            Box::new(witness),
            Box::new(entry),
            Box::new(exit),
            Box::new(server),
            Box::new(relay),
        ],
    })
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::pattern::{self, BLOCK, Verifier};

    /// A TCP echo server on loopback that answers each connection's end of stream with
    /// its own.
    async fn echo_server() -> Result<SocketAddr> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (r, mut w) = s.into_split();
                    let _ = copy_then_close(r, &mut w).await;
                });
            }
        });
        Ok(addr)
    }

    /// 1 MiB of pattern bytes goes through the tunnel (client -> tunnel-in -> relay ->
    /// tunnel-out -> echo) and comes back intact; the client's end of stream reaches the
    /// echo server and the echo's comes back, all through one relay-only connection.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tunnel_carries_one_mebibyte_intact_both_ways() -> Result<()> {
        const LEN: u64 = 1 << 20;
        let (_relay, url) = net::spawn_relay().await?;
        let target = echo_server().await?;
        let exit = net::endpoint(&url, true).await?;
        let exit_id = exit.id();
        tokio::spawn(forward_out(exit, target));
        let entry = net::endpoint(&url, false).await?;
        let conn = net::connect(&entry, &url, exit_id).await?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?;
        tokio::spawn(forward_in(listener, conn.clone()));

        let (mut r, mut w) = TcpStream::connect(port).await?.into_split();
        let writer = tokio::spawn(async move {
            let mut block = vec![0u8; BLOCK];
            let mut sent = 0u64;
            for index in 0.. {
                if sent >= LEN {
                    break;
                }
                pattern::block(index, &mut block);
                let n = (LEN - sent).min(BLOCK as u64) as usize;
                w.write_all(&block[..n]).await?;
                sent += n as u64;
            }
            w.shutdown().await
        });
        let mut back = Vec::new();
        r.read_to_end(&mut back).await?;
        writer.await??;
        let mut v = Verifier::default();
        v.update(&back);
        assert_eq!(v.len(), LEN);
        assert!(v.intact(), "the echoed bytes differ from those sent");
        assert!(!conn.paths().is_empty());
        assert!(conn.paths().iter().all(|p| p.is_relay()));
        Ok(())
    }
}
