//! What the relay keeps across restarts (with `--state-dir`), and its files:
//!
//! | file | what | written |
//! | --- | --- | --- |
//! | `witnessed.json` | the newest countersigned audit checkpoint of each node | after each witness |
//! | `revocations.json` | the newest revocation list of each signer | after each new list |
//! | `rotations.json` | the first rotation of each old key | after each rotation |
//! | `invites-used.json` | how often each invite was used | before the enrollment is answered |
//! | `admin-revocations.json` | the network admin's list (signed with the relay key) | by `nullport-relay revoke` |
//!
//! Every write is atomic (temp file, fsync, rename) and happens on a blocking thread, never on
//! the async runtime. Most files are written by a background task shortly after a change
//! (several changes coalesce into one write); the invite counts are written while the
//! invite's lock is held and before the node is told it enrolled, so a use is never lost.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use nullport_protocol::NodeId;
use nullport_protocol::relay_link::{SignedRevocations, SignedRotation, WitnessedCheckpoint};
use tokio::sync::Notify;

use crate::error::StateError;

/// The file the network admin's revocation list lives in (inside the state directory).
pub const ADMIN_REVOCATIONS_FILE: &str = "admin-revocations.json";

/// The relay's persistent state.
pub(crate) struct Store {
    dir: Option<PathBuf>,
    pub(crate) witnessed: DashMap<NodeId, WitnessedCheckpoint>,
    /// The newest list of each signer, with its version.
    pub(crate) revocations: DashMap<NodeId, (u64, SignedRevocations)>,
    /// The first rotation of each old key.
    pub(crate) rotations: DashMap<NodeId, SignedRotation>,
    invite_uses: tokio::sync::Mutex<HashMap<[u8; 16], u32>>,
    dirty: [AtomicBool; 3],
    changed: Notify,
}

/// Which coalesced file a change touches.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Part {
    Witnessed = 0,
    Revocations = 1,
    Rotations = 2,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .field("lists", &self.revocations.len())
            .field("rotations", &self.rotations.len())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Loads the state kept in `dir` (nothing: memory only). Unreadable files are logged and
    /// start empty; entries whose signatures do not verify are dropped.
    pub(crate) async fn load(dir: Option<PathBuf>) -> Store {
        let loaded = match dir.clone() {
            Some(dir) => tokio::task::spawn_blocking(move || Loaded::read(&dir))
                .await
                .unwrap_or_default(),
            None => Loaded::default(),
        };
        Store {
            dir,
            witnessed: loaded.witnessed.into_iter().collect(),
            revocations: loaded.revocations.into_iter().collect(),
            rotations: loaded.rotations.into_iter().collect(),
            invite_uses: tokio::sync::Mutex::new(loaded.invite_uses),
            dirty: Default::default(),
            changed: Notify::new(),
        }
    }

    /// The state directory.
    pub(crate) fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Marks `part` as changed; the persister writes it soon.
    pub(crate) fn touch(&self, part: Part) {
        if self.dir.is_some() {
            self.dirty[part as usize].store(true, Ordering::Release);
            self.changed.notify_one();
        }
    }

    /// Counts one use of invite `id` (at most `uses`), persisting the count before it
    /// returns: two nodes racing for a one-time invite cannot both win, and a crash right
    /// after cannot give the use back. A count that cannot be written refuses the use.
    pub(crate) async fn use_invite(&self, id: [u8; 16], uses: u32) -> Result<(), InviteRefusal> {
        let mut counts = self.invite_uses.lock().await;
        let used = counts.get(&id).copied().unwrap_or(0);
        if used >= uses {
            return Err(InviteRefusal::Used);
        }
        counts.insert(id, used + 1);
        if let Some(path) = self.dir.as_ref().map(|d| d.join("invites-used.json")) {
            let entries: Vec<(String, u32)> = counts
                .iter()
                .map(|(k, v)| (nullport_protocol::hex::encode(k), *v))
                .collect();
            let written = tokio::task::spawn_blocking(move || write_json(&path, &entries)).await;
            if !matches!(written, Ok(Ok(()))) {
                counts.insert(id, used);
                tracing::error!("could not record an invite use; refusing it: {written:?}");
                return Err(InviteRefusal::NotRecorded);
            }
        }
        Ok(())
    }
}

/// Why an invite use was refused by the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InviteRefusal {
    /// Every use is taken.
    Used,
    /// The count could not be persisted (fail closed).
    NotRecorded,
}

/// Writes changed parts of `store` until the store is dropped (coalescing changes that come
/// within 50 ms of each other).
pub(crate) async fn persist(store: Arc<Store>) {
    let Some(dir) = store.dir.clone() else {
        return;
    };
    loop {
        store.changed.notified().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        for part in [Part::Witnessed, Part::Revocations, Part::Rotations] {
            if !store.dirty[part as usize].swap(false, Ordering::AcqRel) {
                continue;
            }
            let (name, bytes) = match part {
                Part::Witnessed => {
                    let all: BTreeMap<String, WitnessedCheckpoint> = store
                        .witnessed
                        .iter()
                        .map(|e| (e.key().to_string(), e.value().clone()))
                        .collect();
                    ("witnessed.json", serde_json::to_vec(&all))
                }
                Part::Revocations => {
                    let all: Vec<SignedRevocations> = store
                        .revocations
                        .iter()
                        .map(|e| e.value().1.clone())
                        .collect();
                    ("revocations.json", serde_json::to_vec(&all))
                }
                Part::Rotations => {
                    let all: Vec<SignedRotation> =
                        store.rotations.iter().map(|e| e.value().clone()).collect();
                    ("rotations.json", serde_json::to_vec(&all))
                }
            };
            let path = dir.join(name);
            let written = match bytes {
                Ok(bytes) => tokio::task::spawn_blocking(move || write_private(&path, &bytes))
                    .await
                    .map_err(StateError::from)
                    .and_then(|r| r),
                Err(error) => Err(StateError::Json { path, error }),
            };
            if let Err(e) = written {
                tracing::error!("saving {name}: {e}");
                store.dirty[part as usize].store(true, Ordering::Release);
            }
        }
    }
}

fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), StateError> {
    let bytes = serde_json::to_vec(value).map_err(|error| StateError::Json {
        path: path.to_owned(),
        error,
    })?;
    write_private(path, &bytes)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    nullport_keyring::fs::write_private(path, bytes, true).map_err(|error| match error {
        nullport_keyring::Error::Io { path, error } => StateError::Io { path, error },
        error => StateError::Write(error),
    })
}

/// What the files held at start.
#[derive(Default)]
struct Loaded {
    witnessed: Vec<(NodeId, WitnessedCheckpoint)>,
    revocations: Vec<(NodeId, (u64, SignedRevocations))>,
    rotations: Vec<(NodeId, SignedRotation)>,
    invite_uses: HashMap<[u8; 16], u32>,
}

impl Loaded {
    fn read(dir: &Path) -> Loaded {
        let mut loaded = Loaded::default();
        if let Some(entries) =
            read_json::<BTreeMap<String, WitnessedCheckpoint>>(dir, "witnessed.json")
        {
            loaded.witnessed = entries
                .into_iter()
                .filter_map(|(id, cp)| Some((id.parse().ok()?, cp)))
                .collect();
        }
        for list in read_json::<Vec<SignedRevocations>>(dir, "revocations.json").unwrap_or_default()
        {
            if let Ok(parsed) = nullport_keyring::revocation::verify_signed(&list) {
                loaded
                    .revocations
                    .push((parsed.signer, (parsed.version, list)));
            }
        }
        for r in read_json::<Vec<SignedRotation>>(dir, "rotations.json").unwrap_or_default() {
            if let Ok(parsed) = nullport_keyring::rotation::verify_signed(&r) {
                loaded.rotations.push((parsed.old, r));
            }
        }
        for (id, n) in read_json::<Vec<(String, u32)>>(dir, "invites-used.json").unwrap_or_default()
        {
            if let Some(id) = nullport_protocol::hex::decode_array::<16>(&id) {
                loaded.invite_uses.insert(id, n);
            }
        }
        loaded
    }
}

fn read_json<T: serde::de::DeserializeOwned>(dir: &Path, name: &str) -> Option<T> {
    let path = dir.join(name);
    match std::fs::read(&path) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::error!("{}: unreadable, starting without it: {e}", path.display());
                None
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::error!("{}: {e}", path.display());
            None
        }
    }
}

/// Reads the network admin's revocation list from `dir` (none yet: `Ok(None)`); it must be
/// signed by `admin`.
pub fn read_admin_list(
    dir: &Path,
    admin: &NodeId,
) -> Result<
    Option<(
        nullport_keyring::revocation::RevocationList,
        SignedRevocations,
    )>,
    StateError,
> {
    let path = dir.join(ADMIN_REVOCATIONS_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(StateError::Io { path, error }),
    };
    let signed: SignedRevocations = match serde_json::from_slice(&bytes) {
        Ok(signed) => signed,
        Err(error) => return Err(StateError::Json { path, error }),
    };
    let list = match nullport_keyring::revocation::verify_signed(&signed) {
        Ok(list) => list,
        Err(error) => return Err(StateError::Signature { path, error }),
    };
    if list.signer != *admin {
        return Err(StateError::WrongSigner {
            path,
            signer: list.signer,
            admin: *admin,
        });
    }
    Ok(Some((list, signed)))
}

/// Writes the network admin's list into `dir` (atomically, mode 0600).
pub fn write_admin_list(dir: &Path, signed: &SignedRevocations) -> Result<(), StateError> {
    write_json(&dir.join(ADMIN_REVOCATIONS_FILE), signed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nullport_protocol::Identity;

    #[tokio::test]
    async fn changes_reach_the_disk_and_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::load(Some(dir.path().to_owned())).await);
        let (a, b) = (Identity::from_seed([1; 32]), Identity::from_seed([2; 32]));
        let r = nullport_keyring::rotation::sign(&a, &b, 1);
        store.rotations.insert(a.node_id(), r.clone());
        store.touch(Part::Rotations);
        let task = tokio::spawn(persist(store.clone()));
        let path = dir.path().join("rotations.json");
        for _ in 0..100 {
            if path.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        task.abort();
        let again = Store::load(Some(dir.path().to_owned())).await;
        assert_eq!(
            again.rotations.get(&a.node_id()).map(|e| e.clone()),
            Some(r)
        );
        assert_eq!(store.use_invite([7; 16], 1).await, Ok(()));
        assert_eq!(store.use_invite([7; 16], 1).await, Err(InviteRefusal::Used));
        let again = Store::load(Some(dir.path().to_owned())).await;
        assert_eq!(again.use_invite([7; 16], 1).await, Err(InviteRefusal::Used));
    }
}
