//! The chain: how entries are hashed, timestamped and checkpointed, and the bytes a node
//! signs (a checkpoint) and a relay countersigns (a witness). Built here only, for the node's
//! writer and verifier and for the relay's witness alike.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

/// The `prev` of the first entry.
pub(crate) const ZERO_HASH: &str =
    "0000000000000000000000000000000000000000000000000000000000000000";

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

pub(crate) fn hex(bytes: &[u8]) -> String {
    nullport_protocol::hex::encode(bytes)
}

pub(crate) fn unhex64(s: &str) -> Option<[u8; 64]> {
    nullport_protocol::hex::decode_array(s)
}

/// The bytes a node signs for a checkpoint (context
/// [`nullport_protocol::domain::AUDIT_CHECKPOINT_V1`]): `"seq:{seq}\nhead:{head}"`.
pub fn checkpoint_body(seq: u64, head: &str) -> Vec<u8> {
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

/// The files of a log, oldest first: rotated ones (`<name>.1`, `<name>.2`, ...) then `<name>`.
pub fn log_files(path: &Path) -> Vec<PathBuf> {
    let mut rotated = rotated_files(path);
    rotated.sort_by_key(|(n, _)| *n);
    let mut files: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    files.push(path.to_owned());
    files
}

pub(crate) fn rotated_files(path: &Path) -> Vec<(u64, PathBuf)> {
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

pub(crate) fn last_line(path: &Path) -> Option<Vec<u8>> {
    let content = std::fs::read(path).ok()?;
    content
        .split(|&b| b == b'\n')
        .rfind(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
}

/// The bytes a relay countersigns when it witnesses `node`'s checkpoint (context
/// [`nullport_protocol::domain::AUDIT_WITNESS_V1`]): `"node:{node}\nseq:{seq}\nhead:{head}"`.
pub fn witness_body(node: &nullport_protocol::NodeId, seq: u64, head: &str) -> Vec<u8> {
    format!("node:{node}\nseq:{seq}\nhead:{head}").into_bytes()
}
