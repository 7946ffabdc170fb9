//! The tamper-evident audit log: JSON lines, each carrying the SHA-256 of the line before it,
//! with checkpoints signed by the node's identity.
//!
//! Line layout (field order is fixed by the writer; verification hashes the raw bytes):
//! ```text
//! {"seq":N,"ts":"RFC 3339 UTC","prev":"<hex SHA-256 of line N-1>","event":"...", ...fields}
//! {"seq":M,"ts":...,"prev":...,"event":"checkpoint","head":"<prev>","node":"np...","sig":"<hex>"}
//! ```
//! - The first line (`seq` 0, `prev` all zeros) is a `log-start` entry naming the node.
//! - A checkpoint signs `"seq:{seq}\nhead:{prev}"` under [`nullport_protocol::domain::AUDIT_CHECKPOINT_V1`];
//!   `prev` commits to every line before it through the chain.
//! - A process killed mid-append leaves a torn last line (no newline). The next writer ends it
//!   with a newline and appends a `recovery` entry naming it; verification reports it as torn,
//!   not as tampering, and the chain continues from the last whole line.
//!
//! [`verify`] names the first bad line and why. Lines after the last checkpoint are not
//! covered by a signature: a truncated tail is only detectable against a witnessed
//! checkpoint (kept by the relay), which [`verify`] checks when given one.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nullport_protocol::{Identity, NodeId, domain, identity::verify as verify_sig};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

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

/// Why the audit log could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// File I/O failed (including a full disk).
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// The disk refused a write; the entry waits in memory and is written, in order, by
    /// the next append or checkpoint that finds room. Nothing is torn.
    #[error("{path}: {queued} audit entries held in memory, not yet on disk: {reason}")]
    Backlog {
        /// The file.
        path: PathBuf,
        /// Entries waiting.
        queued: usize,
        /// The OS error.
        reason: String,
    },
    /// The disk refused writes and the backlog is full: this entry is lost; a `gap` entry
    /// with the count is written once the disk accepts writes again.
    #[error("{path}: audit entry dropped ({lost} since the backlog filled): {reason}")]
    Dropped {
        /// The file.
        path: PathBuf,
        /// Entries lost so far.
        lost: u64,
        /// The OS error.
        reason: String,
    },
    /// The existing log cannot be continued (its last whole line is not an entry).
    #[error("{path}: cannot continue the log: {reason}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// A checkpoint: what a witness countersigns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Its sequence number.
    pub seq: u64,
    /// The chain head it signs (hash of the line before it).
    pub head: String,
    /// The node's signature (hex).
    pub sig: String,
}

/// SHA-256 hex of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    nullport_protocol::hex::encode(bytes)
}

fn unhex64(s: &str) -> Option<[u8; 64]> {
    nullport_protocol::hex::decode_array(s)
}

fn checkpoint_body(seq: u64, head: &str) -> Vec<u8> {
    format!("seq:{seq}\nhead:{head}").into_bytes()
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        d.subsec_micros()
    )
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
    last_checkpoint: Instant,
    latest: Option<Checkpoint>,
    /// Length of the current file: every byte up to here is a whole line.
    bytes: u64,
    /// Lines (with newline) chained but not yet on disk, oldest first.
    backlog: std::collections::VecDeque<Vec<u8>>,
    backlog_bytes: usize,
    /// Entries dropped since the backlog filled (recorded by a `gap` entry).
    lost: u64,
    /// Why the last write failed (while a backlog or loss is outstanding).
    write_error: Option<String>,
}

/// The files of a log, oldest first: rotated ones (`<name>.1`, `<name>.2`, ...) then `<name>`.
pub fn log_files(path: &Path) -> Vec<PathBuf> {
    let mut rotated = rotated_files(path);
    rotated.sort_by_key(|(n, _)| *n);
    let mut files: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    files.push(path.to_owned());
    files
}

fn rotated_files(path: &Path) -> Vec<(u64, PathBuf)> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Vec::new();
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    read.flatten()
        .filter_map(|e| {
            let file_name = e.file_name();
            let n = file_name
                .to_str()?
                .strip_prefix(name)?
                .strip_prefix('.')?
                .parse::<u64>()
                .ok()?;
            Some((n, e.path()))
        })
        .collect()
}

