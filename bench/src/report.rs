//! Results: one record per path, printed as Markdown tables (absolute figures, then
//! nullport's ratio to every other path, then the targets) and saved as JSON.

use serde::{Deserialize, Serialize};

/// p50 / p99 / p99.9 of a sample, in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Samples taken.
    pub samples: usize,
}

impl Percentiles {
    /// Of `sample` (sorted here).
    pub fn of(mut sample: Vec<f64>) -> Percentiles {
        if sample.is_empty() {
            return Percentiles::default();
        }
        sample.sort_by(f64::total_cmp);
        let at = |q: f64| sample[((sample.len() as f64 * q) as usize).min(sample.len() - 1)];
        Percentiles {
            p50: at(0.5),
            p99: at(0.99),
            p999: at(0.999),
            samples: sample.len(),
        }
    }
}

/// Everything measured on one path.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PathResult {
    /// Path name.
    pub name: String,
    /// What security it gives.
    pub security: String,
    /// One stream, client to server, Gbit/s.
    pub bulk1_up_gbps: f64,
    /// One stream, server to client.
    pub bulk1_down_gbps: f64,
    /// Eight parallel streams, client to server.
    pub bulk8_up_gbps: f64,
    /// Eight parallel streams, server to client.
    pub bulk8_down_gbps: f64,
    /// CPU seconds the relaying process spent per GiB it carried (bulk runs).
    pub relay_cpu_s_per_gib: Option<f64>,
    /// 64-byte request/response round trips, microseconds.
    pub rtt64_us: Percentiles,
    /// Context switches per 64-byte round trip, over every thread of every process of the
    /// path (client, relay, server), from `/proc/PID/task/*/status`.
    #[serde(default)]
    pub rtt64_switches: Option<f64>,
    /// 16 KiB request/response round trips, microseconds.
    pub rtt16k_us: Percentiles,
    /// New stream/channel to its first echoed byte, microseconds.
    pub setup_us: Percentiles,
    /// New streams/channels (each to its first echo) per second, 8 at a time.
    pub channels_per_s: f64,
}

/// One row of the tables: its label, which way is better, and its figure in a result.
pub(crate) struct Metric {
    pub(crate) label: &'static str,
    pub(crate) higher_is_better: bool,
    pub(crate) get: fn(&PathResult) -> Option<f64>,
}

impl Metric {
    /// Which way is better, as the tables' "better" column says it.
    pub(crate) fn better(&self) -> &'static str {
        if self.higher_is_better {
            "higher"
        } else {
            "lower"
        }
    }
}

/// The rows, in table order.
pub(crate) const METRICS: &[Metric] = &[
    Metric {
        label: "bulk 1 stream up, Gbit/s",
        higher_is_better: true,
        get: |r| Some(r.bulk1_up_gbps),
    },
    Metric {
        label: "bulk 1 stream down, Gbit/s",
        higher_is_better: true,
        get: |r| Some(r.bulk1_down_gbps),
    },
    Metric {
        label: "bulk 8 streams up, Gbit/s",
        higher_is_better: true,
        get: |r| Some(r.bulk8_up_gbps),
    },
    Metric {
        label: "bulk 8 streams down, Gbit/s",
        higher_is_better: true,
        get: |r| Some(r.bulk8_down_gbps),
    },
    Metric {
        label: "relay CPU s/GiB",
        higher_is_better: false,
        get: |r| r.relay_cpu_s_per_gib,
    },
    Metric {
        label: "64 B RTT p50, us",
        higher_is_better: false,
        get: |r| Some(r.rtt64_us.p50),
    },
    Metric {
        label: "64 B RTT p99, us",
        higher_is_better: false,
        get: |r| Some(r.rtt64_us.p99),
    },
    Metric {
        label: "64 B RTT p99.9, us",
        higher_is_better: false,
        get: |r| Some(r.rtt64_us.p999),
    },
    Metric {
        label: "context switches per 64 B round trip",
        higher_is_better: false,
        get: |r| r.rtt64_switches,
    },
    Metric {
        label: "16 KiB RTT p50, us",
        higher_is_better: false,
        get: |r| Some(r.rtt16k_us.p50),
    },
    Metric {
        label: "16 KiB RTT p99, us",
        higher_is_better: false,
        get: |r| Some(r.rtt16k_us.p99),
    },
    Metric {
        label: "16 KiB RTT p99.9, us",
        higher_is_better: false,
        get: |r| Some(r.rtt16k_us.p999),
    },
    Metric {
        label: "new channel to first echo p50, us",
        higher_is_better: false,
        get: |r| Some(r.setup_us.p50),
    },
    Metric {
        label: "new channel to first echo p99, us",
        higher_is_better: false,
        get: |r| Some(r.setup_us.p99),
    },
    Metric {
        label: "new channels/s (8 at a time)",
        higher_is_better: true,
        get: |r| Some(r.channels_per_s),
    },
];

