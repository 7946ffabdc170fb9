//! Who may connect: one decision, [`Admission::check`], used by the TLS verifier (inside the
//! handshake), by the accept path (after it), before every dial, and whenever what it depends
//! on changes (an allowlist reload, an admin revocation, a rotation), so that a key that is no
//! longer admitted loses its link and its splices at once.
//!
//! Two layers:
//! - **barred keys**, refused whatever else is said: keys revoked by the network admin (the
//!   relay's own key signs those lists) and keys retired by a rotation. Revocation and
//!   retirement beat every grant, including an entry in the allowlist or an invite.
//! - the **mode**: everyone (`--open`) or the NodeIds of an allowlist file (one NodeId a
//!   line; blank lines and `#` comments are ignored; a trailing comment after a NodeId is
//!   allowed). The file is re-read on SIGHUP and when its modification time changes; a file
//!   that fails to parse leaves the previous list in force (and says why).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::SystemTime;

use nullport_protocol::NodeId;
use nullport_protocol::relay_link::{LinkErrorCode, close_code};

use crate::error::Error;

/// Rotations followed back from a key at most (a longer chain is cut there).
const MAX_LINEAGE: usize = 16;

/// Why a key is not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// Not on the allowlist.
    #[error("not on the relay's allowlist")]
    NotListed,
    /// Revoked by the network admin.
    #[error("key revoked by the network admin")]
    Revoked,
    /// Rotated away: a newer key replaced it.
    #[error("key retired by a rotation")]
    Retired,
}

impl Refusal {
    /// The QUIC close code that tells a node why its link ends.
    pub fn close_code(self) -> u32 {
        match self {
            Refusal::NotListed => close_code::NOT_ADMITTED,
            Refusal::Revoked => close_code::KEY_REVOKED,
            Refusal::Retired => close_code::KEY_RETIRED,
        }
    }

    /// The refusal code for a request on the link.
    pub fn link_code(self) -> LinkErrorCode {
        match self {
            Refusal::NotListed => LinkErrorCode::Refused,
            Refusal::Revoked => LinkErrorCode::KeyRevoked,
            Refusal::Retired => LinkErrorCode::KeyRetired,
        }
    }
}

/// The admission policy.
#[derive(Debug)]
pub struct Admission {
    mode: Mode,
    revoked: RwLock<HashSet<NodeId>>,
    /// Rotations: old -> new, and new -> old (a key inherits the revocation of the keys it
    /// was rotated from).
    rotated: RwLock<(HashMap<NodeId, NodeId>, HashMap<NodeId, NodeId>)>,
    /// Members of the fleet's shared store (`--store etcd://`): keys enrolled with an invite
    /// or rotated to through any relay, admitted in allowlist mode like the file's entries.
    members: RwLock<HashSet<NodeId>>,
    refusals: AtomicU64,
    enroll: AtomicBool,
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
    fn with_mode(mode: Mode) -> Self {
        Self {
            mode,
            revoked: RwLock::default(),
            rotated: RwLock::default(),
            members: RwLock::default(),
            refusals: AtomicU64::new(0),
            enroll: AtomicBool::new(false),
        }
    }

    /// Any node with a valid key may connect (barred keys excepted).
    pub fn open() -> Self {
        Self::with_mode(Mode::Open)
    }

    /// Only these NodeIds (a fixed list: for tests and embedding).
    pub fn fixed(ids: impl IntoIterator<Item = NodeId>) -> Self {
        Self::with_mode(Mode::AllowList {
            path: None,
            state: RwLock::new((ids.into_iter().collect(), None)),
        })
    }

