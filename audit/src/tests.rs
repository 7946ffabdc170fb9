//! The audit log's tests: chain, checkpoints, verification, torn writes, rotation.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nullport_protocol::{Identity, NodeId};
use serde_json::Value;

use crate::chain::ZERO_HASH;
use crate::*;

/// A fixed clock for the writer.
fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_305_600)
}

fn mcp(i: u64) -> Event {
    Event::Mcp {
        caller: Identity::from_seed([5; 32]).node_id(),
        service: format!("svc-{i}"),
        method: "tools/call".into(),
        target: None,
        args_sha256: None,
        outcome: "allowed".into(),
        reason: String::new(),
        latency_us: i,
    }
}

/// A log of `n` events with checkpoints every 4, closed with a final checkpoint.
fn make_log(n: u64) -> (tempfile::TempDir, PathBuf, NodeId, Checkpoint) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let identity = Identity::from_seed([7; 32]);
    let node = identity.node_id();
    let config = AuditConfig {
        checkpoint_every: 4,
        checkpoint_interval: Duration::from_secs(3600),
        fsync: FsyncPolicy::Never,
        max_file_bytes: u64::MAX,
        ..AuditConfig::default()
    };
    let mut w = AuditWriter::open(&path, identity, config, now()).unwrap();
    for i in 0..n {
        w.append(now(), &mcp(i)).unwrap();
    }
    let cp = w.checkpoint(now()).unwrap();
    (dir, path, node, cp)
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(
        path,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
}

fn problem(path: &Path, node: &NodeId) -> Option<Problem> {
    verify(path, node, None).unwrap().problem
}

#[test]
fn intact_log_verifies() {
    let (_d, path, node, cp) = make_log(10);
    let r = verify(&path, &node, Some(&cp)).unwrap();
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.entries, 1 + 10 + 2 + 1); // start, events, a checkpoint every 4 entries, final
    assert_eq!(r.unsigned_tail, 0);
    assert_eq!(r.witness, Some(Ok(())));
}

#[test]
fn edited_byte_is_named() {
    let (_d, path, node, _) = make_log(10);
    let mut l = lines(&path);
    l[5] = l[5].replace("allowed", "allowez");
    write_lines(&path, &l);
    let p = problem(&path, &node).unwrap_or_else(|| panic!("edit not detected"));
    assert_eq!(p.line, 7, "{p:?}"); // the next line's prev no longer matches
    assert!(p.reason.contains("hash chain broken"), "{p:?}");
}

#[test]
fn deleted_entry_is_named() {
    let (_d, path, node, _) = make_log(10);
    let mut l = lines(&path);
    l.remove(3);
    write_lines(&path, &l);
    let p = problem(&path, &node).unwrap_or_else(|| panic!("deletion not detected"));
    assert_eq!(p.line, 4);
    assert!(p.reason.contains("missing"), "{p:?}");
}

#[test]
fn swapped_entries_are_named() {
    let (_d, path, node, _) = make_log(10);
    let mut l = lines(&path);
    l.swap(2, 3);
    write_lines(&path, &l);
    let p = problem(&path, &node).unwrap_or_else(|| panic!("swap not detected"));
    assert_eq!(p.line, 3);
}

#[test]
fn forged_rechained_log_fails_at_the_first_checkpoint() {
    // The attacker rewrites an entry and recomputes every prev, but cannot sign.
    let (_d, path, node, _) = make_log(10);
    let mut out = Vec::new();
    let mut prev = ZERO_HASH.to_owned();
    for line in lines(&path) {
        let mut v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        v["prev"] = Value::String(prev.clone());
        if v["event"] == "mcp" {
            v["outcome"] = Value::String("denied".into());
        }
        if v["event"] == "checkpoint" {
            v["head"] = Value::String(prev.clone());
        }
        let l = serde_json::to_string(&v).unwrap_or_default();
        prev = sha256_hex(l.as_bytes());
        out.push(l);
    }
    write_lines(&path, &out);
    let p = problem(&path, &node).unwrap_or_else(|| panic!("forgery not detected"));
    assert!(p.reason.contains("checkpoint signature invalid"), "{p:?}");
    assert_eq!(p.line, 5); // log-start + 3 events, then the first checkpoint
}

#[test]
fn truncated_tail_is_caught_by_the_witness() {
    let (_d, path, node, cp) = make_log(10);
    let mut l = lines(&path);
    l.truncate(l.len() - 3);
    write_lines(&path, &l);
    let r = verify(&path, &node, None).unwrap();
    assert!(
        r.problem.is_none(),
        "a clean cut at an entry boundary is not visible without a witness"
    );
    let r = verify(&path, &node, Some(&cp)).unwrap();
    assert!(
        matches!(&r.witness, Some(Err(e)) if e.contains("truncated")),
        "{r:?}"
    );
    assert!(!r.ok());
}