/// A figure with three significant digits or so (`-` for none).
pub fn fmt(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

/// The Markdown report.
pub fn markdown(results: &[PathResult], header: &str) -> String {
    let mut out = format!("{header}\n\n| path | security |\n| --- | --- |\n");
    for r in results {
        out.push_str(&format!("| {} | {} |\n", r.name, r.security));
    }
    out.push_str("\n| metric |");
    for r in results {
        out.push_str(&format!(" {} |", r.name));
    }
    out.push_str("\n| --- |");
    out.push_str(&" ---: |".repeat(results.len()));
    out.push('\n');
    for m in METRICS {
        out.push_str(&format!("| {} |", m.label));
        for r in results {
            out.push_str(&format!(" {} |", fmt((m.get)(r))));
        }
        out.push('\n');
    }
    if let Some(np) = results.iter().find(|r| r.name == "nullport") {
        let others: Vec<&PathResult> = results.iter().filter(|r| r.name != "nullport").collect();
        out.push_str("\nnullport as a multiple of each path (same run; > 1 means nullport is higher):\n\n| metric | better |");
        for o in &others {
            out.push_str(&format!(" vs {} |", o.name));
        }
        out.push_str("\n| --- | --- |");
        out.push_str(&" ---: |".repeat(others.len()));
        out.push('\n');
        for m in METRICS {
            out.push_str(&format!("| {} | {} |", m.label, m.better()));
            for o in &others {
                let ratio = match ((m.get)(np), (m.get)(o)) {
                    (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
                    _ => "-".into(),
                };
                out.push_str(&format!(" {ratio} |"));
            }
            out.push('\n');
        }
        out.push_str(&targets(np, results));
    }
    out
}

fn targets(np: &PathResult, results: &[PathResult]) -> String {
    let splice = results.iter().find(|r| r.name == "bare quinn splice");
    let mut rows: Vec<(String, bool)> = Vec::new();
    if let Some(q) = splice {
        let bulk = np.bulk1_up_gbps / q.bulk1_up_gbps;
        rows.push((
            format!("bulk >= 0.85x bare quinn splice: {bulk:.2}x"),
            bulk >= 0.85,
        ));
        let rtt = np.rtt64_us.p50 / q.rtt64_us.p50;
        rows.push((
            format!("64 B RTT p50 <= 1.15x bare quinn splice: {rtt:.2}x"),
            rtt <= 1.15,
        ));
        if let (Some(a), Some(b)) = (np.relay_cpu_s_per_gib, q.relay_cpu_s_per_gib) {
            rows.push((
                format!("relay CPU/GiB <= 1.1x bare quinn splice: {:.2}x", a / b),
                a / b <= 1.1,
            ));
        }
    }
    rows.push((
        format!("64 B RTT p99 < 250 us: {:.0} us", np.rtt64_us.p99),
        np.rtt64_us.p99 < 250.0,
    ));
    rows.push((
        format!(
            "new channel to first echo p50 < 600 us: {:.0} us",
            np.setup_us.p50
        ),
        np.setup_us.p50 < 600.0,
    ));
    rows.push((
        format!(">= 5,000 new channels/s: {:.0}", np.channels_per_s),
        np.channels_per_s >= 5000.0,
    ));
    let mut out = String::from("\nTargets (issue 8):\n\n");
    for (text, met) in rows {
        out.push_str(&format!("- [{}] {text}\n", if met { "x" } else { " " }));
    }
    out
}
