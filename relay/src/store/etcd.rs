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
            "{what}: no answer within {} s",
            STORE_TIMEOUT.as_secs()
        ))),
    }
}

impl Etcd {
    /// Connects to the cluster and loads the whole shared view.
    pub(super) async fn open(endpoints: &[String]) -> Result<(Etcd, Loaded), StoreError> {
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
        let deadline = Instant::now() + STORE_TIMEOUT;
        let mut client = self.client.clone();
        let got = within(
            "reading the shared state",
            deadline,
            client.get(PREFIX, Some(GetOptions::new().with_prefix())),
        )
        .await?;
        let revision = got.header().map_or(0, |h| h.revision());
        let entries = got.kvs().iter().filter_map(parse).collect();
        Ok((entries, revision))
    }

    /// Reads `key`, lets `decide` choose its new value from the one read, and writes it (with
    /// `also`, in the same transaction) if the key did not change meanwhile; reads again if it
    /// did. `Ok(false)`: `decide` kept the value.
    async fn swap(
        &self,
        key: &str,
        also: &[(String, Vec<u8>)],
        mut decide: impl FnMut(Option<&[u8]>) -> Cas,
    ) -> Result<bool, StoreError> {
        let deadline = Instant::now() + STORE_TIMEOUT;
        let mut client = self.client.clone();
        loop {
            let got = within("reading", deadline, client.get(key, None)).await?;
            let held = got.kvs().first();
            let unchanged = match held {
                Some(kv) => Compare::mod_revision(key, CompareOp::Equal, kv.mod_revision()),
                None => Compare::version(key, CompareOp::Equal, 0),
            };
            let value = match decide(held.map(KeyValue::value)) {
                Cas::Keep => return Ok(false),
                Cas::Write(value) => value,
            };
            let mut ops = vec![TxnOp::put(key, value, None)];
            ops.extend(
                also.iter()
                    .map(|(k, v)| TxnOp::put(k.as_str(), v.clone(), None)),
            );
            let txn = Txn::new().when([unchanged]).and_then(ops);
            if within("writing", deadline, client.txn(txn))
                .await?
                .succeeded()
            {
                return Ok(true);
            }
            tracing::debug!(key, "another relay wrote first; reading again");
        }
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
    use nullport_protocol::domain;
    let cp: WitnessedCheckpoint = serde_json::from_slice(value).ok()?;
    let body = nullport_audit::checkpoint_body(cp.seq, &cp.head.to_hex());
    nullport_protocol::identity::verify(&node, domain::AUDIT_CHECKPOINT_V1, &body, &cp.node_sig.0)
        .ok()?;
    Some(cp)
}
