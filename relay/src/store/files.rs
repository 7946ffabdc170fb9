//! The embedded backend: the state directory's files (`--state-dir`), written by this relay
//! alone.
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
use std::sync::atomic::Ordering;
use std::time::Duration;

use nullport_protocol::NodeId;
use nullport_protocol::relay_link::{SignedRevocations, SignedRotation, WitnessedCheckpoint};

use super::{InviteRefusal, Part, Store};
use crate::error::StateError;

/// The file the network admin's revocation list lives in (inside the state directory).
pub const ADMIN_REVOCATIONS_FILE: &str = "admin-revocations.json";

/// The invite counts of the file backend (one lock: a use is counted and written under it).
pub(super) type InviteUses = tokio::sync::Mutex<HashMap<[u8; 16], u32>>;

/// Counts one use of invite `id` (at most `uses`), persisting the count before it returns: two
/// nodes racing for a one-time invite cannot both win, and a crash right after cannot give the
/// use back. A count that cannot be written refuses the use.
pub(super) async fn use_invite(
    counts: &InviteUses,
    dir: Option<&Path>,
    id: [u8; 16],
    uses: u32,
) -> Result<(), InviteRefusal> {
    let mut counts = counts.lock().await;
    let used = counts.get(&id).copied().unwrap_or(0);
    if used >= uses {
        return Err(InviteRefusal::Used);
    }
    counts.insert(id, used + 1);
    if let Some(path) = dir.map(|d| d.join("invites-used.json")) {
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

/// Writes changed parts of `store` until the store is dropped (coalescing changes that come
/// within 50 ms of each other).
pub(crate) async fn persist(store: Arc<Store>) {
    let Some(dir) = store.dir.clone().filter(|_| !store.is_shared()) else {
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

pub(super) fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), StateError> {
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
pub(super) struct Loaded {
    pub(super) witnessed: Vec<(NodeId, WitnessedCheckpoint)>,
    pub(super) revocations: Vec<(NodeId, (u64, SignedRevocations))>,
    pub(super) rotations: Vec<(NodeId, SignedRotation)>,
    pub(super) invite_uses: HashMap<[u8; 16], u32>,
}

impl Loaded {
    /// Reads the files of `dir` (nothing: memory only). Unreadable files are logged and start
    /// empty; entries whose signatures do not verify are dropped.
    pub(super) async fn load(dir: Option<PathBuf>) -> Loaded {
        match dir {
            Some(dir) => tokio::task::spawn_blocking(move || Loaded::read(&dir))
                .await
                .unwrap_or_default(),
            None => Loaded::default(),
        }
    }

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

/// The network admin's list as read from the state directory: what it says, and as signed.
pub type AdminList = (
    nullport_keyring::revocation::RevocationList,
    SignedRevocations,
);

/// Reads the network admin's revocation list from `dir` (none yet: `Ok(None)`); it must be
/// signed by `admin`.
pub fn read_admin_list(dir: &Path, admin: &NodeId) -> Result<Option<AdminList>, StateError> {
    read_admin_list_of(dir, std::slice::from_ref(admin))
}

/// Reads the network admin's revocation list from `dir` (none yet: `Ok(None)`); it must be
/// signed by one of `admins` (a fleet relay's own key, or its relay map's admin key).
pub fn read_admin_list_of(dir: &Path, admins: &[NodeId]) -> Result<Option<AdminList>, StateError> {
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
    if !admins.contains(&list.signer) {
        return Err(StateError::WrongSigner {
            path,
            signer: list.signer,
            admin: admins.first().copied().unwrap_or(list.signer),
        });
    }
    Ok(Some((list, signed)))
}

/// Writes the network admin's list into `dir` (atomically, mode 0600).
pub fn write_admin_list(dir: &Path, signed: &SignedRevocations) -> Result<(), StateError> {
    write_json(&dir.join(ADMIN_REVOCATIONS_FILE), signed)
}
