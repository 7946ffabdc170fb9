//! nullport as people use it: a relay and two `nullport` daemons (`nullport up`, each in its
//! own temporary home); the callee runs `nullport expose tcp bench ADDR` to the bench's TCP
//! server, the caller `nullport connect callee/bench --listen 127.0.0.1:PORT`, and the
//! client connects to that port (as with `ssh -R`). What this adds to the library path
//! ([`super::nullport`]) is what the command-line tools add: the daemons and `connect`.
//!
//! The `nullport` binary is the one next to `np-bench` (`cargo build --release -p nullport`),
//! or `$NP_BENCH_NULLPORT` (to measure another build of it).

use std::net::SocketAddr;
use std::path::{Path as FsPath, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::tcp::TcpOpener;
use super::{Path, free_port};
use crate::procs::Proc;
use crate::workload::Opener;

/// The `nullport` binary measured.
fn binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("NP_BENCH_NULLPORT") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().context("locating np-bench")?;
    Ok(exe.with_file_name("nullport"))
}

/// Why the path cannot run here, if it cannot.
pub fn unavailable() -> Option<String> {
    match binary() {
        Ok(b) if b.is_file() => None,
        Ok(b) => Some(format!(
            "{} not built (cargo build --release -p nullport, or set NP_BENCH_NULLPORT)",
            b.display()
        )),
        Err(e) => Some(e.to_string()),
    }
}

/// Runs `nullport --home HOME ARGS...` to completion; returns its standard output.
fn run(exe: &FsPath, home: &FsPath, args: &[&str]) -> Result<String> {
    let out = Command::new(exe)
        .arg("--home")
        .arg(home)
        .args(args)
        .output()
        .with_context(|| format!("running nullport {args:?}"))?;
    if !out.status.success() {
        bail!(
            "nullport {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `nullport up` in `home`, waiting until its relay link is online.
async fn up(exe: &FsPath, home: &FsPath, relay: &str) -> Result<Proc> {
    let daemon = Proc::spawn(
        Command::new(exe)
            .arg("--home")
            .arg(home)
            .args(["up", "--relay", relay])
            .env("RUST_LOG", "error"),
        false,
    )?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if run(exe, home, &["status"]).is_ok_and(|s| s.contains("link     online")) {
            return Ok(daemon);
        }
        if Instant::now() > deadline {
            bail!("the daemon in {} never came online", home.display());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts the relay, the bench server, both daemons and `connect --listen`.
pub async fn start() -> Result<Path> {
    let exe = binary()?;
    let dir = tempfile::tempdir()?;
    let relay = Proc::role(&["relay"])?;
    let relay_addr = format!("{}@{}", relay.word(1)?, relay.word(2)?);
    let server = Proc::role(&["serve-tcp"])?;
    let server_addr: SocketAddr = server.word(1)?.parse()?;
    let (tool, agent) = (dir.path().join("tool"), dir.path().join("agent"));
    let tool_id = run(&exe, &tool, &["init", "--insecure-plaintext-key"])?;
    let agent_id = run(&exe, &agent, &["init", "--insecure-plaintext-key"])?;
    run(&exe, &tool, &["trust", "add", "agent", &agent_id])?;
    run(&exe, &agent, &["trust", "add", "tool", &tool_id])?;
    run(
        &exe,
        &tool,
        &["expose", "tcp", "bench", &server_addr.to_string()],
    )?;
    run(&exe, &tool, &["allow", "agent", "bench"])?;
    let tool_daemon = up(&exe, &tool, &relay_addr).await?;
    let agent_daemon = up(&exe, &agent, &relay_addr).await?;
    let port = free_port()?;
    let connect = Proc::spawn(
        Command::new(&exe)
            .arg("--home")
            .arg(&agent)
            .args(["connect", "tool/bench", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "error"),
        false,
    )?;
    let opener = TcpOpener(SocketAddr::from(([127, 0, 0, 1], port)));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let echoed = tokio::time::timeout(
            Duration::from_secs(2),
            crate::workload::setup_times(&opener as &dyn Opener, 1),
        )
        .await;
        if matches!(echoed, Ok(Ok(_))) {
            break;
        }
        if Instant::now() > deadline {
            bail!("nullport connect never carried an echo");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(Path {
        name: "nullport (connect)",
        security: "end to end (Noise XX, Ed25519 identities), relay-blind",
        opener: Arc::new(opener),
        relay_pid: Some(relay.pid()),
        _procs: vec![connect, agent_daemon, tool_daemon, server, relay],
        _keep: vec![Box::new(dir)],
    })
}