    /// Only the NodeIds in the file at `path`.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let (ids, mtime) = read_allowlist(path)?;
        Ok(Self::with_mode(Mode::AllowList {
            path: Some(path.to_owned()),
            state: RwLock::new((ids, mtime)),
        }))
    }

    /// The admission decision for `id`: barred keys first (revoked, itself or through a key
    /// it was rotated from; rotated away), then the mode.
    pub fn check(&self, id: &NodeId) -> Result<(), Refusal> {
        let (Ok(revoked), Ok(rotated)) = (self.revoked.read(), self.rotated.read()) else {
            return Err(Refusal::Revoked);
        };
        let mut key = *id;
        for _ in 0..MAX_LINEAGE {
            if revoked.contains(&key) {
                return Err(Refusal::Revoked);
            }
            match rotated.1.get(&key) {
                Some(old) => key = *old,
                None => break,
            }
        }
        if rotated.0.contains_key(id) {
            return Err(Refusal::Retired);
        }
        drop((revoked, rotated));
        match &self.mode {
            Mode::Open => Ok(()),
            Mode::AllowList { state, .. } => {
                if state.read().map(|s| s.0.contains(id)).unwrap_or(false)
                    || self.members.read().map(|m| m.contains(id)).unwrap_or(false)
                {
                    Ok(())
                } else {
                    Err(Refusal::NotListed)
                }
            }
        }
    }

    /// Whether `id` is admitted now.
    pub fn admits(&self, id: &NodeId) -> bool {
        self.check(id).is_ok()
    }

    /// Whether `id` may complete the TLS handshake: admitted; unknown while enrolling (to
    /// send a `Join`); or barred (to be told, by the close code right after, that its key is
    /// revoked or retired: it is refused everything else). An unknown key is refused inside
    /// the handshake and learns nothing.
    pub fn may_handshake(&self, id: &NodeId) -> bool {
        match self.check(id) {
            Ok(()) | Err(Refusal::Revoked | Refusal::Retired) => true,
            Err(Refusal::NotListed) => self.enrolling(),
        }
    }

    /// Is this the open mode?
    pub fn is_open(&self) -> bool {
        matches!(self.mode, Mode::Open)
    }

    /// Re-reads the allowlist file. With `only_if_changed`, skips it when the modification
    /// time is unchanged. Returns the number of entries now in force (None: not re-read).
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

    /// Replaces the allowlist of a fixed (file-less) admission: for tests and embedding.
    pub fn set_fixed(&self, ids: impl IntoIterator<Item = NodeId>) {
        if let Mode::AllowList { path: None, state } = &self.mode
            && let Ok(mut s) = state.write()
        {
            s.0 = ids.into_iter().collect();
        }
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

    /// Admits `id` from now on, appended to the allowlist file (if there is one) with
    /// `label` as its comment: how it got there ("enrolled with invite ...", "rotated from
    /// ..."). A barred key is refused.
    pub fn add(&self, id: NodeId, label: &str) -> Result<(), AddError> {
        match self.check(&id) {
            Ok(()) | Err(Refusal::NotListed) => {}
            Err(barred) => return Err(AddError::Barred(barred)),
        }
        let Mode::AllowList { path, state } = &self.mode else {
            return Ok(());
        };
        let Some(path) = path else {
            if let Ok(mut s) = state.write() {
                s.0.insert(id);
            }
            return Ok(());
        };
        use std::io::{Read, Seek, SeekFrom, Write};
        let label = label.replace(['\n', '\r'], " ");
        let io = |error| {
            AddError::Io(Error::Io {
                what: format!("appending to {}", path.display()),
                error,
            })
        };
        // Hold the state lock across the write and the re-read, so a change the operator
        // made to the file meanwhile is read, never masked by a recorded mtime.
        let Ok(mut s) = state.write() else {
            return Ok(());
        };
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        // A file that does not end with a newline gets one first, so the entry is a line.
        let len = f.metadata().map_err(io)?.len();
        let mut last = [0u8; 1];
        if len > 0 {
            f.seek(SeekFrom::Start(len - 1)).map_err(io)?;
            f.read_exact(&mut last).map_err(io)?;
        }
        let sep = if len > 0 && last[0] != b'\n' {
            "\n"
        } else {
            ""
        };
        writeln!(f, "{sep}{id}  # {label}").map_err(io)?;
        match read_allowlist(path) {
            Ok(read) => *s = read,
            Err(e) => {
                // The operator's edit does not parse: keep the list in force plus this key,
                // and leave the mtime unrecorded so the next reload reports the error.
                tracing::error!(
                    "allowlist {} does not parse after an append: {e}",
                    path.display()
                );
                s.0.insert(id);
            }
        }
        Ok(())
    }

    /// Bars `id` for good (a key rotated away to `new`) and rewrites the allowlist file
    /// without it. `new` inherits any revocation of `id`.
    pub fn retire(&self, id: &NodeId, new: &NodeId) {
        if let Ok(mut r) = self.rotated.write() {
            r.0.insert(*id, *new);
            r.1.insert(*new, *id);
        }
        if let Ok(mut m) = self.members.write() {
            m.remove(id);
        }
        let Mode::AllowList { path, state } = &self.mode else {
            return;
        };
        if let Ok(mut s) = state.write() {
            s.0.remove(id);
        }
        let Some(path) = path else {
            return;
        };
        let Ok(mut s) = state.write() else {
            return;
        };
        if let Ok(text) = std::fs::read_to_string(path) {
            let id = id.to_string();
            let kept: String = text
                .lines()
                .filter(|l| l.split('#').next().unwrap_or("").trim() != id)
                .map(|l| format!("{l}\n"))
                .collect();
            if kept != text
                && let Err(e) = nullport_keyring::fs::write_private(path, kept.as_bytes(), true)
            {
                tracing::error!("removing a retired key from {}: {e}", path.display());
            }
        }
        // Read back what the file says now (an operator's edit included).
        if let Ok(read) = read_allowlist(path) {
            *s = read;
        }
    }

    /// Admits `id` as a member of the fleet's shared store (from now on, in allowlist mode;
    /// the allowlist file is left alone). A barred key is refused.
    pub fn add_member(&self, id: NodeId) -> Result<(), Refusal> {
        match self.check(&id) {
            Ok(()) | Err(Refusal::NotListed) => {}
            Err(barred) => return Err(barred),
        }
        if let Ok(mut m) = self.members.write() {
            m.insert(id);
        }
        Ok(())
    }

    /// Stops admitting `id` as a member of the shared store (it was removed there); an entry
    /// in the allowlist file still admits it.
    pub fn remove_member(&self, id: &NodeId) {
        if let Ok(mut m) = self.members.write() {
            m.remove(id);
        }
    }

    /// Sets the keys the network admin revoked (the admin's newest list replaces the last).
    pub fn set_revoked(&self, keys: impl IntoIterator<Item = NodeId>) {
        if let Ok(mut r) = self.revoked.write() {
            *r = keys.into_iter().collect();
        }
    }

    /// Nodes refused at the TLS handshake so far.
    pub fn refusals(&self) -> u64 {
        self.refusals.load(Ordering::Relaxed)
    }
}

