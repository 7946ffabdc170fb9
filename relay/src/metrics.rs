//! Counters, and a Prometheus text endpoint on a separate (loopback by default) listener.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::nodes::{MAX_NODE_SERIES, NodeStats};

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
    /// Version of the fleet's relay map this relay hands out (0: none, a lone relay).
    pub map_version: AtomicU64,
    /// Drains announced to the nodes (a planned stop: `RelayHandle::announce_drain`).
    pub drains_announced: AtomicU64,
    /// Operations the shared state store (`--store etcd://`) answered.
    pub store_ok: AtomicU64,
    /// Operations it did not answer in time or refused (quorum lost, unreachable): each one a
    /// decision that failed closed.
    pub store_unavailable: AtomicU64,
    /// Sum of the answered operations' latency, in microseconds.
    pub store_micros: AtomicU64,
    /// The slowest answered operation, in microseconds.
    pub store_max_micros: AtomicU64,
}

/// A snapshot of the nodes online, for `/nodes` and the per-node series.
pub(crate) type NodesView = Arc<dyn Fn() -> Vec<NodeStats> + Send + Sync>;

impl Metrics {
    /// Prometheus text exposition (version 0.0.4).
    pub fn render(&self, tls_refusals: u64) -> String {
        self.render_with(tls_refusals, &[])
    }

    /// The exposition, with per-node series for `nodes` (at most [`MAX_NODE_SERIES`] of
    /// them are written, the busiest).
    pub(crate) fn render_with(&self, tls_refusals: u64, nodes: &[NodeStats]) -> String {
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
            "Dials by outcome (offline: the target has no link to this relay, the \"not here\" a fleet's callers answer by trying the target's next relay).",
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
        metric(
            "nullport_relay_map_version",
            "gauge",
            "Version of the fleet's relay map this relay hands out (0: not in a fleet).",
            &[("", g(&self.map_version))],
        );
        metric(
            "nullport_relay_drains_announced_total",
            "counter",
            "Planned stops announced to the nodes (they move to their next relay).",
            &[("", g(&self.drains_announced))],
        );
        metric(
            "nullport_relay_store_operations_total",
            "counter",
            "Shared state store (etcd) operations by outcome (unavailable: failed closed).",
            &[
                ("{result=\"ok\"}", g(&self.store_ok)),
                ("{result=\"unavailable\"}", g(&self.store_unavailable)),
            ],
        );
        metric(
            "nullport_relay_store_latency_micros_total",
            "counter",
            "Sum of the answered store operations' latency in microseconds (divide by the ok operations for the mean).",
            &[("", g(&self.store_micros))],
        );
        metric(
            "nullport_relay_store_latency_max_micros",
            "gauge",
            "The slowest answered store operation so far, in microseconds.",
            &[("", g(&self.store_max_micros))],
        );
        let build = format!(
            "{{version=\"{}\",relay_link=\"{}\"}}",
            env!("CARGO_PKG_VERSION"),
            nullport_protocol::relay_link::LINK_VERSION
        );
        metric(
            "nullport_relay_build_info",
            "gauge",
            "The relay's version and relay-link protocol version.",
            &[(build.as_str(), 1)],
        );
        // Only nodes that moved bytes: idle keys (on an open relay, anyone's) add no series.
        let active: Vec<NodeStats> = nodes
            .iter()
            .filter(|n| n.bytes_sent + n.bytes_received > 0)
            .cloned()
            .collect();
        let busiest = crate::nodes::busiest(active, MAX_NODE_SERIES);
        let series: Vec<(String, u64)> = busiest
            .iter()
            .flat_map(|n| {
                [
                    (
                        format!("{{node=\"{}\",direction=\"sent\"}}", n.node),
                        n.bytes_sent,
                    ),
                    (
                        format!("{{node=\"{}\",direction=\"received\"}}", n.node),
                        n.bytes_received,
                    ),
                ]
            })
            .collect();
        let lines: Vec<(&str, u64)> = series.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        metric(
            "nullport_relay_node_bytes_total",
            "counter",
            "Bytes through the relay per node online, for the busiest 50 nodes only (bounded cardinality).",
            &lines,
        );
        out
    }
}

/// Serves `GET /nodes` (JSON: the nodes online) and `GET /metrics` (any other path) until
/// the listener task is aborted.
pub(crate) async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    admission: Arc<crate::admission::Admission>,
    nodes: NodesView,
) {
    // Each scrape's task belongs to this set, and stops with the listener task.
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
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        let admission = admission.clone();
        let nodes = nodes.clone();
        scrapes.spawn(async move {
            let mut buf = [0u8; 1024];
            let read =
                tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut buf))
                    .await;
            let n = match read {
                Ok(Ok(n)) if n > 0 => n,
                _ => return,
            };
            let request = &buf[..n];
            let response = if !host_is_local(request) {
                // A name in Host means a browser was pointed here by DNS (rebinding).
                "HTTP/1.1 421 Misdirected Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned()
            } else {
                let (kind, body) = if request.starts_with(b"GET /nodes ") {
                    let mut list = nodes();
                    list.sort_by_key(|n| n.since);
                    list.truncate(MAX_NODES_LISTED);
                    (
                        "application/json",
                        serde_json::to_string(&list).unwrap_or_else(|_| "[]".into()),
                    )
                } else {
                    (
                        "text/plain; version=0.0.4",
                        metrics.render_with(admission.refusals(), &nodes()),
                    )
                };
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            };
            let write = async {
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            };
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), write).await;
        });
    }
}

/// Most nodes `/nodes` lists (the longest connected first).
pub const MAX_NODES_LISTED: usize = 10_000;

/// Whether the request's Host (if any) is an IP address or `localhost`: never a name that
/// a browser could have been pointed at.
pub fn host_is_local(request: &[u8]) -> bool {
    let text = String::from_utf8_lossy(request);
    let Some(host) = text.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("host")
            .then(|| value.trim().to_owned())
    }) else {
        return true;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => {
            return v6
                .split(']')
                .next()
                .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok());
        }
        None => host.rsplit_once(':').map_or(host.as_str(), |(h, _)| h),
    };
    name == "localhost" || name.parse::<std::net::Ipv4Addr>().is_ok()
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

#[cfg(test)]
mod tests {
    use super::host_is_local;

    #[test]
    fn only_addresses_and_localhost_pass_as_host() {
        for ok in [
            "GET / HTTP/1.1\r\nHost: 127.0.0.1:9477\r\n\r\n",
            "GET / HTTP/1.1\r\nhost: [::1]:9477\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: localhost:9477\r\n\r\n",
            "GET / HTTP/1.0\r\n\r\n",
        ] {
            assert!(host_is_local(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "GET / HTTP/1.1\r\nHost: evil.example:9477\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: 127.0.0.1.nip.io\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: [evil]:1\r\n\r\n",
        ] {
            assert!(!host_is_local(bad.as_bytes()), "{bad}");
        }
    }
}
