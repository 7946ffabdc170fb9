//! `np-bench run --rounds N`: every path measured N times in turn, with its figure the
//! median over the rounds and nullport's ratios taken within each round (paired).
//!
//! On a shared or virtual machine the speed of the whole machine drifts over tens of
//! seconds (other tenants, frequency). Measured one path after the other, a slow spell
//! lands on one path and not the other, and the same-run ratio moves with it: identical
//! builds gave nullport/splice channels/s anywhere in 0.53-0.89x from one run to the next
//! here. With rounds, all paths run side by side and each round measures every path once,
//! in an order reversed every round (A B, B A, ...), so drift falls on both sides of each
//! ratio alike; the spread of the per-round ratios says how far one figure can be trusted.

use crate::report::{self, METRICS, PathResult, Percentiles};

/// The median of `values` (the mean of the middle two for an even count); 0 for none.
fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

/// One path's result over several rounds: every figure is the median of that figure over
/// the rounds (percentiles too: the median of the rounds' p50s, p99s, ...).
pub fn median_result(rounds: &[PathResult]) -> PathResult {
    let Some(first) = rounds.first() else {
        return PathResult::default();
    };
    let of = |get: fn(&PathResult) -> f64| median(rounds.iter().map(get).collect());
    let optional = |get: fn(&PathResult) -> Option<f64>| {
        let values: Vec<f64> = rounds.iter().filter_map(get).collect();
        (!values.is_empty()).then(|| median(values))
    };
    let percentiles = |get: fn(&PathResult) -> Percentiles| Percentiles {
        p50: median(rounds.iter().map(|r| get(r).p50).collect()),
        p99: median(rounds.iter().map(|r| get(r).p99).collect()),
        p999: median(rounds.iter().map(|r| get(r).p999).collect()),
        samples: rounds.iter().map(|r| get(r).samples).sum(),
    };
    PathResult {
        name: first.name.clone(),
        security: first.security.clone(),
        bulk1_up_gbps: of(|r| r.bulk1_up_gbps),
        bulk1_down_gbps: of(|r| r.bulk1_down_gbps),
        bulk8_up_gbps: of(|r| r.bulk8_up_gbps),
        bulk8_down_gbps: of(|r| r.bulk8_down_gbps),
        relay_cpu_s_per_gib: optional(|r| r.relay_cpu_s_per_gib),
        rtt64_us: percentiles(|r| r.rtt64_us),
        rtt64_switches: optional(|r| r.rtt64_switches),
        rtt16k_us: percentiles(|r| r.rtt16k_us),
        setup_us: percentiles(|r| r.setup_us),
        channels_per_s: of(|r| r.channels_per_s),
    }
}

/// The order in which round `round` measures `paths` paths: forward in even rounds,
/// backward in odd ones.
pub fn order(round: usize, paths: usize) -> Vec<usize> {
    if round.is_multiple_of(2) {
        (0..paths).collect()
    } else {
        (0..paths).rev().collect()
    }
}

/// nullport's ratio to every other path, taken within each round: a Markdown table of
/// `median (min-max)` per metric. `rounds[r]` holds round `r`'s results, one per path in
/// the same order every round. Empty without a `nullport` path.
pub fn paired(rounds: &[Vec<PathResult>]) -> String {
    let Some(first) = rounds.first() else {
        return String::new();
    };
    let Some(np) = first.iter().position(|r| r.name == "nullport") else {
        return String::new();
    };
    let others: Vec<usize> = (0..first.len()).filter(|&i| i != np).collect();
    let mut out = format!(
        "\nnullport as a multiple of each path, paired within each of {} rounds: median (min-max):\n\n| metric | better |",
        rounds.len()
    );
    for &o in &others {
        out.push_str(&format!(" vs {} |", first[o].name));
    }
    out.push_str("\n| --- | --- |");
    out.push_str(&" ---: |".repeat(others.len()));
    out.push('\n');
    for m in METRICS {
        out.push_str(&format!("| {} | {} |", m.label, m.better()));
        for &o in &others {
            let ratios: Vec<f64> = rounds
                .iter()
                .filter_map(|round| match ((m.get)(&round[np]), (m.get)(&round[o])) {
                    (Some(a), Some(b)) if b > 0.0 => Some(a / b),
                    _ => None,
                })
                .collect();
            let cell = match (
                ratios.iter().copied().reduce(f64::min),
                ratios.iter().copied().reduce(f64::max),
            ) {
                (Some(lo), Some(hi)) => format!("{:.2}x ({lo:.2}-{hi:.2})", median(ratios)),
                _ => "-".into(),
            };
            out.push_str(&format!(" {cell} |"));
        }
        out.push('\n');
    }
    out
}

