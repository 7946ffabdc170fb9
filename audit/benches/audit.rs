//! Audit log throughput: entries appended per second with each fsync policy, and the time
//! to verify a log of 1 million entries. `cargo bench -p nullport-audit --bench audit`
//! (`-- --quick`: 20,000 appends, 100,000 verified).

use std::time::{Duration, Instant, SystemTime};

use nullport_audit::{AuditConfig, AuditWriter, Event, FsyncPolicy, verify};
use nullport_protocol::Identity;

/// A typical MCP decision entry.
fn event(i: u64) -> Event {
    Event::Mcp {
        caller: Identity::from_seed([3; 32]).node_id(),
        service: "files".into(),
        method: "tools/call".into(),
        target: Some("read_text_file".into()),
        args_sha256: Some(format!("{i:064x}")),
        outcome: "allowed".into(),
        reason: "rule alice".into(),
        latency_us: i % 1000,
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let quick = std::env::args().any(|a| a == "--quick");
    let (appends, verified) = if quick {
        (20_000u64, 100_000u64)
    } else {
        (200_000, 1_000_000)
    };
    let dir = tempfile::tempdir()?;
    println!("| fsync policy | entries/s (checkpoint every 256) |");
    println!("| --- | --- |");
    for (name, fsync, n) in [
        (
            "at checkpoint (default)",
            FsyncPolicy::AtCheckpoint,
            appends,
        ),
        ("never", FsyncPolicy::Never, appends),
        ("every entry", FsyncPolicy::EveryEntry, appends / 20),
    ] {
        let path = dir.path().join(format!("append-{}.log", name.len()));
        let config = AuditConfig {
            fsync,
            max_file_bytes: u64::MAX,
            checkpoint_interval: Duration::from_secs(3600),
            ..AuditConfig::default()
        };
        let mut w = AuditWriter::open(
            &path,
            Identity::from_seed([1; 32]),
            config,
            SystemTime::now(),
        )?;
        let start = Instant::now();
        for i in 0..n {
            w.append(SystemTime::now(), &event(i))?;
        }
        w.checkpoint(SystemTime::now())?;
        println!(
            "| {name} | {:.0} |",
            n as f64 / start.elapsed().as_secs_f64()
        );
    }
    let path = dir.path().join("verify.log");
    let identity = Identity::from_seed([2; 32]);
    let node = identity.node_id();
    let config = AuditConfig {
        fsync: FsyncPolicy::Never,
        max_file_bytes: u64::MAX,
        checkpoint_interval: Duration::from_secs(3600),
        ..AuditConfig::default()
    };
    let mut w = AuditWriter::open(&path, identity, config, SystemTime::now())?;
    for i in 0..verified {
        w.append(SystemTime::now(), &event(i))?;
    }
    w.checkpoint(SystemTime::now())?;
    drop(w);
    let size = std::fs::metadata(&path)?.len();
    let start = Instant::now();
    let report = verify(&path, &node, None)?;
    let took = start.elapsed();
    assert!(report.ok(), "{report:?}");
    println!();
    println!(
        "verify: {} entries ({} MiB, {} checkpoints) in {:.2} s ({:.0} entries/s)",
        report.entries,
        size >> 20,
        report.checkpoints,
        took.as_secs_f64(),
        report.entries as f64 / took.as_secs_f64()
    );
    Ok(())
}
