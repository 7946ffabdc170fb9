//! What the relay keeps across restarts and shares with the other relays of a fleet, behind
//! one interface for two backends ([`StoreSpec`]):
//!
//! - **files** (the default, `--state-dir`): this relay alone (the files are listed in
//!   `store/files.rs`);
//! - **etcd** (`--store etcd://host:port,...`, cargo feature `etcd`): the relays of a fleet
//!   share membership, invite uses, revocation lists, rotations and witnessed checkpoints,
//!   with etcd transactions wherever a decision must be taken once for all of them (see
//!   `docs/fleet-store.md`).
//!
//! Either way the relay decides admission, dials and splices from its **cached view** (the
//! maps of `Store`) and never waits for the store on those paths. Only the decisions that
//! change shared state wait for it: using an invite (and so admitting an unknown key),
//! accepting a newer revocation list, a rotation or a witnessed checkpoint. With etcd, those
//! fail closed within [`STORE_TIMEOUT`] when it cannot answer (quorum lost), with
//! [`StoreError::Unavailable`] ("state store unavailable"), and work again once it can.

#[cfg(feature = "etcd")]
mod etcd;
pub(crate) mod files;
#[cfg(feature = "etcd")]
mod follow;
mod spec;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use nullport_protocol::NodeId;
use nullport_protocol::relay_link::{SignedRevocations, SignedRotation, WitnessedCheckpoint};
use tokio::sync::Notify;

pub use crate::error::StoreError;
use crate::metrics::Metrics;
pub(crate) use files::persist;
pub use files::{AdminList, read_admin_list, read_admin_list_of, write_admin_list};
pub use spec::StoreSpec;

pub use files::ADMIN_REVOCATIONS_FILE;

/// Longest a decision waits for the shared store before it fails closed.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// The relay's persistent state: the cached view every task reads, and the backend that
/// decides changes to it.
pub(crate) struct Store {
    backend: Backend,
    dir: Option<PathBuf>,
    /// The newest witnessed checkpoint of each node.
    pub(crate) witnessed: DashMap<NodeId, WitnessedCheckpoint>,
    /// The newest list of each signer, with its version.
    pub(crate) revocations: DashMap<NodeId, (u64, SignedRevocations)>,
    /// The first rotation of each old key.
    pub(crate) rotations: DashMap<NodeId, SignedRotation>,
    invite_uses: files::InviteUses,
    dirty: [AtomicBool; 3],
    changed: Notify,
    /// The version of the network admin's list this relay last published to the store.
    admin_published: AtomicU64,
    metrics: Arc<Metrics>,
}

enum Backend {
    Files,
    #[cfg(feature = "etcd")]
    Etcd(Box<etcd::Etcd>),
}

/// Which coalesced file a change touches.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Part {
    Witnessed = 0,
    Revocations = 1,
    Rotations = 2,
}

/// Why an invite use was refused by the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InviteRefusal {
    /// Every use is taken.
    Used,
    /// The count could not be persisted (fail closed).
    NotRecorded,
    /// The shared store did not answer in time (fail closed).
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    Unavailable,
}

/// What a rotation did to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RotationPut {
    /// Recorded now: the first rotation of this key.
    Stored,
    /// This very rotation was already on record.
    Same,
    /// Another rotation of this key is on record (the first one wins).
    Taken,
}

/// A change another relay made to the shared state, for the server to act on (admit, retire,
/// push to nodes). Only news reach it: the cache already holds them when it does.
#[derive(Debug)]
#[cfg_attr(not(feature = "etcd"), allow(dead_code))]
pub(crate) enum Change {
    /// A newer revocation list of `signer`.
    List {
        signer: NodeId,
        version: u64,
        list: SignedRevocations,
    },
    /// The first rotation of `old`.
    Rotation {
        old: NodeId,
        new: NodeId,
        rotation: SignedRotation,
    },
    /// A member (enrolled by an invite, or the new key of a rotation) joined or was removed.
    Member { id: NodeId, admitted: bool },
}

/// How the store has answered so far (for metrics and the docs' latency figures).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoreStats {
    /// Whether the state is shared with other relays (etcd).
    pub shared: bool,
    /// Operations that reached the backend (reads, transactions), answered or not.
    pub operations: u64,
    /// Of those, the ones that failed (the store was unavailable).
    pub failures: u64,
    /// Sum of the time every answered operation took, in microseconds.
    pub total_micros: u64,
    /// The slowest answered operation, in microseconds.
    pub max_micros: u64,
}

