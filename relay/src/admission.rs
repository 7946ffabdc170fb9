//! Who may connect: everyone (`--open`) or the NodeIds of an allowlist file.
//!
//! Allowlist file: one NodeId a line; blank lines and `#` comments are ignored; a trailing
//! comment after a NodeId is allowed. It is re-read on SIGHUP and when its modification time
//! changes; a file that fails to parse leaves the previous list in force (and says why).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use nullport_protocol::NodeId;

use crate::error::Error;

/// The admission policy.
#[derive(Debug)]
pub struct Admission {
    mode: Mode,
    refusals: AtomicU64,
    enroll: std::sync::atomic::AtomicBool,
}

#[derive(Debug)]
enum Mode {
    Open,
    AllowList {
        path: Option<PathBuf>,
        state: RwLock<(HashSet<NodeId>, Option<SystemTime>)>,
    },
}

impl Admission {
    /// Any node with a valid key may connect.
    pub fn open() -> Self {
        Self {
            mode: Mode::Open,
            refusals: AtomicU64::new(0),
            enroll: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Only these NodeIds (a fixed list: for tests and embedding).
    pub fn fixed(ids: impl IntoIterator<Item = NodeId>) -> Self {
        Self {
            mode: Mode::AllowList {
                path: None,
                state: RwLock::new((ids.into_iter().collect(), None)),
            },
            refusals: AtomicU64::new(0),
            enroll: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Only the NodeIds in the file at `path`.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let (ids, mtime) = read_allowlist(path)?;
        Ok(Self {
            mode: Mode::AllowList {
                path: Some(path.to_owned()),
                state: RwLock::new((ids, mtime)),
            },
            refusals: AtomicU64::new(0),
            enroll: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Whether `id` is admitted.
    pub fn admits(&self, id: &NodeId) -> bool {
        match &self.mode {
            Mode::Open => true,
            Mode::AllowList { state, .. } => {
                state.read().map(|s| s.0.contains(id)).unwrap_or(false)
            }
        }
    }

    /// Is this the open mode?
    pub fn is_open(&self) -> bool {
        matches!(self.mode, Mode::Open)
    }

    /// Re-reads the allowlist file. With `only_if_changed`, skips it when the modification
    /// time is unchanged. Returns the number of entries now in force.
    pub fn reload(&self, only_if_changed: bool) -> Result<Option<usize>, Error> {
        let Mode::AllowList {
            path: Some(path),
            state,
        } = &self.mode
        else {
            return Ok(None);
        };
        if only_if_changed {
            let current = std::fs::metadata(path).and_then(|m| m.modified()).ok();
            if state.read().map(|s| s.1 == current).unwrap_or(false) {
                return Ok(None);
            }
        }
        let (ids, mtime) = read_allowlist(path)?;
        let n = ids.len();
        if let Ok(mut s) = state.write() {
            *s = (ids, mtime);
        }
        Ok(Some(n))
    }

    pub(crate) fn count_refusal(&self) {
        self.refusals.fetch_add(1, Ordering::Relaxed);
    }

    /// Lets unknown keys through the TLS handshake so that they can enroll with an invite
    /// (they can do nothing else: their first message must be a valid `Join`).
    pub fn set_enrolling(&self, on: bool) {
        self.enroll.store(on, Ordering::Relaxed);
    }

    /// Whether unknown keys may connect to enroll.
    pub fn enrolling(&self) -> bool {
        self.enroll.load(Ordering::Relaxed) && !self.is_open()
    }

    /// Admits `id` from now on (an enrolled node); appended to the allowlist file if there
    /// is one.
    pub fn add(&self, id: NodeId) -> Result<(), Error> {
        let Mode::AllowList { path, state } = &self.mode else {
            return Ok(());
        };
        if let Some(path) = path {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(path)
                .map_err(|error| Error::Io {
                    what: format!("appending to {}", path.display()),
                    error,
                })?;
            writeln!(f, "{id}  # enrolled with an invite").map_err(|error| Error::Io {
                what: format!("appending to {}", path.display()),
                error,
            })?;
        }
        if let Ok(mut s) = state.write() {
            s.0.insert(id);
            // Keep the file's new mtime from triggering a redundant reload.
            if let Some(p) = path {
                s.1 = std::fs::metadata(p).and_then(|m| m.modified()).ok();
            }
        }
        Ok(())
    }

    /// Stops admitting `id` (a key rotated away); rewrites the allowlist file without it.
    pub fn retire(&self, id: &NodeId) {
        let Mode::AllowList { path, state } = &self.mode else {
            return;
        };
        if let Ok(mut s) = state.write() {
            s.0.remove(id);
        }
        if let Some(path) = path
            && let Ok(text) = std::fs::read_to_string(path)
        {
            let id = id.to_string();
            let kept: String = text
                .lines()
                .filter(|l| l.split('#').next().unwrap_or("").trim() != id)
                .map(|l| format!("{l}\n"))
                .collect();
            let _ = nullport_keyring::fs::write_private(path, kept.as_bytes(), true);
            if let Ok(mut s) = state.write() {
                s.1 = std::fs::metadata(path).and_then(|m| m.modified()).ok();
            }
        }
    }

    /// Nodes refused at the TLS handshake so far.
    pub fn refusals(&self) -> u64 {
        self.refusals.load(Ordering::Relaxed)
    }
}

fn read_allowlist(path: &Path) -> Result<(HashSet<NodeId>, Option<SystemTime>), Error> {
    let text = std::fs::read_to_string(path).map_err(|error| Error::Io {
        what: format!("reading allowlist {}", path.display()),
        error,
    })?;
    let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let mut ids = HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let entry = line.split('#').next().unwrap_or("").trim();
        if entry.is_empty() {
            continue;
        }
        let id = entry.parse::<NodeId>().map_err(|e| Error::AllowList {
            path: path.to_owned(),
            line: i + 1,
            reason: format!("{entry:?}: {e}"),
        })?;
        ids.insert(id);
    }
    Ok((ids, mtime))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nullport_protocol::Identity;

    #[test]
    fn allowlist_file_parses_comments_and_reports_bad_lines() {
        let dir = std::env::temp_dir().join(format!("np-allow-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("allow");
        let a = Identity::from_seed([1; 32]).node_id();
        let b = Identity::from_seed([2; 32]).node_id();
        let _ = std::fs::write(&path, format!("# nodes\n{a}  # laptop\n\n"));
        let adm = Admission::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(adm.admits(&a));
        assert!(!adm.admits(&b));
        let _ = std::fs::write(&path, format!("{a}\n{b}\n"));
        assert_eq!(adm.reload(false).ok().flatten(), Some(2));
        assert!(adm.admits(&b));
        let _ = std::fs::write(&path, format!("{a}\nnot-a-node-id\n"));
        let err = adm
            .reload(false)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.ends_with(":2: \"not-a-node-id\": a NodeId starts with \"np\""),
            "{err}"
        );
        assert!(
            adm.admits(&b),
            "a bad file must leave the previous list in force"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