#[test]
fn removing_every_checkpoint_is_not_proof() {
    let (_d, path, node, _) = make_log(2);
    let l: Vec<String> = lines(&path)
        .into_iter()
        .filter(|l| !l.contains("\"checkpoint\""))
        .collect();
    write_lines(&path, &l);
    let p = problem(&path, &node).unwrap_or_else(|| panic!("not detected"));
    assert!(p.reason.contains("no signed checkpoint"), "{p:?}");
}

#[test]
fn torn_write_is_reported_as_torn_and_the_log_continues() {
    let (_d, path, node, _) = make_log(5);
    // A crash in the middle of appending an entry.
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(b"{\"seq\":99,\"ts\":\"2026-").unwrap();
    drop(f);
    let r = verify(&path, &node, None).unwrap();
    assert_eq!(r.torn.len(), 1);
    assert!(r.problem.is_none(), "{r:?}");
    // The next writer ends the torn line, records the recovery, and goes on.
    let config = AuditConfig {
        checkpoint_every: 4,
        checkpoint_interval: Duration::from_secs(3600),
        fsync: FsyncPolicy::Never,
        max_file_bytes: u64::MAX,
        ..AuditConfig::default()
    };
    let mut w = AuditWriter::open(&path, Identity::from_seed([7; 32]), config, now()).unwrap();
    w.append(now(), &mcp(100)).unwrap();
    w.checkpoint(now()).unwrap();
    let r = verify(&path, &node, None).unwrap();
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.torn.len(), 1);
    assert!(
        lines(&path)
            .iter()
            .any(|l| l.contains("\"event\":\"recovery\""))
    );
}

#[test]
fn a_garbage_line_in_the_middle_is_tampering_not_torn() {
    let (_d, path, node, _) = make_log(5);
    let mut l = lines(&path);
    l.insert(3, "{garbage".into());
    write_lines(&path, &l);
    let p = problem(&path, &node).unwrap_or_else(|| panic!("not detected"));
    assert_eq!(p.line, 4);
}

#[test]
fn rotation_keeps_the_chain_across_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let identity = Identity::from_seed([7; 32]);
    let node = identity.node_id();
    let config = AuditConfig {
        checkpoint_every: 10,
        checkpoint_interval: Duration::from_secs(3600),
        fsync: FsyncPolicy::Never,
        max_file_bytes: 4096,
        ..AuditConfig::default()
    };
    let mut w = AuditWriter::open(&path, identity, config, now()).unwrap();
    for i in 0..100 {
        w.append(now(), &mcp(i)).unwrap();
    }
    w.checkpoint(now()).unwrap();
    drop(w);
    let files = log_files(&path);
    assert!(files.len() >= 3, "{files:?}");
    let r = verify(&path, &node, None).unwrap();
    assert!(r.ok(), "{r:?}");
    assert_eq!(
        entries(&path).map(|e| e.len()).ok(),
        Some(r.entries as usize)
    );
    // Reopening continues the chain in the current file.
    let mut w = AuditWriter::open(&path, Identity::from_seed([7; 32]), config, now()).unwrap();
    w.append(now(), &mcp(1000)).unwrap();
    w.checkpoint(now()).unwrap();
    drop(w);
    assert!(verify(&path, &node, None).map(|r| r.ok()).unwrap_or(false));
    // An edit in a rotated file is named by that file and line.
    let first = files[0].clone();
    let mut l = lines(&first);
    l[3] = l[3].replace("allowed", "allowex");
    write_lines(&first, &l);
    let p = problem(&path, &node).unwrap_or_else(|| panic!("not detected"));
    assert_eq!((p.file.clone(), p.line), (first.clone(), 5), "{p:?}");
    // A deleted rotated file is a gap.
    std::fs::remove_file(&files[1]).unwrap();
    let p = problem(&path, &node).unwrap_or_else(|| panic!("not detected"));
    assert!(
        p.reason.contains("missing") || p.reason.contains("chain"),
        "{p:?}"
    );
}

#[test]
fn another_nodes_key_does_not_verify() {
    let (_d, path, _, _) = make_log(5);
    let other = Identity::from_seed([8; 32]).node_id();
    let p = problem(&path, &other).unwrap_or_else(|| panic!("not detected"));
    assert!(p.reason.contains("checkpoint signature invalid"));
}
