//! A test that cannot run is not a pass. When a test lacks what it needs (root, a real peer
//! program), it calls [`not_run`]: under `CI=true` that fails the test; otherwise the test is
//! recorded in the skip log that `scripts/test` reads, reports in its summary and fails on.

use std::io::Write;

/// The environment variable naming the skip log (one line per test that did not run).
pub const SKIP_LOG_ENV: &str = "NULLPORT_SKIP_LOG";

/// Reports that `test` did not run because of `why`. Panics under `CI=true`.
pub fn not_run(test: &str, why: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test} cannot run under CI: {why}");
    }
    eprintln!("\n*** NOT RUN: {test}: {why} ***\n");
    if let Some(path) = std::env::var_os(SKIP_LOG_ENV) {
        let line = format!("{test}: {why}\n");
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            panic!("{test} did not run ({why}) and the skip log could not be written: {e}");
        }
    }
}

/// Whether `tool` (a program name or an absolute path) can be run here.
pub fn have(tool: &str) -> bool {
    if tool.starts_with('/') {
        return std::path::Path::new(tool).exists();
    }
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// True when every tool is present; otherwise reports `test` as not run and returns false.
pub fn require(test: &str, tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !have(t)).collect();
    if missing.is_empty() {
        return true;
    }
    not_run(
        test,
        &format!(
            "missing {} (scripts/install-peers installs it)",
            missing.join(", ")
        ),
    );
    false
}
