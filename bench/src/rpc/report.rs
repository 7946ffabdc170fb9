//! `np-bench rpc`'s tables: absolute figures per path, ratios between them, the targets.

use super::Column;

fn num(v: f64) -> String {
    crate::report::fmt(Some(v))
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}x", a / b)
    } else {
        "-".into()
    }
}

/// The Markdown report: absolute figures, ratios, targets.
pub(super) fn markdown(cols: &[Column], header: &str) -> String {
    let mut out = format!("{header}\n\n| metric |");
    for c in cols {
        out.push_str(&format!(" {} |", c.name));
    }
    out.push_str("\n| --- |");
    out.push_str(&" ---: |".repeat(cols.len()));
    out.push('\n');
    let mut row = |label: String, cell: &dyn Fn(&Column) -> Option<String>| {
        out.push_str(&format!("| {label} |"));
        for c in cols {
            out.push_str(&format!(" {} |", cell(c).unwrap_or_else(|| "-".into())));
        }
        out.push('\n');
    };
    row("64 B call p50, us".into(), &|c| Some(num(c.rtt_us.p50)));
    row("64 B call p99, us".into(), &|c| Some(num(c.rtt_us.p99)));
    row("64 B call p99.9, us".into(), &|c| Some(num(c.rtt_us.p999)));
    let levels: Vec<usize> = cols
        .iter()
        .flat_map(|c| c.rates.iter().map(|r| r.in_flight))
        .fold(Vec::new(), |mut v, n| {
            if !v.contains(&n) {
                v.push(n);
            }
            v
        });
    let at = |c: &Column, n: usize| c.rates.iter().find(|r| r.in_flight == n).copied();
    for &n in &levels {
        row(format!("calls/s, {n} in flight"), &|c| {
            at(c, n).map(|r| num(r.calls_per_s))
        });
    }
    for &n in &levels {
        row(
            format!("CPU us per call, {n} in flight: caller / relay / callee"),
            &|c| {
                at(c, n).map(|r| {
                    let u = r.cpu_us_per_call;
                    format!("{} / {} / {}", num(u.caller), num(u.relay), num(u.callee))
                })
            },
        );
    }

    let by = |name: &str| cols.iter().find(|c| c.name == name);
    let pairs = [
        ("typed RPC", "raw channel"),
        ("tonic over nullport", "tonic over TCP"),
        ("typed RPC", "tonic over nullport"),
    ];
    out.push_str("\nRatios, same run (latency: lower is better; calls/s: higher is better):\n\n");
    out.push_str("| ratio | p50 | p99 |");
    for n in &levels {
        out.push_str(&format!(" calls/s, {n} in flight |"));
    }
    out.push_str("\n| --- | ---: | ---: |");
    out.push_str(&" ---: |".repeat(levels.len()));
    out.push('\n');
    for (a, b) in pairs {
        let (Some(a), Some(b)) = (by(a), by(b)) else {
            continue;
        };
        out.push_str(&format!(
            "| {} / {} | {} | {} |",
            a.name,
            b.name,
            ratio(a.rtt_us.p50, b.rtt_us.p50),
            ratio(a.rtt_us.p99, b.rtt_us.p99)
        ));
        for &n in &levels {
            let cell = match (at(a, n), at(b, n)) {
                (Some(x), Some(y)) => ratio(x.calls_per_s, y.calls_per_s),
                _ => "-".into(),
            };
            out.push_str(&format!(" {cell} |"));
        }
        out.push('\n');
    }

    if let (Some(raw), Some(rpc)) = (by("raw channel"), by("typed RPC")) {
        let p50 = rpc.rtt_us.p50 / raw.rtt_us.p50;
        let p99 = rpc.rtt_us.p99 / raw.rtt_us.p99;
        let best = rpc
            .rates
            .iter()
            .max_by(|x, y| x.calls_per_s.total_cmp(&y.calls_per_s));
        let tick = |met: bool| if met { "x" } else { " " };
        out.push_str("\nTargets (issue 21):\n\n");
        out.push_str(&format!(
            "- [{}] typed RPC unary p50 <= 1.2x the raw 64 B channel round trip: {p50:.2}x \
             (p99: {p99:.2}x)\n",
            tick(p50 <= 1.2)
        ));
        if let Some(best) = best {
            out.push_str(&format!(
                "- [{}] >= 20,000 typed RPC calls/s from one caller: {:.0}/s ({} in flight)\n",
                tick(best.calls_per_s >= 20_000.0),
                best.calls_per_s,
                best.in_flight
            ));
        }
    }
    out
}
