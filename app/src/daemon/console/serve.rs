//! Serving the console: only to connections from this daemon's own user (the kernel says
//! which user owns the connecting socket, so another local user gets nothing, whatever
//! cookie it holds), at most [`MAX_CONNECTIONS`] at once, with a deadline for each request's
//! headers, so a local user cannot starve the daemon of file descriptors.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Connections served at once (browser tabs with their live-update streams).
pub(crate) const MAX_CONNECTIONS: usize = 32;
/// Time for a request's headers to arrive.
const HEADER_TIME: Duration = Duration::from_secs(10);

/// The uid that owns the local TCP socket `peer` connected to `local` (from
/// /proc/net/tcp), if the kernel lists it.
pub(crate) fn peer_uid(peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    let (SocketAddr::V4(peer), SocketAddr::V4(local)) = (peer, local) else {
        return None;
    };
    let hex = |a: std::net::SocketAddrV4| {
        format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(a.ip().octets()),
            a.port()
        )
    };
    let (want_local, want_remote) = (hex(peer), hex(local));
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.get(1) == Some(&want_local.as_str()) && f.get(2) == Some(&want_remote.as_str()))
            .then(|| f.get(7).and_then(|uid| uid.parse().ok()))
            .flatten()
    })
}

/// Serves `app` on `listener` until the task is aborted.
pub(crate) async fn serve(listener: TcpListener, app: axum::Router) {
    let local = match listener.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    let me = nullport_keyring::fs::euid();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!("console: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Another user's connection is closed before a byte of HTTP is read.
        if peer_uid(peer, local) != Some(me) {
            tracing::warn!(%peer, "console: refused a connection from another user");
            continue;
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "console: {MAX_CONNECTIONS} connections open, refusing another");
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        connections.spawn(async move {
            let _slot = slot;
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIME)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                tracing::debug!(%peer, "console connection ended: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_kernel_names_the_user_of_a_loopback_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local = listener.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(local).await.unwrap();
        let (_server_side, peer) = listener.accept().await.unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        assert_eq!(peer_uid(peer, local), Some(nullport_keyring::fs::euid()));
        // A socket that is not connected here is not found.
        assert_eq!(peer_uid("127.0.0.1:9".parse().unwrap(), local), None);
    }
}
