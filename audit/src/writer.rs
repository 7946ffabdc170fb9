//! [`AuditWriter`]: appends entries to one node's log, chaining and checkpointing them. It is
//! given the time with every call (it reads no clock), so tests decide what time it is.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nullport_protocol::{Identity, NodeId, domain};
use serde_json::{Map, Value};

use crate::chain::{
    Checkpoint, ZERO_HASH, checkpoint_body, last_line, rfc3339, rotated_files, sha256_hex,
};
use crate::error::{AuditError, LogProblem};
use crate::event::Event;

/// When the writer makes the bytes durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// After every entry (slowest, loses nothing acknowledged).
    EveryEntry,
    /// At every checkpoint (default: a crash loses at most the unsigned tail).
    AtCheckpoint,
    /// Never explicitly (the OS decides).
    Never,
}

/// Writer settings.
#[derive(Debug, Clone, Copy)]
pub struct AuditConfig {
    /// A checkpoint after this many entries.
    pub checkpoint_every: u64,
    /// ... or when the last one is this old (checked at each append).
    pub checkpoint_interval: Duration,
    /// Durability.
    pub fsync: FsyncPolicy,
    /// Past this size the file is rotated (`audit.log` -> `audit.log.N`); the chain and the
    /// sequence continue in the new file.
    pub max_file_bytes: u64,
    /// While the disk refuses writes (full, quota, I/O error), entries wait in memory up to
    /// this many bytes and are written in order once it accepts them again; past it, new
    /// entries are dropped and a `gap` entry records how many.
    pub max_backlog_bytes: usize,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            checkpoint_every: 256,
            checkpoint_interval: Duration::from_secs(60),
            fsync: FsyncPolicy::AtCheckpoint,
            max_file_bytes: 64 << 20,
            max_backlog_bytes: 4 << 20,
        }
    }
}

/// Appends entries to one node's audit log.
#[derive(Debug)]
pub struct AuditWriter {
    path: PathBuf,
    file: File,
    identity: Identity,
    config: AuditConfig,
    next_seq: u64,
    prev: String,
    since_checkpoint: u64,
    last_checkpoint: SystemTime,
    /// The time the caller gave with the call being served.
    now: SystemTime,
    latest: Option<Checkpoint>,
    /// Length of the current file: every byte up to here is a whole line.
    bytes: u64,
    /// Lines (with newline) chained but not yet on disk, oldest first.
    backlog: std::collections::VecDeque<Vec<u8>>,
    backlog_bytes: usize,
    /// Entries dropped since the backlog filled (recorded by a `gap` entry).
    lost: u64,
    /// Why the last write failed (while a backlog or loss is outstanding).
    write_error: Option<std::io::ErrorKind>,
}

impl AuditWriter {
    /// Opens (or creates, mode 0600) the log at `path` at time `now`, continuing its chain. A
    /// torn last line is ended and followed by a `recovery` entry.
    pub fn open(
        path: &Path,
        identity: Identity,
        config: AuditConfig,
        now: SystemTime,
    ) -> Result<AuditWriter, AuditError> {
        let io = |error| AuditError::Io {
            path: path.to_owned(),
            error,
        };
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        let mut content = Vec::new();
        file.read_to_end(&mut content).map_err(io)?;
        let mut writer = AuditWriter {
            path: path.to_owned(),
            file,
            identity,
            config,
            next_seq: 0,
            prev: ZERO_HASH.to_owned(),
            since_checkpoint: 0,
            last_checkpoint: now,
            now,
            latest: None,
            bytes: content.len() as u64,
            backlog: std::collections::VecDeque::new(),
            backlog_bytes: 0,
            lost: 0,
            write_error: None,
        };
        if content.is_empty() {
            // Continue a rotated log (a crash may have come between rename and first write).
            let mut rotated = rotated_files(path);
            rotated.sort_by_key(|(n, _)| *n);
            if let Some((_, previous)) = rotated.last() {
                let last = last_line(previous).ok_or_else(|| AuditError::Unreadable {
                    path: previous.clone(),
                    problem: LogProblem::Empty,
                })?;
                let value: Value =
                    serde_json::from_slice(&last).map_err(|e| AuditError::Unreadable {
                        path: previous.clone(),
                        problem: LogProblem::LastEntry(e),
                    })?;
                writer.next_seq = value["seq"].as_u64().unwrap_or(0) + 1;
                writer.prev = sha256_hex(&last);
                let mut fields = Map::new();
                fields.insert(
                    "from".into(),
                    Value::String(
                        previous
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                    ),
                );
                writer.write_entry("rotated", fields)?;
                return Ok(writer);
            }
            let node = writer.identity.node_id().to_string();
            let mut fields = Map::new();
            fields.insert("node".into(), Value::String(node));
            writer.append_fields("log-start", fields)?;
            return Ok(writer);
        }
        let torn = !content.ends_with(b"\n");
        let whole: Vec<&[u8]> = content
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        let (last_whole, torn_line) = if torn {
            (
                whole.len().checked_sub(2).map(|i| whole[i]),
                whole.last().copied(),
            )
        } else {
            (whole.last().copied(), None)
        };
        // Find the last line that is a valid entry to continue from.
        let last = last_whole.ok_or_else(|| AuditError::Unreadable {
            path: path.to_owned(),
            problem: LogProblem::Empty,
        })?;
        let value: Value = serde_json::from_slice(last).map_err(|e| AuditError::Unreadable {
            path: path.to_owned(),
            problem: LogProblem::LastEntry(e),
        })?;
        let seq = value["seq"]
            .as_u64()
            .ok_or_else(|| AuditError::Unreadable {
                path: path.to_owned(),
                problem: LogProblem::NoSeq,
            })?;
        writer.next_seq = seq + 1;
        writer.prev = sha256_hex(last);
        if let Some(torn) = torn_line {
            writer.file.write_all(b"\n").map_err(io)?;
            writer.bytes += 1;
            let mut fields = Map::new();
            fields.insert("torn_line".into(), Value::from(whole.len() as u64));
            fields.insert("torn_sha256".into(), Value::String(sha256_hex(torn)));
            writer.append_fields("recovery", fields)?;
        }
        Ok(writer)
    }