/// Counts an operation of the shared store in the relay's metrics.
#[cfg_attr(not(feature = "etcd"), allow(dead_code))]
fn record<T, E>(metrics: &Metrics, started: Instant, result: &Result<T, E>) {
    if result.is_err() {
        metrics.store_unavailable.fetch_add(1, Ordering::Relaxed);
        return;
    }
    metrics.store_ok.fetch_add(1, Ordering::Relaxed);
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    metrics.store_micros.fetch_add(micros, Ordering::Relaxed);
    metrics
        .store_max_micros
        .fetch_max(micros, Ordering::Relaxed);
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .field("shared", &self.is_shared())
            .field("lists", &self.revocations.len())
            .field("rotations", &self.rotations.len())
            .finish_non_exhaustive()
    }
}

impl Store {
    fn with(
        backend: Backend,
        dir: Option<PathBuf>,
        loaded: files::Loaded,
        metrics: Arc<Metrics>,
    ) -> Store {
        Store {
            backend,
            dir,
            witnessed: loaded.witnessed.into_iter().collect(),
            revocations: loaded.revocations.into_iter().collect(),
            rotations: loaded.rotations.into_iter().collect(),
            invite_uses: tokio::sync::Mutex::new(loaded.invite_uses),
            dirty: Default::default(),
            changed: Notify::new(),
            admin_published: AtomicU64::new(0),
            metrics,
        }
    }

    /// Loads the state kept in `dir` (nothing: memory only), with metrics of its own.
    #[cfg(test)]
    pub(crate) async fn load(dir: Option<PathBuf>) -> Store {
        let loaded = files::Loaded::load(dir.clone()).await;
        Store::with(Backend::Files, dir, loaded, Arc::default())
    }

    /// Opens the store `spec` names. Files: loads the state kept in `dir` (nothing: memory
    /// only); unreadable files are logged and start empty, entries whose signatures do not
    /// verify are dropped. With etcd: connects and loads the shared view (failing
    /// when the store cannot answer, so that a relay never starts without the revocations
    /// the fleet agreed on); `dir` then holds only the network admin's list file.
    pub(crate) async fn open(
        spec: &StoreSpec,
        dir: Option<PathBuf>,
        metrics: Arc<Metrics>,
    ) -> Result<Store, StoreError> {
        match spec {
            StoreSpec::Files => {
                let loaded = files::Loaded::load(dir.clone()).await;
                Ok(Store::with(Backend::Files, dir, loaded, metrics))
            }
            #[cfg(feature = "etcd")]
            StoreSpec::Etcd { endpoints } => {
                let (backend, loaded) = etcd::Etcd::open(endpoints, dir.as_deref()).await?;
                let backend = Backend::Etcd(Box::new(backend));
                Ok(Store::with(backend, dir, loaded, metrics))
            }
            #[cfg(not(feature = "etcd"))]
            StoreSpec::Etcd { .. } => Err(StoreError::NotBuilt),
        }
    }

