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
        .map_err(|error| DaemonError::Socket {
            path: format!("metrics listener {addr}"),
            error,
        })
}

/// Serves scrapes until the task is aborted (at shutdown).
pub(crate) async fn serve(state: Arc<State>, listener: TcpListener) {
    let mut scrapes = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = scrapes.join_next() => continue,
        };
        let Ok((mut stream, _)) = accepted else {
            continue;
        };
        let state = state.clone();
        scrapes.spawn(async move {
            let mut buf = [0u8; 1024];
            let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
            if !matches!(read, Ok(Ok(n)) if n > 0) {
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
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}
