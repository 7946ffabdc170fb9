//! A full disk while writing the audit log: a real tmpfs of 256 KiB filled to the last byte.
//! The writer never leaves a torn entry, holds entries in a bounded backlog, records what it
//! had to drop in a `gap` entry, and the log verifies end to end once space returns.
//!
//! Needs root (to mount the tmpfs); under `CI=true` it fails if it cannot run.

use std::io::Write;
use std::process::Command;
use std::time::{Duration, SystemTime};

use nullport_audit::{self as audit, AuditConfig, AuditError, AuditWriter, FsyncPolicy};
use nullport_protocol::Identity;

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn mount_tmpfs(dir: &std::path::Path, size: &str) -> Result<Mount, String> {
    let out = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0700"),
            "tmpfs",
        ])
        .arg(dir)
        .output()
        .map_err(|e| format!("mount: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
    }
    Ok(Mount(dir.to_owned()))
}

fn event(i: u64) -> audit::Event {
    audit::Event::Mcp {
        caller: Identity::from_seed([4; 32]).node_id(),
        service: "files".into(),
        method: "tools/call".into(),
        target: None,
        args_sha256: Some(audit::sha256_hex(&i.to_be_bytes())),
        outcome: "allowed".into(),
        reason: String::new(),
        latency_us: i,
    }
}

#[test]
fn full_disk_while_writing_the_audit_log_tears_nothing_and_records_the_gap() {
    let dir = tempfile::tempdir().unwrap();
    let _mount = match mount_tmpfs(dir.path(), "256k") {
        Ok(m) => m,
        Err(why) => {
            nullport_tests::skip::not_run(
                "full_disk_while_writing_the_audit_log",
                &format!("cannot mount a tmpfs ({why}); needs root"),
            );
            return;
        }
    };
    let path = dir.path().join("audit.log");
    let identity = Identity::from_seed([3; 32]);
    let node = identity.node_id();
    let config = AuditConfig {
        checkpoint_every: 8,
        checkpoint_interval: Duration::from_secs(3600),
        fsync: FsyncPolicy::AtCheckpoint,
        max_file_bytes: u64::MAX,
        max_backlog_bytes: 16 << 10,
    };
    let mut w = AuditWriter::open(&path, identity, config, SystemTime::now()).unwrap();
    let mut next = 0u64;
    for _ in 0..20 {
        w.append(SystemTime::now(), &event(next)).unwrap();
        next += 1;
    }

    // Fill the file system to the last byte.
    let ballast_path = dir.path().join("ballast");
    let mut ballast = std::fs::File::create(&ballast_path).unwrap();
    let chunk = vec![0xA5u8; 4096];
    while ballast.write_all(&chunk).is_ok() {}
    while ballast.write_all(&chunk[..1]).is_ok() {}
    drop(ballast);

    // Appends go on; the first refused one starts the backlog, then entries are dropped.
    let (mut backlogged, mut dropped) = (0u64, 0u64);
    let mut first_backlog_error = None;
    for _ in 0..400 {
        match w.append(SystemTime::now(), &event(next)) {
            Ok(_) => assert_eq!(backlogged, 0, "an append succeeded while the backlog waits"),
            Err(AuditError::Backlog { error, .. }) => {
                backlogged += 1;
                first_backlog_error.get_or_insert(error);
            }
            Err(AuditError::Dropped { lost, .. }) => {
                dropped += 1;
                assert_eq!(lost, dropped);
            }
            Err(e) => panic!("unexpected error kind: {e}"),
        }
        next += 1;
    }
    let reason = first_backlog_error.unwrap_or_else(|| panic!("the disk never filled"));
    assert_eq!(reason, std::io::ErrorKind::StorageFull, "{reason}");
    assert!(
        dropped > 0 && backlogged > 0,
        "backlog {backlogged}, dropped {dropped}"
    );
    assert!(w.backlog() > 0);

    // What is on disk now is whole lines only and verifies up to its last checkpoint.
    let on_disk = std::fs::read(&path).unwrap();
    assert!(on_disk.ends_with(b"\n"), "a torn entry is on disk");
    let report = audit::verify(&path, &node, None).unwrap();
    assert!(
        report.problem.is_none() && report.torn.is_empty(),
        "{report:?}"
    );

    // Space returns: the backlog is written in order, then the gap, then the new entry.
    std::fs::remove_file(&ballast_path).unwrap();
    w.append(SystemTime::now(), &event(next))
        .unwrap_or_else(|e| panic!("after space returned: {e}"));
    assert_eq!(w.backlog(), 0);
    w.checkpoint(SystemTime::now()).unwrap();
    let report = audit::verify(&path, &node, None).unwrap();
    assert!(report.ok() && report.torn.is_empty(), "{report:?}");

    let entries = audit::entries(&path).unwrap();
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(
            e["seq"].as_u64(),
            Some(i as u64),
            "sequence has a hole at {i}"
        );
    }
    let gaps: Vec<&serde_json::Value> = entries.iter().filter(|e| e["event"] == "gap").collect();
    assert_eq!(gaps.len(), 1, "one gap entry");
    assert_eq!(gaps[0]["lost"].as_u64(), Some(dropped));
    let written_events = entries.iter().filter(|e| e["event"] == "mcp").count() as u64;
    assert_eq!(
        written_events,
        next + 1 - dropped,
        "every entry not reported dropped is on disk"
    );
}
