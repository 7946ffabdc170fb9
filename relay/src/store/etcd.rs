//! The shared backend: an etcd cluster the relays of a fleet share (`--store etcd://...`).
//!
//! Keys, under [`PREFIX`] (values are the JSON the state directory's files hold):
//!
//! | key | value | written with |
//! | --- | --- | --- |
//! | `members/<NodeId>` | how it joined (text) | the invite use, or the rotation, in one transaction |
//! | `invites/<id hex>` | uses so far (decimal) | compare its `mod_revision` (or absence), then put |
//! | `revocations/<signer>` | the signer's newest `SignedRevocations` | compare, put only a higher version |
//! | `rotations/<old NodeId>` | the first `SignedRotation` of the key | put only if absent |
//! | `witnessed/<NodeId>` | the newest `WitnessedCheckpoint` | compare, put only an equal or higher seq |
//!
//! Every compare-and-put reads the key, decides, and writes in a transaction that succeeds only
//! if the key's `mod_revision` is still the one read (absent: `version == 0`); a relay that lost
//! the race reads again. Every call is bounded by [`STORE_TIMEOUT`] and sent with etcd's
//! "require leader", so a member that lost quorum answers at once instead of waiting.
//! Statements read back are verified like any others (signatures, signer = key): whoever can
//! write to etcd can withhold or drop them, never forge one. Members are not signed: write
//! access to etcd is admission to the fleet (see `docs/fleet-store.md`).

use std::collections::HashSet;
use std::future::Future;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, KeyValue, Txn, TxnOp};
use nullport_protocol::NodeId;
use nullport_protocol::relay_link::{SignedRevocations, SignedRotation, WitnessedCheckpoint};
use tokio::time::Instant;

use super::files::Loaded;
use super::{RotationPut, STORE_TIMEOUT, StoreError};

/// Every key of nullport's shared state starts with this (version 1 of its layout).
pub(super) const PREFIX: &str = "/nullport/v1/";

/// Longest one attempt waits for a member (then the next attempt, within the operation's
/// [`STORE_TIMEOUT`], may reach another).
const ATTEMPT: std::time::Duration = std::time::Duration::from_millis(750);

/// Keys per page when the whole view is read.
const PAGE: i64 = 500;

/// Pause before trying again when a member did not answer.
const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// The file left in the state directory once its files were imported into the store.
pub(super) const IMPORTED: &str = "imported-into-etcd";

/// The relay's link to the etcd cluster.
pub(super) struct Etcd {
    pub(super) client: Client,
    /// The members as last seen (to tell news from repeats, and removals at a resync).
    pub(super) members: Mutex<HashSet<NodeId>>,
    /// The revision the loaded view is at (the follower goes on from the next one).
    pub(super) revision: AtomicI64,
}

/// One entry of the shared state, parsed and verified.
pub(super) enum Entry {
    Member(NodeId),
    List {
        signer: NodeId,
        version: u64,
        list: SignedRevocations,
    },
    Rotation {
        old: NodeId,
        new: NodeId,
        rotation: SignedRotation,
    },
    Witnessed(NodeId, WitnessedCheckpoint),
}

/// What a compare-and-put decides on the value it read.
enum Cas {
    Write(Vec<u8>),
    Keep,
}

fn key(kind: &str, id: impl std::fmt::Display) -> String {
    format!("{PREFIX}{kind}/{id}")
}

/// Awaits `call` until `deadline`; an error or no answer is "state store unavailable".
pub(super) async fn within<T>(
    what: &str,
    deadline: Instant,
    call: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout_at(deadline, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(StoreError::Unavailable(format!("{what}: {e}"))),
        Err(_) => Err(StoreError::Unavailable(format!(
            "{what}: no answer in time (each decision waits {} s at most)",
            STORE_TIMEOUT.as_secs()
        ))),
    }
}

