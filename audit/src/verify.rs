//! Verification: the first bad line and why, torn writes told apart from tampering, and
//! completeness against a witnessed checkpoint.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use nullport_protocol::{NodeId, domain, identity::verify as verify_sig};
use serde_json::Value;

use crate::chain::{Checkpoint, ZERO_HASH, checkpoint_body, log_files, sha256_hex};
use crate::error::AuditError;

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
            let sig = value["sig"].as_str().and_then(crate::chain::unhex64);
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
