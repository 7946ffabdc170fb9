//! `np-bench compare`: nullport's ratios to the bare quinn splice in one `np-bench run`,
//! against a committed baseline of the same ratios.
//!
//! A regression guard that reports and never judges: it prints, per metric, the baseline
//! ratio, the current ratio and the change in percent, and fails only when a file is
//! missing or malformed ([`CompareError`]), never because of a figure. Ratios rather than
//! absolute figures, because both paths run in the same invocation on the same machine,
//! so machine speed and load cancel out to first order.
//!
//! `--write` turns the current results into the baseline file instead (refreshing it).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::report::{METRICS, PathResult};

/// The path whose figures are divided.
const NULLPORT: &str = "nullport";
/// The path they are divided by: the ceiling of the architecture.
const SPLICE: &str = "bare quinn splice";
/// The baseline format this build reads and writes.
const FORMAT: u32 = 1;

/// Why a comparison could not be made (never a figure: see the module doc).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompareError {
    /// A file could not be read or written.
    #[error("{path}: cannot be read or written")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A file is not the JSON it should be.
    #[error("{path}: not a valid {what}")]
    Json {
        /// The file.
        path: PathBuf,
        /// What it should hold.
        what: &'static str,
        /// Where and why parsing failed.
        source: serde_json::Error,
    },
    /// The run results lack a path the ratios need.
    #[error("{path}: no results for the path {name:?} (run with --paths quinn,nullport at least)")]
    MissingPath {
        /// The results file.
        path: PathBuf,
        /// The missing path's name.
        name: &'static str,
    },
    /// The baseline was written by another format of this tool.
    #[error("{path}: baseline format {found}, this np-bench reads format {FORMAT}")]
    Format {
        /// The baseline file.
        path: PathBuf,
        /// The format it declares.
        found: u32,
    },
    /// The baseline holds no ratio at all.
    #[error("{path}: the baseline holds no ratios")]
    Empty {
        /// The baseline file.
        path: PathBuf,
    },
}

/// One metric's ratio, nullport / bare quinn splice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ratio {
    /// The metric's label, as in `np-bench run`'s tables.
    pub metric: String,
    /// Whether a higher figure is better (so whether a higher ratio is).
    pub higher_is_better: bool,
    /// nullport's figure divided by the splice's.
    pub ratio: f64,
}

/// The committed baseline: ratios from one run, and where they came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    /// Format version ([`FORMAT`]).
    pub format: u32,
    /// What the ratios are.
    pub what: String,
    /// UTC date of the run (YYYY-MM-DD).
    pub date: String,
    /// The commit measured (`git rev-parse --short HEAD`, or `unknown`).
    pub commit: String,
    /// The machine (CPU model and CPUs).
    pub machine: String,
    /// The ratios, in the order of `np-bench run`'s tables.
    pub ratios: Vec<Ratio>,
}

/// nullport's ratio to the splice for every metric both have a figure for.
pub fn ratios(results: &[PathResult], path: &Path) -> Result<Vec<Ratio>, CompareError> {
    let find = |name: &'static str| {
        results
            .iter()
            .find(|r| r.name == name)
            .ok_or_else(|| CompareError::MissingPath {
                path: path.to_owned(),
                name,
            })
    };
    let (np, splice) = (find(NULLPORT)?, find(SPLICE)?);
    Ok(METRICS
        .iter()
        .filter_map(|m| match ((m.get)(np), (m.get)(splice)) {
            (Some(a), Some(b)) if b > 0.0 && a.is_finite() && b.is_finite() => Some(Ratio {
                metric: m.label.to_owned(),
                higher_is_better: m.higher_is_better,
                ratio: a / b,
            }),
            _ => None,
        })
        .collect())
}