/// Every path's [`median_result`]; `rounds[r]` holds round `r`'s results, one per path in
/// the same order every round.
pub fn medians(rounds: &[Vec<PathResult>]) -> Vec<PathResult> {
    let paths = rounds.first().map_or(0, Vec::len);
    (0..paths)
        .map(|i| median_result(&rounds.iter().map(|r| r[i].clone()).collect::<Vec<_>>()))
        .collect()
}

/// The whole report of a run in rounds: the usual tables over the per-path `medians`, then
/// the paired ratios.
pub fn markdown(rounds: &[Vec<PathResult>], medians: &[PathResult], header: &str) -> String {
    let mut out = report::markdown(medians, header);
    out.push_str(&paired(rounds));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(name: &str, setup_p50: f64, channels_per_s: f64) -> PathResult {
        PathResult {
            name: name.into(),
            setup_us: Percentiles {
                p50: setup_p50,
                p99: setup_p50 * 2.0,
                p999: setup_p50 * 3.0,
                samples: 10,
            },
            channels_per_s,
            ..PathResult::default()
        }
    }

    #[test]
    fn medians_take_the_middle_round_of_every_figure() {
        let rounds = [
            result("nullport", 300.0, 9_000.0),
            result("nullport", 100.0, 12_000.0),
            result("nullport", 200.0, 5_000.0),
            result("nullport", 250.0, 11_000.0),
        ];
        let m = median_result(&rounds);
        assert_eq!(m.setup_us.p50, 225.0);
        assert_eq!(m.setup_us.p99, 450.0);
        assert_eq!(m.setup_us.samples, 40);
        assert_eq!(m.channels_per_s, 10_000.0);
        assert_eq!(m.relay_cpu_s_per_gib, None);
        assert_eq!(median_result(&rounds[..3]).channels_per_s, 9_000.0);
    }

    #[test]
    fn the_order_reverses_every_round() {
        assert_eq!(order(0, 3), [0, 1, 2]);
        assert_eq!(order(1, 3), [2, 1, 0]);
        assert_eq!(order(2, 3), [0, 1, 2]);
    }

    #[test]
    fn ratios_are_paired_within_rounds_not_taken_between_medians() {
        // Round 1 fast, round 2 slow for both paths: each round's ratio is 0.8x, while
        // the ratio of the two medians would say otherwise if the rounds were mixed up.
        let rounds = vec![
            vec![
                result("bare quinn splice", 100.0, 10_000.0),
                result("nullport", 125.0, 8_000.0),
            ],
            vec![
                result("bare quinn splice", 400.0, 5_000.0),
                result("nullport", 500.0, 4_000.0),
            ],
            vec![
                result("bare quinn splice", 200.0, 10_000.0),
                result("nullport", 300.0, 6_000.0),
            ],
        ];
        let table = paired(&rounds);
        assert!(table.contains("3 rounds"), "{table}");
        assert!(
            table.contains("| new channels/s (8 at a time) | higher | 0.80x (0.60-0.80) |"),
            "{table}"
        );
        assert!(
            table.contains("| new channel to first echo p50, us | lower | 1.25x (1.25-1.50) |"),
            "{table}"
        );
        assert!(paired(&[vec![result("bare quinn splice", 1.0, 1.0)]]).is_empty());
    }
}