    /// The node whose key signs the checkpoints.
    pub fn node_id(&self) -> NodeId {
        self.identity.node_id()
    }

    /// The most recent checkpoint written by this writer.
    pub fn latest_checkpoint(&self) -> Option<&Checkpoint> {
        self.latest.as_ref()
    }

    /// Appends `event` at time `now`; writes a checkpoint when one is due. Returns the new
    /// entry's sequence number.
    pub fn append(&mut self, now: SystemTime, event: &Event) -> Result<u64, AuditError> {
        self.now = now;
        self.append_fields(event.name(), event.fields())
    }

    /// Appends one entry (`fields` must not use `seq`, `ts`, `prev` or `event`; they are
    /// dropped if they do) at the writer's current time.
    fn append_fields(
        &mut self,
        event: &str,
        fields: Map<String, Value>,
    ) -> Result<u64, AuditError> {
        let seq = self.write_entry(event, fields)?;
        if event != "checkpoint" {
            self.since_checkpoint += 1;
            let due = self.since_checkpoint >= self.config.checkpoint_every
                || self
                    .now
                    .duration_since(self.last_checkpoint)
                    .unwrap_or(Duration::ZERO)
                    >= self.config.checkpoint_interval;
            if due || self.bytes >= self.config.max_file_bytes {
                self.checkpoint_inner()?;
            }
            if self.bytes >= self.config.max_file_bytes && self.backlog.is_empty() {
                self.rotate()?;
            }
        }
        self.backlog_error()?;
        Ok(seq)
    }

    /// Entries waiting in memory for the disk.
    pub fn backlog(&self) -> usize {
        self.backlog.len()
    }

    fn backlog_error(&self) -> Result<(), AuditError> {
        if self.backlog.is_empty() {
            return Ok(());
        }
        Err(AuditError::Backlog {
            path: self.path.clone(),
            queued: self.backlog.len(),
            error: self.write_error.unwrap_or(std::io::ErrorKind::Other),
        })
    }

    /// Writes the backlog in order; false when the disk refused (the reason is kept in
    /// `write_error`). After a refused write, the file is cut back to its last whole line
    /// before anything more is written, so it never holds a torn entry followed by others.
    fn flush(&mut self) -> bool {
        if self.backlog.is_empty() {
            return true;
        }
        if self.write_error.is_some() && self.file.set_len(self.bytes).is_err() {
            return false;
        }
        while let Some(line) = self.backlog.front() {
            if let Err(e) = self.file.write_all(line) {
                self.write_error = Some(e.kind());
                let _ = self.file.set_len(self.bytes);
                return false;
            }
            let len = line.len();
            self.bytes += len as u64;
            self.backlog_bytes -= len;
            self.backlog.pop_front();
        }
        true
    }

