//! The node's own metrics, on request (`nullport up --metrics 127.0.0.1:PORT`, loopback
//! only): the relay link, channels, bytes, refusals and MCP decisions, in the Prometheus
//! text format. Counted from the audit events as they are recorded, so the metrics and the
//! audit log never tell two stories. Every label has a fixed, small set of values.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use nullport_audit::{ChannelOutcome, Event};

/// MCP firewall outcomes with their own series; anything else counts as `other`.
const MCP_OUTCOMES: [&str; 7] = [
    "allowed",
    "denied",
    "invalid",
    "approval",
    "approved",
    "not approved",
    "other",
];

/// Counters fed by the audit events.
#[derive(Debug, Default)]
pub struct NodeMetrics {
    channels: [AtomicU64; 3],
    dials: [AtomicU64; 2],
    tokens: [AtomicU64; 2],
    mcp: [AtomicU64; MCP_OUTCOMES.len()],
}

/// What the daemon knows at the moment of a scrape.
#[derive(Debug, Clone, Copy)]
pub struct Gauges {
    /// 1 when the relay link is up.
    pub link_up: bool,
    /// Channels open now, callee side.
    pub open_in: usize,
    /// Channels open now, caller side.
    pub open_out: usize,
    /// Bytes read from channels since start.
    pub bytes_in: u64,
    /// Bytes written to channels since start.
    pub bytes_out: u64,
}

impl NodeMetrics {
    /// Counts `event`.
    pub fn observe(&self, event: &Event) {
        let bump = |c: &AtomicU64| {
            c.fetch_add(1, Ordering::Relaxed);
        };
        match event {
            Event::Channel { outcome, .. } => bump(
                &self.channels[match outcome {
                    ChannelOutcome::Accepted => 0,
                    ChannelOutcome::Denied => 1,
                    _ => 2,
                }],
            ),
            Event::Dial { opened, .. } => bump(&self.dials[usize::from(!opened)]),
            Event::Token { accepted, .. } => bump(&self.tokens[usize::from(!accepted)]),
            Event::Mcp { outcome, .. } => {
                let i = MCP_OUTCOMES
                    .iter()
                    .position(|o| o == outcome)
                    .unwrap_or(MCP_OUTCOMES.len() - 1);
                bump(&self.mcp[i]);
            }
            _ => {}
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self, now: Gauges) -> String {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, lines: &[(String, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in lines {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        let one = |v: u64| vec![(String::new(), v)];
        metric(
            "nullport_node_link_up",
            "gauge",
            "1 when the relay link is up and admitted.",
            &one(u64::from(now.link_up)),
        );
        metric(
            "nullport_node_channels_open",
            "gauge",
            "Channels open now, by direction.",
            &[
                ("{direction=\"in\"}".into(), now.open_in as u64),
                ("{direction=\"out\"}".into(), now.open_out as u64),
            ],
        );
        metric(
            "nullport_node_channel_bytes_total",
            "counter",
            "Application bytes through channels, by direction.",
            &[
                ("{direction=\"in\"}".into(), now.bytes_in),
                ("{direction=\"out\"}".into(), now.bytes_out),
            ],
        );
        metric(
            "nullport_node_incoming_channels_total",
            "counter",
            "Incoming channels by outcome (closed: ended by this node while live).",
            &[
                ("{outcome=\"accepted\"}".into(), g(&self.channels[0])),
                ("{outcome=\"denied\"}".into(), g(&self.channels[1])),
                ("{outcome=\"closed\"}".into(), g(&self.channels[2])),
            ],
        );
        metric(
            "nullport_node_dials_total",
            "counter",
            "Channels this node opened, by result.",
            &[
                ("{result=\"ok\"}".into(), g(&self.dials[0])),
                ("{result=\"failed\"}".into(), g(&self.dials[1])),
            ],
        );
        metric(
            "nullport_node_tokens_total",
            "counter",
            "Capability tokens presented to this node, by result.",
            &[
                ("{result=\"accepted\"}".into(), g(&self.tokens[0])),
                ("{result=\"refused\"}".into(), g(&self.tokens[1])),
            ],
        );
        let mcp: Vec<(String, u64)> = MCP_OUTCOMES
            .iter()
            .zip(&self.mcp)
            .map(|(o, c)| (format!("{{outcome=\"{o}\"}}"), g(c)))
            .collect();
        metric(
            "nullport_node_mcp_decisions_total",
            "counter",
            "MCP firewall decisions, by outcome.",
            &mcp,
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nullport_protocol::Identity;

    #[test]
    fn events_are_counted_under_fixed_labels() {
        let m = NodeMetrics::default();
        let caller = Identity::from_seed([1; 32]).node_id();
        m.observe(&Event::Channel {
            caller,
            service: "web".into(),
            outcome: ChannelOutcome::Denied,
            rule: "not allowed".into(),
        });
        for outcome in ["allowed", "allowed", "something new"] {
            m.observe(&Event::Mcp {
                caller,
                service: "files".into(),
                method: "tools/call".into(),
                target: None,
                args_sha256: None,
                outcome: outcome.into(),
                reason: String::new(),
                latency_us: 1,
            });
        }
        let text = m.render(Gauges {
            link_up: true,
            open_in: 1,
            open_out: 0,
            bytes_in: 5,
            bytes_out: 7,
        });
        assert!(text.contains("nullport_node_link_up 1\n"), "{text}");
        assert!(text.contains("nullport_node_incoming_channels_total{outcome=\"denied\"} 1\n"));
        assert!(text.contains("nullport_node_mcp_decisions_total{outcome=\"allowed\"} 2\n"));
        assert!(text.contains("nullport_node_mcp_decisions_total{outcome=\"other\"} 1\n"));
        assert!(text.contains("nullport_node_channel_bytes_total{direction=\"out\"} 7\n"));
        // No label value comes from input: the caller and the new outcome are not in it.
        assert!(!text.contains(&caller.to_string()) && !text.contains("something new"));
    }
}