fn read(path: &Path) -> Result<Vec<u8>, CompareError> {
    std::fs::read(path).map_err(|source| CompareError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Reads `np-bench run --json` results.
pub fn read_results(path: &Path) -> Result<Vec<PathResult>, CompareError> {
    serde_json::from_slice(&read(path)?).map_err(|source| CompareError::Json {
        path: path.to_owned(),
        what: "np-bench run --json result",
        source,
    })
}

/// Reads and checks a baseline file.
pub fn read_baseline(path: &Path) -> Result<Baseline, CompareError> {
    let baseline: Baseline =
        serde_json::from_slice(&read(path)?).map_err(|source| CompareError::Json {
            path: path.to_owned(),
            what: "np-bench baseline",
            source,
        })?;
    if baseline.format != FORMAT {
        return Err(CompareError::Format {
            path: path.to_owned(),
            found: baseline.format,
        });
    }
    if baseline.ratios.is_empty() {
        return Err(CompareError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(baseline)
}

/// The comparison table (Markdown): metric, baseline ratio, current ratio, change in %.
/// A metric only one side has shows `-` for the other.
pub fn table(baseline: &Baseline, current: &[Ratio]) -> String {
    let mut out = format!(
        "nullport / bare quinn splice, against the baseline of {} (commit {}, {}):\n\n\
         | metric | better | baseline | current | change |\n| --- | --- | ---: | ---: | ---: |\n",
        baseline.date, baseline.commit, baseline.machine
    );
    let mut labels: Vec<(&str, bool)> = baseline
        .ratios
        .iter()
        .map(|r| (r.metric.as_str(), r.higher_is_better))
        .collect();
    for r in current {
        if !labels.iter().any(|(l, _)| *l == r.metric) {
            labels.push((r.metric.as_str(), r.higher_is_better));
        }
    }
    for (label, higher) in labels {
        let find = |rs: &[Ratio]| rs.iter().find(|r| r.metric == label).map(|r| r.ratio);
        let (was, now) = (find(&baseline.ratios), find(current));
        let change = match (was, now) {
            (Some(a), Some(b)) if a > 0.0 => format!("{:+.1}%", (b / a - 1.0) * 100.0),
            _ => "-".into(),
        };
        let show = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.2}x"));
        out.push_str(&format!(
            "| {label} | {} | {} | {} | {change} |\n",
            if higher { "higher" } else { "lower" },
            show(was),
            show(now)
        ));
    }
    out.push_str("\nA change is informative only (one run each; this is not a pass/fail check).\n");
    out
}

/// `np-bench compare`: prints the table, or with `write` writes `current`'s ratios to
/// `baseline`.
pub fn run(baseline: &Path, current: &Path, write: bool) -> Result<(), CompareError> {
    let now = ratios(&read_results(current)?, current)?;
    if write {
        let fresh = Baseline {
            format: FORMAT,
            what: format!("np-bench run: {NULLPORT} / {SPLICE}, per metric"),
            date: today(),
            commit: commit(),
            machine: crate::machine(),
            ratios: now,
        };
        let mut text =
            serde_json::to_string_pretty(&fresh).map_err(|source| CompareError::Json {
                path: baseline.to_owned(),
                what: "np-bench baseline",
                source,
            })?;
        text.push('\n');
        if let Some(dir) = baseline.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| CompareError::Io {
                path: dir.to_owned(),
                source,
            })?;
        }
        std::fs::write(baseline, text).map_err(|source| CompareError::Io {
            path: baseline.to_owned(),
            source,
        })?;
        eprintln!("baseline written: {}", baseline.display());
        return Ok(());
    }
    let base = read_baseline(baseline)?;
    crate::say(&table(&base, &now));
    Ok(())
}

/// The commit being measured, short, or `unknown` outside a git checkout.
fn commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Today's UTC date, YYYY-MM-DD.
fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Percentiles;

    fn result(name: &str, rtt64: f64, bulk: f64) -> PathResult {
        PathResult {
            name: name.into(),
            bulk1_up_gbps: bulk,
            rtt64_us: Percentiles {
                p50: rtt64,
                ..Percentiles::default()
            },
            ..PathResult::default()
        }
    }

    #[test]
    fn ratios_divide_nullport_by_the_splice_and_skip_missing_figures() {
        let results = [result(SPLICE, 200.0, 2.0), result(NULLPORT, 230.0, 1.8)];
        let r = ratios(&results, Path::new("run.json")).unwrap();
        let rtt = r.iter().find(|r| r.metric == "64 B RTT p50, us").unwrap();
        assert!((rtt.ratio - 1.15).abs() < 1e-9 && !rtt.higher_is_better);
        let bulk = r
            .iter()
            .find(|r| r.metric == "bulk 1 stream up, Gbit/s")
            .unwrap();
        assert!((bulk.ratio - 0.9).abs() < 1e-9 && bulk.higher_is_better);
        // relay CPU is None on both, p99 is zero on the splice: no ratio, no division.
        assert!(!r.iter().any(|r| r.metric == "relay CPU s/GiB"));
        assert!(!r.iter().any(|r| r.metric == "64 B RTT p99, us"));
    }

    #[test]
    fn missing_path_is_a_typed_error() {
        let results = [result(NULLPORT, 230.0, 1.8)];
        assert!(matches!(
            ratios(&results, Path::new("run.json")),
            Err(CompareError::MissingPath { name: SPLICE, .. })
        ));
    }

    #[test]
    fn table_shows_change_in_percent_and_dashes_for_one_sided_metrics() {
        let base = Baseline {
            format: FORMAT,
            what: String::new(),
            date: "2026-11-28".into(),
            commit: "abc1234".into(),
            machine: "m".into(),
            ratios: vec![
                Ratio {
                    metric: "a".into(),
                    higher_is_better: false,
                    ratio: 1.2,
                },
                Ratio {
                    metric: "gone".into(),
                    higher_is_better: true,
                    ratio: 0.5,
                },
            ],
        };
        let now = vec![
            Ratio {
                metric: "a".into(),
                higher_is_better: false,
                ratio: 1.08,
            },
            Ratio {
                metric: "new".into(),
                higher_is_better: true,
                ratio: 2.0,
            },
        ];
        let t = table(&base, &now);
        assert!(t.contains("| a | lower | 1.20x | 1.08x | -10.0% |"), "{t}");
        assert!(t.contains("| gone | higher | 0.50x | - | - |"), "{t}");
        assert!(t.contains("| new | higher | - | 2.00x | - |"), "{t}");
    }

    #[test]
    fn files_missing_or_malformed_are_typed_errors_and_a_round_trip_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.json");
        assert!(matches!(
            run(&missing, &missing, false),
            Err(CompareError::Io { .. })
        ));
        let current = dir.path().join("run.json");
        std::fs::write(&current, b"{ not json").unwrap();
        assert!(matches!(
            read_results(&current),
            Err(CompareError::Json { .. })
        ));
        let results = vec![result(SPLICE, 200.0, 2.0), result(NULLPORT, 230.0, 1.8)];
        std::fs::write(&current, serde_json::to_vec(&results).unwrap()).unwrap();
        let baseline = dir.path().join("sub/baseline.json");
        run(&baseline, &current, true).unwrap();
        let read = read_baseline(&baseline).unwrap();
        assert_eq!(read.ratios, ratios(&results, &current).unwrap());
        run(&baseline, &current, false).unwrap();
        // Another format, no ratios, an unknown field: refused with the precise error.
        let mut other = read.clone();
        other.format = 2;
        std::fs::write(&baseline, serde_json::to_vec(&other).unwrap()).unwrap();
        assert!(matches!(
            read_baseline(&baseline),
            Err(CompareError::Format { found: 2, .. })
        ));
        let mut empty = read;
        empty.ratios.clear();
        std::fs::write(&baseline, serde_json::to_vec(&empty).unwrap()).unwrap();
        assert!(matches!(
            read_baseline(&baseline),
            Err(CompareError::Empty { .. })
        ));
        std::fs::write(&baseline, br#"{"format":1,"extra":true}"#).unwrap();
        assert!(matches!(
            read_baseline(&baseline),
            Err(CompareError::Json { .. })
        ));
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_785), (2026, 11, 28));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