    /// Moves the full file aside as `<name>.N` and continues the chain in a new file.
    fn rotate(&mut self) -> Result<(), AuditError> {
        let path = self.path.clone();
        let io = |error| AuditError::Io {
            path: path.clone(),
            error,
        };
        self.file.sync_data().map_err(io)?;
        let next = rotated_files(&self.path)
            .iter()
            .map(|(n, _)| *n)
            .max()
            .unwrap_or(0)
            + 1;
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let rotated = self.path.with_file_name(format!("{name}.{next}"));
        std::fs::rename(&self.path, &rotated).map_err(io)?;
        self.file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(io)?;
        self.bytes = 0;
        let mut fields = Map::new();
        fields.insert("from".into(), Value::String(format!("{name}.{next}")));
        self.write_entry("rotated", fields)?;
        Ok(())
    }

    /// Writes a signed checkpoint at time `now` (also call at shutdown). With a backlog the
    /// checkpoint is chained and queued ([`AuditWriter::latest_checkpoint`] has it) and this
    /// reports [`AuditError::Backlog`].
    pub fn checkpoint(&mut self, now: SystemTime) -> Result<Checkpoint, AuditError> {
        self.now = now;
        let cp = self.checkpoint_inner()?;
        self.backlog_error()?;
        Ok(cp)
    }

    fn checkpoint_inner(&mut self) -> Result<Checkpoint, AuditError> {
        let seq = self.next_seq;
        let head = self.prev.clone();
        let sig = crate::chain::hex(
            &self
                .identity
                .sign(domain::AUDIT_CHECKPOINT_V1, &checkpoint_body(seq, &head)),
        );
        let mut fields = Map::new();
        fields.insert("head".into(), Value::String(head.clone()));
        fields.insert(
            "node".into(),
            Value::String(self.identity.node_id().to_string()),
        );
        fields.insert("sig".into(), Value::String(sig.clone()));
        self.write_entry("checkpoint", fields)?;
        self.since_checkpoint = 0;
        self.last_checkpoint = self.now;
        if self.config.fsync == FsyncPolicy::AtCheckpoint && self.backlog.is_empty() {
            self.file.sync_data().map_err(|error| AuditError::Io {
                path: self.path.clone(),
                error,
            })?;
        }
        let cp = Checkpoint { seq, head, sig };
        self.latest = Some(cp.clone());
        Ok(cp)
    }

    /// Chains one entry and writes it after any backlog. Ok also when it had to wait in the
    /// backlog (callers report [`AuditError::Backlog`] once their work is done).
    fn write_entry(&mut self, event: &str, fields: Map<String, Value>) -> Result<u64, AuditError> {
        if self.flush() && self.lost > 0 {
            let mut gap = Map::new();
            gap.insert("lost".into(), Value::from(self.lost));
            gap.insert(
                "reason".into(),
                Value::String(self.write_error.map(|k| k.to_string()).unwrap_or_default()),
            );
            self.lost = 0;
            let line = self.encode("gap", gap)?;
            self.chain(line);
        }
        let line = self.encode(event, fields)?;
        if !self.backlog.is_empty()
            && self.backlog_bytes + line.len() > self.config.max_backlog_bytes
        {
            self.lost += 1;
            return Err(AuditError::Dropped {
                path: self.path.clone(),
                lost: self.lost,
                error: self.write_error.unwrap_or(std::io::ErrorKind::Other),
            });
        }
        let seq = self.chain(line);
        if self.flush() {
            self.write_error = None;
            if self.config.fsync == FsyncPolicy::EveryEntry {
                self.file.sync_data().map_err(|error| AuditError::Io {
                    path: self.path.clone(),
                    error,
                })?;
            }
        }
        Ok(seq)
    }

    /// Makes `line` (with its newline) the chain's next entry and queues it for the disk.
    fn chain(&mut self, line: Vec<u8>) -> u64 {
        self.prev = sha256_hex(&line[..line.len() - 1]);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.backlog_bytes += line.len();
        self.backlog.push_back(line);
        seq
    }

    /// One entry's line with its newline, numbered and chained onto the current head.
    fn encode(&self, event: &str, fields: Map<String, Value>) -> Result<Vec<u8>, AuditError> {
        let mut entry = Map::new();
        entry.insert("seq".into(), Value::from(self.next_seq));
        entry.insert("ts".into(), Value::String(rfc3339(self.now)));
        entry.insert("prev".into(), Value::String(self.prev.clone()));
        entry.insert("event".into(), Value::String(event.to_owned()));
        for (k, v) in fields {
            if !matches!(k.as_str(), "seq" | "ts" | "prev" | "event") {
                entry.insert(k, v);
            }
        }
        let mut line = serde_json::to_vec(&Value::Object(entry)).map_err(|e| AuditError::Io {
            path: self.path.clone(),
            error: std::io::Error::other(e),
        })?;
        line.push(b'\n');
        Ok(line)
    }
}