    /// The state directory.
    pub(crate) fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Whether the state is shared with other relays (then enrollments and the new keys of
    /// rotations are members in the store, not lines appended to the allowlist file).
    pub(crate) fn is_shared(&self) -> bool {
        !matches!(self.backend, Backend::Files)
    }

    /// The members the shared store holds (enrolled keys, new keys of rotations).
    pub(crate) fn members(&self) -> Vec<NodeId> {
        match &self.backend {
            Backend::Files => Vec::new(),
            #[cfg(feature = "etcd")]
            Backend::Etcd(etcd) => etcd.members(),
        }
    }

    /// How the store has answered so far.
    pub(crate) fn stats(&self) -> StoreStats {
        let m = &self.metrics;
        let failures = m.store_unavailable.load(Ordering::Relaxed);
        StoreStats {
            shared: self.is_shared(),
            operations: m.store_ok.load(Ordering::Relaxed) + failures,
            failures,
            total_micros: m.store_micros.load(Ordering::Relaxed),
            max_micros: m.store_max_micros.load(Ordering::Relaxed),
        }
    }

    /// Marks `part` as changed; the persister writes it soon (files only: the shared store
    /// was written before the cache changed).
    pub(crate) fn touch(&self, part: Part) {
        if self.dir.is_some() && !self.is_shared() {
            self.dirty[part as usize].store(true, Ordering::Release);
            self.changed.notify_one();
        }
    }

    /// Counts one use of invite `id` (at most `uses`) for enrolling `member`, recorded before
    /// it returns: two nodes racing for a one-time invite cannot both win (through this relay
    /// or, with etcd, through any relay of the fleet), and a crash right after cannot give the
    /// use back. With etcd, the use and the membership are one transaction. A use that cannot
    /// be recorded is refused.
    pub(crate) async fn use_invite(
        &self,
        id: [u8; 16],
        uses: u32,
        member: NodeId,
        label: &str,
    ) -> Result<(), InviteRefusal> {
        match &self.backend {
            Backend::Files => {
                let _ = (member, label);
                files::use_invite(&self.invite_uses, self.dir.as_deref(), id, uses).await
            }
            #[cfg(feature = "etcd")]
            Backend::Etcd(etcd) => {
                let started = Instant::now();
                let used = etcd.use_invite(id, uses, member, label).await;
                record(&self.metrics, started, &used);
                match used {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(InviteRefusal::Used),
                    Err(e) => {
                        tracing::warn!(peer = %member, "invite use refused (fail closed): {e}");
                        Err(InviteRefusal::Unavailable)
                    }
                }
            }
        }
    }

    /// Keeps `cp` as `node`'s newest witnessed checkpoint unless the one held (by any relay)
    /// is newer: `Ok(false)`, a rollback refused.
    pub(crate) async fn witness(
        &self,
        node: NodeId,
        cp: WitnessedCheckpoint,
    ) -> Result<bool, StoreError> {
        match &self.backend {
            Backend::Files => {
                match self.witnessed.entry(node) {
                    dashmap::Entry::Occupied(held) if held.get().seq > cp.seq => return Ok(false),
                    dashmap::Entry::Occupied(mut held) => {
                        held.insert(cp);
                    }
                    dashmap::Entry::Vacant(slot) => {
                        slot.insert(cp);
                    }
                }
                self.touch(Part::Witnessed);
                Ok(true)
            }
            #[cfg(feature = "etcd")]
            Backend::Etcd(etcd) => {
                let started = Instant::now();
                let stored = etcd.witness(node, &cp).await;
                record(&self.metrics, started, &stored);
                if let Ok(true) = stored {
                    self.cache_witnessed(node, cp);
                }
                stored
            }
        }
    }

    /// Keeps `list` (version `version` of `signer`) unless the one held (by any relay) is as
    /// new or newer: `Ok(false)`.
    pub(crate) async fn put_list(
        &self,
        signer: NodeId,
        version: u64,
        list: SignedRevocations,
    ) -> Result<bool, StoreError> {
        match &self.backend {
            Backend::Files => {
                let stored = self.cache_list(signer, version, list);
                if stored {
                    self.touch(Part::Revocations);
                }
                Ok(stored)
            }
            #[cfg(feature = "etcd")]
            Backend::Etcd(etcd) => {
                let started = Instant::now();
                let stored = etcd.put_list(signer, version, &list).await;
                record(&self.metrics, started, &stored);
                if let Ok(true) = stored {
                    self.cache_list(signer, version, list);
                }
                stored
            }
        }
    }

    /// Publishes the network admin's list read from the state directory to the shared store
    /// (nothing to do for files, whose cache the caller updates). Called at every reload
    /// (twice a second): the store keeps the list only if it holds no newer one, so a list
    /// deleted or rolled back in etcd by someone with access to it is put back within half
    /// a second by the relay that holds the file.
    pub(crate) async fn publish_admin_list(
        &self,
        signer: NodeId,
        version: u64,
        list: &SignedRevocations,
    ) -> Result<(), StoreError> {
        if !self.is_shared() {
            return Ok(());
        }
        // Stored, or a newer one is held already: either way this version is published.
        self.put_list(signer, version, list.clone()).await?;
        self.admin_published.fetch_max(version, Ordering::AcqRel);
        Ok(())
    }

    /// Records `rotation` (of `old` to `new`) if it is the first one of `old`; with etcd, in
    /// the same transaction `new` becomes a member (`label` says how).
    pub(crate) async fn put_rotation(
        &self,
        old: NodeId,
        new: NodeId,
        rotation: SignedRotation,
        label: &str,
    ) -> Result<RotationPut, StoreError> {
        match &self.backend {
            Backend::Files => {
                let _ = (new, label);
                Ok(self.cache_rotation(old, rotation))
            }
            #[cfg(feature = "etcd")]
            Backend::Etcd(etcd) => {
                // In the cache first: the follower may see the write before this call returns,
                // and must take it for this relay's own (no second retirement of the key
                // while its node is still being answered).
                let ours = self.cache_rotation(old, rotation.clone()) == RotationPut::Stored;
                let started = Instant::now();
                let put = etcd.put_rotation(old, new, &rotation, label).await;
                record(&self.metrics, started, &put);
                if ours && matches!(put, Err(_) | Ok(RotationPut::Taken)) {
                    self.rotations.remove_if(&old, |_, held| *held == rotation);
                }
                put
            }
        }
    }

    /// Forgets the rotation of `old` (files: its admission change failed after it was
    /// recorded). The shared store keeps its record: the first rotation wins there for good.
    pub(crate) fn forget_rotation(&self, old: &NodeId) {
        if !self.is_shared() {
            self.rotations.remove(old);
        }
    }

    /// Puts `list` in the cache if it is newer than the one held; whether it was.
    pub(crate) fn cache_list(&self, signer: NodeId, version: u64, list: SignedRevocations) -> bool {
        match self.revocations.entry(signer) {
            dashmap::Entry::Occupied(held) if held.get().0 >= version => false,
            dashmap::Entry::Occupied(mut held) => {
                held.insert((version, list));
                true
            }
            dashmap::Entry::Vacant(slot) => {
                slot.insert((version, list));
                true
            }
        }
    }

    /// Puts `rotation` in the cache if `old` has none yet.
    fn cache_rotation(&self, old: NodeId, rotation: SignedRotation) -> RotationPut {
        match self.rotations.entry(old) {
            dashmap::Entry::Occupied(held) if *held.get() == rotation => RotationPut::Same,
            dashmap::Entry::Occupied(_) => RotationPut::Taken,
            dashmap::Entry::Vacant(slot) => {
                slot.insert(rotation);
                RotationPut::Stored
            }
        }
    }

    /// Puts `cp` in the cache unless the one held is newer.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    fn cache_witnessed(&self, node: NodeId, cp: WitnessedCheckpoint) {
        match self.witnessed.entry(node) {
            dashmap::Entry::Occupied(held) if held.get().seq > cp.seq => {}
            dashmap::Entry::Occupied(mut held) => {
                held.insert(cp);
            }
            dashmap::Entry::Vacant(slot) => {
                slot.insert(cp);
            }
        }
    }
}