/// Why a key could not be added to the allowlist.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AddError {
    /// The key is revoked or retired.
    #[error(transparent)]
    Barred(Refusal),
    /// The allowlist file could not be written.
    #[error(transparent)]
    Io(Error),
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
        let id = entry.parse::<NodeId>().map_err(|error| Error::AllowList {
            path: path.to_owned(),
            line: i + 1,
            entry: entry.to_owned(),
            error,
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
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("allow");
        let a = Identity::from_seed([1; 32]).node_id();
        let b = Identity::from_seed([2; 32]).node_id();
        let _ = std::fs::write(&path, format!("# nodes\n{a}  # laptop\n\n"));
        let adm = Admission::from_file(&path).unwrap();
        assert!(adm.admits(&a));
        assert_eq!(adm.check(&b), Err(Refusal::NotListed));
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
    }

    #[test]
    fn barred_keys_beat_the_allowlist_the_open_mode_and_enrollment() {
        let a = Identity::from_seed([1; 32]).node_id();
        let b = Identity::from_seed([2; 32]).node_id();
        let c = Identity::from_seed([3; 32]).node_id();
        let listed = Admission::fixed([a, b]);
        listed.set_enrolling(true);
        listed.set_revoked([a]);
        listed.retire(&b, &Identity::from_seed([4; 32]).node_id());
        assert_eq!(listed.check(&a), Err(Refusal::Revoked));
        assert_eq!(listed.check(&b), Err(Refusal::Retired));
        assert!(listed.may_handshake(&a), "barred keys hear why");
        assert!(listed.may_handshake(&c), "unknown keys may enroll");
        listed.set_enrolling(false);
        assert!(!listed.may_handshake(&c), "unknown keys learn nothing");
        assert!(matches!(
            listed.add(a, "enrolled"),
            Err(AddError::Barred(Refusal::Revoked))
        ));
        assert!(matches!(
            listed.add(b, "rotated"),
            Err(AddError::Barred(Refusal::Retired))
        ));
        let open = Admission::open();
        open.set_revoked([c]);
        assert_eq!(open.check(&c), Err(Refusal::Revoked));
        assert!(open.admits(&a));
        // Revocation follows rotations: c rotated to d before it was revoked; d is barred.
        let d = Identity::from_seed([4; 32]).node_id();
        let later = Admission::open();
        later.retire(&c, &d);
        assert!(later.admits(&d));
        later.set_revoked([c]);
        assert_eq!(later.check(&d), Err(Refusal::Revoked));
    }

    #[test]
    fn an_append_never_joins_the_last_line_and_keeps_the_operators_edits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("allow");
        let a = Identity::from_seed([1; 32]).node_id();
        let b = Identity::from_seed([2; 32]).node_id();
        let c = Identity::from_seed([3; 32]).node_id();
        // No newline at the end, and a comment on the last line.
        std::fs::write(&path, format!("{a}\n{b}  # laptop")).unwrap();
        let adm = Admission::from_file(&path).unwrap();
        // The operator removes b; before the relay polls the file, a node enrolls.
        std::fs::write(&path, format!("{a}  # only a now")).unwrap();
        adm.add(c, "enrolled with invite 00").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            format!("{a}  # only a now\n{c}  # enrolled with invite 00\n")
        );
        assert!(adm.admits(&a) && adm.admits(&c));
        assert_eq!(
            adm.check(&b),
            Err(Refusal::NotListed),
            "the operator's removal was lost"
        );
    }

    #[test]
    fn members_of_the_shared_store_are_admitted_beside_the_file_and_never_over_a_bar() {
        let (a, b, c) = (
            Identity::from_seed([1; 32]).node_id(),
            Identity::from_seed([2; 32]).node_id(),
            Identity::from_seed([3; 32]).node_id(),
        );
        let adm = Admission::fixed([a]);
        assert_eq!(adm.check(&b), Err(Refusal::NotListed));
        assert_eq!(adm.add_member(b), Ok(()));
        assert!(adm.admits(&a) && adm.admits(&b));
        adm.remove_member(&b);
        assert_eq!(adm.check(&b), Err(Refusal::NotListed));
        // Removing a member never removes a file entry; a barred key never becomes one.
        adm.remove_member(&a);
        assert!(adm.admits(&a));
        adm.set_revoked([c]);
        assert_eq!(adm.add_member(c), Err(Refusal::Revoked));
        assert_eq!(adm.check(&c), Err(Refusal::Revoked));
        // A rotation retires a member too.
        assert_eq!(adm.add_member(b), Ok(()));
        adm.retire(&b, &Identity::from_seed([4; 32]).node_id());
        assert_eq!(adm.check(&b), Err(Refusal::Retired));
    }

    #[test]
    fn added_keys_carry_their_label_and_retired_ones_leave_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("allow");
        let a = Identity::from_seed([1; 32]).node_id();
        let b = Identity::from_seed([2; 32]).node_id();
        let _ = std::fs::write(&path, format!("{a}\n"));
        let adm = Admission::from_file(&path).unwrap();
        adm.add(b, &format!("rotated from {a}")).unwrap();
        adm.retire(&a, &b);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(text, format!("{b}  # rotated from {a}\n"));
        assert_eq!(adm.reload(false).ok().flatten(), Some(1));
        assert_eq!(adm.check(&a), Err(Refusal::Retired));
    }
}