fn last_line(path: &Path) -> Option<Vec<u8>> {
    let content = std::fs::read(path).ok()?;
    content
        .split(|&b| b == b'\n')
        .rfind(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
}

impl AuditWriter {
    /// Opens (or creates, mode 0600) the log at `path`, continuing its chain. A torn last
    /// line is ended and followed by a `recovery` entry.
    pub fn open(
        path: &Path,
        identity: Identity,
        config: AuditConfig,
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
            last_checkpoint: Instant::now(),
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
                    reason: "empty rotated file".into(),
                })?;
                let value: Value =
                    serde_json::from_slice(&last).map_err(|e| AuditError::Unreadable {
                        path: previous.clone(),
                        reason: format!("last entry: {e}"),
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
            writer.append("log-start", fields)?;
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
            reason: "no whole entry".into(),
        })?;
        let value: Value = serde_json::from_slice(last).map_err(|e| AuditError::Unreadable {
            path: path.to_owned(),
            reason: format!("last entry: {e}"),
        })?;
        let seq = value["seq"]
            .as_u64()
            .ok_or_else(|| AuditError::Unreadable {
                path: path.to_owned(),
                reason: "last entry has no seq".into(),
            })?;
        writer.next_seq = seq + 1;
        writer.prev = sha256_hex(last);
        if let Some(torn) = torn_line {
            writer.file.write_all(b"\n").map_err(io)?;
            writer.bytes += 1;
            let mut fields = Map::new();
            fields.insert("torn_line".into(), Value::from(whole.len() as u64));
            fields.insert("torn_sha256".into(), Value::String(sha256_hex(torn)));
            writer.append("recovery", fields)?;
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

    /// Appends one event (`fields` must not use `seq`, `ts`, `prev` or `event`); writes a
    /// checkpoint when one is due. Returns the new entry's sequence number.
    pub fn append(&mut self, event: &str, fields: Map<String, Value>) -> Result<u64, AuditError> {
        let seq = self.write_entry(event, fields)?;
        if event != "checkpoint" {
            self.since_checkpoint += 1;
            let due = self.since_checkpoint >= self.config.checkpoint_every
                || self.last_checkpoint.elapsed() >= self.config.checkpoint_interval;
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
            reason: self.write_error.clone().unwrap_or_default(),
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
                self.write_error = Some(e.to_string());
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

    /// Writes a signed checkpoint now (also call at shutdown). With a backlog the checkpoint
    /// is chained and queued ([`AuditWriter::latest_checkpoint`] has it) and this reports
    /// [`AuditError::Backlog`].
    pub fn checkpoint(&mut self) -> Result<Checkpoint, AuditError> {
        let cp = self.checkpoint_inner()?;
        self.backlog_error()?;
        Ok(cp)
    }

    fn checkpoint_inner(&mut self) -> Result<Checkpoint, AuditError> {
        let seq = self.next_seq;
        let head = self.prev.clone();
        let sig = hex(&self
            .identity
            .sign(domain::AUDIT_CHECKPOINT_V1, &checkpoint_body(seq, &head)));
        let mut fields = Map::new();
        fields.insert("head".into(), Value::String(head.clone()));
        fields.insert(
            "node".into(),
            Value::String(self.identity.node_id().to_string()),
        );
        fields.insert("sig".into(), Value::String(sig.clone()));
        self.write_entry("checkpoint", fields)?;
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
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
                Value::String(self.write_error.clone().unwrap_or_default()),
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
                reason: self.write_error.clone().unwrap_or_default(),
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
        entry.insert("ts".into(), Value::String(rfc3339(SystemTime::now())));
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

/// What is wrong at one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file (the current log or a rotated one).
    pub file: PathBuf,
    /// 1-based line number in that file.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Entries read.
    pub entries: u64,
    /// Valid signed checkpoints.
    pub checkpoints: u64,
    /// The last valid checkpoint.
    pub last_checkpoint: Option<Checkpoint>,
    /// Entries after the last checkpoint (not covered by a signature).
    pub unsigned_tail: u64,
    /// Torn lines found (with their recovery entry), numbered across all files: not tampering.
    pub torn: Vec<usize>,
    /// The same, as (file, line in file).
    pub torn_at: Vec<(PathBuf, usize)>,
    /// The first problem, if any (verification stops there).
    pub problem: Option<Problem>,
    /// Whether the witnessed checkpoint (if one was given) is in the log.
    pub witness: Option<Result<(), String>>,
}

impl Report {
    /// True when nothing is wrong (a torn line with its recovery entry is not wrong).
    pub fn ok(&self) -> bool {
        self.problem.is_none()
            && self.witness.as_ref().is_none_or(Result::is_ok)
            && self.checkpoints > 0
    }
}

/// Verifies the log at `path` against the node's key, and optionally against a checkpoint
/// a witness holds.
pub fn verify(
    path: &Path,
    node: &NodeId,
    witnessed: Option<&Checkpoint>,
) -> Result<Report, AuditError> {
    let (mut report, starts) = verify_global(path, node, witnessed)?;
    // Translate global line numbers into (file, line in file).
    let locate = |global: usize| -> (PathBuf, usize) {
        let (start, file) = starts
            .iter()
            .rev()
            .find(|(s, _)| *s < global)
            .cloned()
            .unwrap_or((0, path.to_owned()));
        (file, global - start)
    };
    if let Some(p) = report.problem.as_mut() {
        let (file, line) = locate(p.line);
        p.file = file;
        p.line = line;
    }
    report.torn_at = report.torn.iter().map(|&l| locate(l)).collect();
    Ok(report)
}

fn bytecount_lines(bytes: &[u8]) -> usize {
    let newlines = bytes.iter().filter(|&&b| b == b'\n').count();
    newlines + usize::from(!bytes.is_empty() && !bytes.ends_with(b"\n"))
}

fn verify_global(
    path: &Path,
    node: &NodeId,
    witnessed: Option<&Checkpoint>,
) -> Result<(Report, Vec<(usize, PathBuf)>), AuditError> {
    // Read the rotated files and the current one as one stream, remembering where each
    // file starts so problems are named by file and line.
    let files = log_files(path);
    let mut starts: Vec<(usize, PathBuf)> = Vec::new();
    let mut chained: Box<dyn Read> = Box::new(std::io::empty());
    let mut total_lines = 0usize;
    for f in &files {
        let bytes = match std::fs::read(f) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && f != path => continue,
            Err(error) => {
                return Err(AuditError::Io {
                    path: f.clone(),
                    error,
                });
            }
        };
        starts.push((total_lines, f.clone()));
        total_lines += bytecount_lines(&bytes);
        chained = Box::new(chained.chain(std::io::Cursor::new(bytes)));
    }
    let mut reader = BufReader::new(chained);
    let mut report = Report {
        entries: 0,
        checkpoints: 0,
        last_checkpoint: None,
        unsigned_tail: 0,
        torn: Vec::new(),
        torn_at: Vec::new(),
        problem: None,
        witness: None,
    };
    let mut prev = ZERO_HASH.to_owned();
    let mut expected_seq = 0u64;
    let mut pending_torn: Option<(usize, String)> = None;
    let mut line_no = 0usize;
    let mut buf = Vec::new();
    let mut witness_seen = false;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|error| AuditError::Io {
                path: path.to_owned(),
                error,
            })?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let complete = buf.ends_with(b"\n");
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let fail = |reason: String| Problem {
            file: PathBuf::new(),
            line: line_no,
            reason,
        };
        let value: Value = match serde_json::from_slice(line) {
            Ok(v) => v,
            Err(_) if !complete => {
                // A torn last line with nothing after it: the writer crashed mid-append.
                report.torn.push(line_no);
                break;
            }
            Err(_) => {
                // Torn earlier, and then recovered? Decided by the next line.
                pending_torn = Some((line_no, sha256_hex(line)));
                continue;
            }
        };
        let seq = value["seq"].as_u64();
        let event = value["event"].as_str().unwrap_or("");
        if let Some((torn_line, torn_hash)) = pending_torn.take() {
            let names_it = event == "recovery"
                && value["torn_line"].as_u64() == Some(torn_line as u64)
                && value["torn_sha256"].as_str() == Some(&torn_hash);
            if !names_it {
                report.problem = Some(Problem {
                    file: PathBuf::new(),
                    line: torn_line,
                    reason: "not a valid entry (edited or corrupted)".into(),
                });
                return Ok((report, starts));
            }
            report.torn.push(torn_line);
        }
        if seq != Some(expected_seq) {
            report.problem = Some(fail(match seq {
                Some(s) if s > expected_seq => format!(
                    "entries {expected_seq}..{} are missing (deleted or reordered)",
                    s - 1
                ),
                Some(s) => format!(
                    "sequence {s} out of order (expected {expected_seq}): entries reordered or replayed"
                ),
                None => "entry without a sequence number".into(),
            }));
            return Ok((report, starts));
        }
        if value["prev"].as_str() != Some(prev.as_str()) {
            report.problem = Some(fail(format!(
                "hash chain broken: the entry before line {line_no} was changed, or entries were removed or reordered"
            )));
            return Ok((report, starts));
        }
        if event == "checkpoint" {
            let head = value["head"].as_str().unwrap_or("");
            let sig = value["sig"].as_str().and_then(unhex64);
            let signed = head == prev
                && value["node"].as_str() == Some(node.to_string().as_str())
                && sig.is_some_and(|s| {
                    verify_sig(
                        node,
                        domain::AUDIT_CHECKPOINT_V1,
                        &checkpoint_body(expected_seq, head),
                        &s,
                    )
                    .is_ok()
                });
            if !signed {
                report.problem = Some(fail(
                    "checkpoint signature invalid: the log was rewritten without the node's key"
                        .into(),
                ));
                return Ok((report, starts));
            }
            report.checkpoints += 1;
            report.unsigned_tail = 0;
            let cp = Checkpoint {
                seq: expected_seq,
                head: head.to_owned(),
                sig: value["sig"].as_str().unwrap_or("").to_owned(),
            };
            if witnessed.is_some_and(|w| w == &cp) {
                witness_seen = true;
            }
            report.last_checkpoint = Some(cp);
        } else {
            report.unsigned_tail += 1;
        }
        report.entries += 1;
        expected_seq += 1;
        prev = sha256_hex(line);
    }
    if let Some((torn_line, _)) = pending_torn {
        report.problem = Some(Problem {
            file: PathBuf::new(),
            line: torn_line,
            reason: "not a valid entry (edited or corrupted)".into(),
        });
        return Ok((report, starts));
    }
    if let Some(w) = witnessed {
        report.witness = Some(if witness_seen {
            Ok(())
        } else if w.seq >= expected_seq {
            Err(format!(
                "the witness holds checkpoint {} but the log ends at entry {}: it was truncated",
                w.seq,
                expected_seq.saturating_sub(1)
            ))
        } else {
            Err(format!(
                "the witnessed checkpoint {} is not in the log: it was rewritten or rolled back",
                w.seq
            ))
        });
    }
    if report.problem.is_none() && report.checkpoints == 0 {
        report.problem = Some(Problem {
            file: PathBuf::new(),
            line: line_no.max(1),
            reason: "no signed checkpoint: integrity cannot be proven".into(),
        });
    }
    Ok((report, starts))
}

/// Reads the entries of the log at `path` (rotated files first), skipping lines that are
/// not entries.
pub fn entries(path: &Path) -> Result<Vec<Value>, AuditError> {
    let mut out = Vec::new();
    for f in log_files(path) {
        let bytes = match std::fs::read(&f) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && f != path => continue,
            Err(error) => return Err(AuditError::Io { path: f, error }),
        };
        out.extend(
            bytes
                .split(|&b| b == b'\n')
                .filter_map(|l| serde_json::from_slice(l).ok()),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(i: u64) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("caller".into(), Value::String(format!("np-test-{i}")));
        m.insert("outcome".into(), Value::String("allowed".into()));
        m
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
        let mut w = AuditWriter::open(&path, identity, config).unwrap();
        for i in 0..n {
            w.append("mcp", event(i)).unwrap();
        }
        let cp = w.checkpoint().unwrap();
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
        let mut w = AuditWriter::open(&path, Identity::from_seed([7; 32]), config).unwrap();
        w.append("mcp", event(100)).unwrap();
        w.checkpoint().unwrap();
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
        let mut w = AuditWriter::open(&path, identity, config).unwrap();
        for i in 0..100 {
            w.append("mcp", event(i)).unwrap();
        }
        w.checkpoint().unwrap();
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
        let mut w = AuditWriter::open(&path, Identity::from_seed([7; 32]), config).unwrap();
        w.append("mcp", event(1000)).unwrap();
        w.checkpoint().unwrap();
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
}