impl Etcd {
    /// Connects to the cluster, brings in what the state directory `dir` holds (once: a
    /// relay moving from `--state-dir` to the fleet's store), and loads the whole shared view.
    pub(super) async fn open(
        endpoints: &[String],
        dir: Option<&Path>,
    ) -> Result<(Etcd, Loaded), StoreError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(STORE_TIMEOUT)
            .with_timeout(STORE_TIMEOUT)
            .with_keep_alive(STORE_TIMEOUT, STORE_TIMEOUT)
            .with_require_leader(true);
        let deadline = Instant::now() + STORE_TIMEOUT;
        let client = within(
            "connecting to etcd",
            deadline,
            Client::connect(endpoints, Some(options)),
        )
        .await?;
        let etcd = Etcd {
            client,
            members: Mutex::new(HashSet::new()),
            revision: AtomicI64::new(0),
        };
        if let Some(dir) = dir {
            etcd.import(dir).await?;
        }
        let (entries, revision) = etcd.snapshot().await?;
        let mut loaded = Loaded::default();
        let mut members = HashSet::new();
        for entry in entries {
            match entry {
                Entry::Member(id) => {
                    members.insert(id);
                }
                Entry::List {
                    signer,
                    version,
                    list,
                } => loaded.revocations.push((signer, (version, list))),
                Entry::Rotation { old, rotation, .. } => loaded.rotations.push((old, rotation)),
                Entry::Witnessed(node, cp) => loaded.witnessed.push((node, cp)),
            }
        }
        if let Ok(mut m) = etcd.members.lock() {
            *m = members;
        }
        etcd.revision.store(revision, Ordering::Release);
        tracing::info!(
            revision,
            endpoints = endpoints.join(","),
            "shared state loaded from etcd"
        );
        Ok((etcd, loaded))
    }

    /// The members as last seen.
    pub(super) fn members(&self) -> Vec<NodeId> {
        self.members
            .lock()
            .map(|m| m.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Every entry under the prefix, verified, and the revision they are at.
    pub(super) async fn snapshot(&self) -> Result<(Vec<Entry>, i64), StoreError> {
        // Pages of [`PAGE`] keys, all at the first page's revision (one consistent view, each
        // answer far below gRPC's message bound whatever the fleet's size).
        let end = prefix_end(PREFIX);
        let mut start = PREFIX.as_bytes().to_vec();
        let mut revision = 0;
        let mut entries = Vec::new();
        loop {
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let got = self.page(&start, options).await?;
            if revision == 0 {
                revision = got.header().map_or(0, |h| h.revision());
            }
            entries.extend(got.kvs().iter().filter_map(parse));
            match got.kvs().last() {
                Some(last) if got.more() => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => return Ok((entries, revision)),
            }
        }
    }

    /// One page of the snapshot, tried again within [`STORE_TIMEOUT`].
    async fn page(
        &self,
        start: &[u8],
        options: GetOptions,
    ) -> Result<etcd_client::GetResponse, StoreError> {
        let deadline = Instant::now() + STORE_TIMEOUT;
        loop {
            let mut client = self.client.clone();
            let got = client.get(start.to_vec(), Some(options.clone()));
            let attempt = deadline.min(Instant::now() + ATTEMPT);
            match within("reading the shared state", attempt, got).await {
                Ok(got) => return Ok(got),
                Err(e) if Instant::now() + RETRY_PAUSE < deadline => {
                    tracing::debug!("{e}; trying again");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Puts the state directory's files into the store, each entry only where it is newer
    /// than what the store holds (invite counts: the higher count), then leaves
    /// [`IMPORTED`] in the directory so that later starts skip it (the files are not written
    /// while the store is shared).
    async fn import(&self, dir: &Path) -> Result<(), StoreError> {
        let marker = dir.join(IMPORTED);
        if marker.exists() {
            return Ok(());
        }
        let files = Loaded::load(Some(dir.to_owned())).await;
        let mut imported = 0;
        for (signer, (version, list)) in &files.revocations {
            imported += usize::from(self.put_list(*signer, *version, list).await?);
        }
        for (old, rotation) in &files.rotations {
            if let Ok(r) = nullport_keyring::rotation::verify_signed(rotation) {
                let label = format!("rotated from {old}");
                let put = self.put_rotation(*old, r.new, rotation, &label).await?;
                imported += usize::from(put == RotationPut::Stored);
            }
        }
        for (node, cp) in &files.witnessed {
            let value = json(cp)?;
            let k = key("witnessed", node);
            let put = self.swap(&k, &[], |held| {
                match held.and_then(|v| checkpoint(*node, v)) {
                    Some(held) if held.seq >= cp.seq => Cas::Keep,
                    _ if verified(*node, cp) => Cas::Write(value.clone()),
                    _ => Cas::Keep,
                }
            });
            imported += usize::from(put.await?);
        }
        for (id, count) in &files.invite_uses {
            let k = key("invites", nullport_protocol::hex::encode(id));
            let put = self.swap(&k, &[], |held| match held.map(parse_count) {
                Some(Some(held)) if held >= *count => Cas::Keep,
                _ => Cas::Write(count.to_string().into_bytes()),
            });
            imported += usize::from(put.await?);
        }
        let note = "the state directory's files were imported into the shared store\n";
        if let Err(e) = nullport_keyring::fs::write_private(&marker, note.as_bytes(), true) {
            tracing::warn!(
                "{}: {e} (the files will be imported again)",
                marker.display()
            );
        }
        tracing::info!(dir = %dir.display(), imported, "state directory imported into etcd");
        Ok(())
    }

    /// Reads `key`, lets `decide` choose its new value from the one read, and writes it (with
    /// `also`, in the same transaction) if the key did not change meanwhile; reads again if it
    /// did. `Ok(false)`: `decide` kept the value. A transaction whose answer was lost (its
    /// member went away) may have landed: the next read checks for it (`key` and every key of
    /// `also` holding what it wrote, at one revision) before deciding again.
    async fn swap(
        &self,
        key: &str,
        also: &[(String, Vec<u8>)],
        mut decide: impl FnMut(Option<&[u8]>) -> Cas,
    ) -> Result<bool, StoreError> {
        let deadline = Instant::now() + STORE_TIMEOUT;
        let mut unknown: Option<Vec<u8>> = None;
        loop {
            let held = self.read(key, deadline).await?;
            if let (Some(sent), Some(kv)) = (unknown.take(), &held)
                && kv.value() == sent.as_slice()
                && self.landed(also, kv.mod_revision(), deadline).await?
            {
                return Ok(true);
            }
            let unchanged = match &held {
                Some(kv) => Compare::mod_revision(key, CompareOp::Equal, kv.mod_revision()),
                None => Compare::version(key, CompareOp::Equal, 0),
            };
            let value = match decide(held.as_ref().map(KeyValue::value)) {
                Cas::Keep => return Ok(false),
                Cas::Write(value) => value,
            };
            let mut ops = vec![TxnOp::put(key, value.clone(), None)];
            ops.extend(
                also.iter()
                    .map(|(k, v)| TxnOp::put(k.as_str(), v.clone(), None)),
            );
            let txn = Txn::new().when([unchanged]).and_then(ops);
            let mut client = self.client.clone();
            let attempt = deadline.min(Instant::now() + ATTEMPT);
            match within("writing", attempt, client.txn(txn)).await {
                Ok(done) if done.succeeded() => return Ok(true),
                Ok(_) => tracing::debug!(key, "another relay wrote first; reading again"),
                Err(e) if Instant::now() + RETRY_PAUSE < deadline => {
                    tracing::debug!(key, "{e}; reading again");
                    unknown = Some(value);
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads `key` (linearizably), trying again until `deadline` when a member does not
    /// answer (the calls already sent to a member that went away fail; the next goes to
    /// another).
    async fn read(&self, key: &str, deadline: Instant) -> Result<Option<KeyValue>, StoreError> {
        loop {
            let mut client = self.client.clone();
            let attempt = deadline.min(Instant::now() + ATTEMPT);
            match within("reading", attempt, client.get(key, None)).await {
                Ok(mut got) => return Ok(got.take_kvs().into_iter().next()),
                Err(e) if Instant::now() + RETRY_PAUSE < deadline => {
                    tracing::debug!(key, "{e}; trying again");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether every key of `also` holds its value, written at `revision`.
    async fn landed(
        &self,
        also: &[(String, Vec<u8>)],
        revision: i64,
        deadline: Instant,
    ) -> Result<bool, StoreError> {
        for (k, v) in also {
            match self.read(k, deadline).await? {
                Some(kv) if kv.mod_revision() == revision && kv.value() == v.as_slice() => {}
                _ => return Ok(false),
            }
        }
        Ok(true)
    }

    /// Counts one use of invite `id` (at most `uses`) and makes `member` a member, in one
    /// transaction. `Ok(false)`: every use is taken.
    pub(super) async fn use_invite(
        &self,
        id: [u8; 16],
        uses: u32,
        member: NodeId,
        label: &str,
    ) -> Result<bool, StoreError> {
        let invite = key("invites", nullport_protocol::hex::encode(&id));
        let also = [(key("members", member), label.as_bytes().to_vec())];
        self.swap(&invite, &also, |held| {
            let used = match held.map(parse_count) {
                None => 0,
                Some(Some(n)) => n,
                // Unreadable: counted as used up (fail closed).
                Some(None) => u32::MAX,
            };
            if used >= uses {
                Cas::Keep
            } else {
                Cas::Write((used + 1).to_string().into_bytes())
            }
        })
        .await
    }

    /// Keeps `cp` unless the held checkpoint (verified) is newer.
    pub(super) async fn witness(
        &self,
        node: NodeId,
        cp: &WitnessedCheckpoint,
    ) -> Result<bool, StoreError> {
        let k = key("witnessed", node);
        let value = json(cp)?;
        self.swap(&k, &[], |held| {
            match held.and_then(|v| checkpoint(node, v)) {
                Some(held) if held.seq > cp.seq => Cas::Keep,
                _ => Cas::Write(value.clone()),
            }
        })
        .await
    }

    /// Keeps `list` unless the held list (verified) is as new or newer.
    pub(super) async fn put_list(
        &self,
        signer: NodeId,
        version: u64,
        list: &SignedRevocations,
    ) -> Result<bool, StoreError> {
        let k = key("revocations", signer);
        let value = json(list)?;
        self.swap(&k, &[], |held| {
            let held = held.and_then(|v| match revocations(signer, v) {
                Some(Entry::List { version, .. }) => Some(version),
                _ => None,
            });
            match held {
                Some(held) if held >= version => Cas::Keep,
                _ => Cas::Write(value.clone()),
            }
        })
        .await
    }

    /// Records the first rotation of `old`, and makes `new` a member, in one transaction.
    pub(super) async fn put_rotation(
        &self,
        old: NodeId,
        new: NodeId,
        rotation: &SignedRotation,
        label: &str,
    ) -> Result<RotationPut, StoreError> {
        let k = key("rotations", old);
        let value = json(rotation)?;
        let also = [(key("members", new), label.as_bytes().to_vec())];
        let mut same = false;
        let stored = self
            .swap(&k, &also, |held| match held {
                None => Cas::Write(value.clone()),
                Some(held) => {
                    same = serde_json::from_slice::<SignedRotation>(held).ok().as_ref()
                        == Some(rotation);
                    Cas::Keep
                }
            })
            .await?;
        Ok(match (stored, same) {
            (true, _) => RotationPut::Stored,
            (false, true) => RotationPut::Same,
            (false, false) => RotationPut::Taken,
        })
    }
}

/// The first key after every key that starts with `prefix` (its last byte plus one).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

fn json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Unavailable(format!("encoding: {e}")))
}

fn parse_count(value: &[u8]) -> Option<u32> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

/// The node a key names after `kind/`.
fn node_in(key: &str, kind: &str) -> Option<NodeId> {
    key.strip_prefix(PREFIX)?
        .strip_prefix(kind)?
        .strip_prefix('/')?
        .parse()
        .ok()
}

/// Whether `key` names a member, and which.
pub(super) fn member_key(key: &[u8]) -> Option<NodeId> {
    node_in(std::str::from_utf8(key).ok()?, "members")
}

/// Parses and verifies one entry (none: not ours, an invite count, or not verifiable).
pub(super) fn parse(kv: &KeyValue) -> Option<Entry> {
    let k = std::str::from_utf8(kv.key()).ok()?;
    let value = kv.value();
    if let Some(id) = node_in(k, "members") {
        return Some(Entry::Member(id));
    }
    if let Some(signer) = node_in(k, "revocations") {
        return revocations(signer, value);
    }
    if let Some(old) = node_in(k, "rotations") {
        let rotation: SignedRotation = serde_json::from_slice(value).ok()?;
        let r = nullport_keyring::rotation::verify_signed(&rotation).ok()?;
        return (r.old == old).then_some(Entry::Rotation {
            old,
            new: r.new,
            rotation,
        });
    }
    if let Some(node) = node_in(k, "witnessed") {
        return checkpoint(node, value).map(|cp| Entry::Witnessed(node, cp));
    }
    None
}

fn revocations(signer: NodeId, value: &[u8]) -> Option<Entry> {
    let list: SignedRevocations = serde_json::from_slice(value).ok()?;
    let parsed = nullport_keyring::revocation::verify_signed(&list).ok()?;
    (parsed.signer == signer).then_some(Entry::List {
        signer,
        version: parsed.version,
        list,
    })
}

/// `node`'s checkpoint in `value`, if its own signature verifies.
fn checkpoint(node: NodeId, value: &[u8]) -> Option<WitnessedCheckpoint> {
    let cp: WitnessedCheckpoint = serde_json::from_slice(value).ok()?;
    verified(node, &cp).then_some(cp)
}

/// Whether `cp` carries `node`'s own signature.
fn verified(node: NodeId, cp: &WitnessedCheckpoint) -> bool {
    use nullport_protocol::domain;
    let body = nullport_audit::checkpoint_body(cp.seq, &cp.head.to_hex());
    nullport_protocol::identity::verify(&node, domain::AUDIT_CHECKPOINT_V1, &body, &cp.node_sig.0)
        .is_ok()
}