/// Follows the shared store (etcd) until the store is dropped, sending the changes other
/// relays make to `changes`; nothing to follow for files.
pub(crate) async fn follow(store: Arc<Store>, changes: tokio::sync::mpsc::UnboundedSender<Change>) {
    match &store.backend {
        Backend::Files => drop(changes),
        #[cfg(feature = "etcd")]
        Backend::Etcd(_) => follow::run(store.clone(), changes).await,
    }
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
        let put = store
            .put_rotation(a.node_id(), b.node_id(), r.clone(), "rotated")
            .await;
        assert_eq!(put.ok(), Some(RotationPut::Stored));
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
        let m = b.node_id();
        assert_eq!(store.use_invite([7; 16], 1, m, "x").await, Ok(()));
        assert_eq!(
            store.use_invite([7; 16], 1, m, "x").await,
            Err(InviteRefusal::Used)
        );
        let again = Store::load(Some(dir.path().to_owned())).await;
        assert_eq!(
            again.use_invite([7; 16], 1, m, "x").await,
            Err(InviteRefusal::Used)
        );
    }

    #[cfg(not(feature = "etcd"))]
    #[tokio::test]
    async fn an_etcd_store_without_the_feature_is_refused_naming_it() {
        let spec: StoreSpec = "etcd://127.0.0.1:2379".parse().unwrap();
        let refused = Store::open(&spec, None, Arc::default()).await.err();
        let text = refused.map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains("`etcd` cargo feature"), "{text}");
    }

    #[tokio::test]
    async fn the_file_store_refuses_rollbacks_and_keeps_the_first_rotation() {
        let store = Store::load(None).await;
        let n = Identity::from_seed([3; 32]);
        let cp = |seq| WitnessedCheckpoint {
            seq,
            head: nullport_protocol::Digest([0; 32]),
            node_sig: nullport_protocol::Signature([0; 64]),
            relay_sig: None,
        };
        assert_eq!(store.witness(n.node_id(), cp(5)).await.ok(), Some(true));
        assert_eq!(store.witness(n.node_id(), cp(4)).await.ok(), Some(false));
        assert_eq!(store.witness(n.node_id(), cp(5)).await.ok(), Some(true));
        let (a, b, c) = (
            Identity::from_seed([1; 32]),
            Identity::from_seed([2; 32]),
            Identity::from_seed([4; 32]),
        );
        let first = nullport_keyring::rotation::sign(&a, &b, 1);
        let other = nullport_keyring::rotation::sign(&a, &c, 1);
        let old = a.node_id();
        let put = |r: SignedRotation, new: NodeId| {
            let store = &store;
            async move { store.put_rotation(old, new, r, "").await.ok() }
        };
        assert_eq!(
            put(first.clone(), b.node_id()).await,
            Some(RotationPut::Stored)
        );
        assert_eq!(put(first, b.node_id()).await, Some(RotationPut::Same));
        assert_eq!(put(other, c.node_id()).await, Some(RotationPut::Taken));
    }
}
