//! Counters, and a Prometheus text endpoint on a separate (loopback by default) listener.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// The relay's counters. Values only ever describe counts and sizes, never payload.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Nodes connected and admitted now.
    pub nodes_online: AtomicU64,
    /// Connections in handshake or admission now.
    pub pending: AtomicU64,
    /// Admissions completed.
    pub admitted: AtomicU64,
    /// Connections refused before admission (limits, deadline, TLS failure).
    pub admission_refused: AtomicU64,
    /// Connections closed because a newer one with the same NodeId arrived.
    pub superseded: AtomicU64,
    /// Dials spliced.
    pub dials_ok: AtomicU64,
    /// Dials refused: target offline.
    pub dials_offline: AtomicU64,
    /// Dials refused: rate limited.
    pub dials_rate_limited: AtomicU64,
    /// Dials refused: malformed or oversize request, or refused by policy.
    pub dials_bad_request: AtomicU64,
    /// Bytes spliced (both directions).
    pub bytes_spliced: AtomicU64,
    /// Splices open now.
    pub splices_open: AtomicU64,
}

impl Metrics {
    /// Prometheus text exposition (version 0.0.4).
    pub fn render(&self, tls_refusals: u64) -> String {
        let mut out = String::new();
        let g = |v: &AtomicU64| v.load(Ordering::Relaxed);
        let mut metric = |name: &str, kind: &str, help: &str, lines: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in lines {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        metric(
            "nullport_relay_nodes_online",
            "gauge",
            "Admitted nodes connected now.",
            &[("", g(&self.nodes_online))],
        );
        metric(
            "nullport_relay_pending_connections",
            "gauge",
            "Connections in handshake or admission.",
            &[("", g(&self.pending))],
        );
        metric(
            "nullport_relay_admissions_total",
            "counter",
            "Nodes admitted.",
            &[("", g(&self.admitted))],
        );
        metric(
            "nullport_relay_admission_refusals_total",
            "counter",
            "Connections refused before admission, by reason.",
            &[
                ("{reason=\"not_admitted\"}", tls_refusals),
                (
                    "{reason=\"limit_or_deadline_or_tls\"}",
                    g(&self.admission_refused),
                ),
            ],
        );
        metric(
            "nullport_relay_superseded_total",
            "counter",
            "Connections replaced by a newer one with the same NodeId.",
            &[("", g(&self.superseded))],
        );
        metric(
            "nullport_relay_dials_total",
            "counter",
            "Dials by outcome.",
            &[
                ("{result=\"ok\"}", g(&self.dials_ok)),
                ("{result=\"offline\"}", g(&self.dials_offline)),
                ("{result=\"rate_limited\"}", g(&self.dials_rate_limited)),
                ("{result=\"bad_request\"}", g(&self.dials_bad_request)),
            ],
        );
        metric(
            "nullport_relay_spliced_bytes_total",
            "counter",
            "Bytes forwarded between nodes.",
            &[("", g(&self.bytes_spliced))],
        );
        metric(
            "nullport_relay_splices_open",
            "gauge",
            "Spliced sessions open now.",
            &[("", g(&self.splices_open))],
        );
        out
    }
}

/// Serves `GET /metrics` (any path, in fact) until the listener task is aborted.
pub(crate) async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    admission: Arc<crate::admission::Admission>,
) {
    // Each scrape's task belongs to this set, and stops with the listener task.
    let mut scrapes = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = scrapes.join_next() => continue,
        };
        let Ok((mut stream, _)) = accepted else {
            continue;
        };
        let metrics = metrics.clone();
        let admission = admission.clone();
        scrapes.spawn(async move {
            let mut buf = [0u8; 1024];
            let read =
                tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut buf))
                    .await;
            if !matches!(read, Ok(Ok(n)) if n > 0) {
                return;
            }
            let body = metrics.render(admission.refusals());
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// Binds the metrics listener.
pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener, crate::Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|error| crate::Error::Io {
            what: format!("binding metrics listener {addr}"),
            error,
        })
}
