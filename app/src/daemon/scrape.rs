//! The metrics listener (`nullport up --metrics 127.0.0.1:PORT`): loopback only, one
//! request per connection, the Prometheus text of [`crate::metrics::NodeMetrics`] and the
//! daemon's gauges.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::daemon::{DaemonError, State};
use crate::metrics::Gauges;

/// Binds the listener; a non-loopback address is refused (metrics say who talks to whom).
pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener, DaemonError> {
    if !addr.ip().is_loopback() {
        return Err(DaemonError::MetricsNotLoopback(addr));
    }
    TcpListener::bind(addr)
        .await
        .map_err(|error| DaemonError::Metrics { addr, error })
}

/// Serves scrapes until the task is aborted (at shutdown).
pub(crate) async fn serve(state: Arc<State>, listener: TcpListener) {
    let mut scrapes = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = scrapes.join_next() => continue,
        };
        let mut stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: wait a moment instead of spinning.
                tracing::debug!("metrics listener: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = state.clone();
        scrapes.spawn(async move {
            let mut buf = [0u8; 1024];
            let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
            let n = match read {
                Ok(Ok(n)) if n > 0 => n,
                _ => return,
            };
            if !nullport_relay::metrics::host_is_local(&buf[..n]) {
                let _ = stream
                    .write_all(b"HTTP/1.1 421 Misdirected Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
                return;
            }
            let ((open_in, open_out), (bytes_in, bytes_out)) = state.channels.totals();
            let body = state.metrics.render(Gauges {
                link_up: state.node.state().is_online(),
                open_in,
                open_out,
                bytes_in,
                bytes_out,
            });
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let write = async {
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            };
            let _ = tokio::time::timeout(Duration::from_secs(10), write).await;
        });
    }
}
