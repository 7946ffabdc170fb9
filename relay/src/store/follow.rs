//! Following the shared store: a watch on the prefix from the revision the view is at; when
//! the watch ends (the member went away, quorum was lost and etcd cancelled it, history was
//! compacted), the whole view is read again (members removed meanwhile included) and a new
//! watch starts from there. Every entry is verified before it reaches the cache; only news
//! (a newer list, a first rotation, a new or removed member) go on to the server.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use etcd_client::{EventType, WatchOptions};
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;

use super::etcd::{Entry, Etcd, PREFIX, member_key, parse, within};
use super::{Backend, Change, RotationPut, STORE_TIMEOUT, Store};

/// Wait before reading the view again after the watch ended or a read failed.
const RETRY: Duration = Duration::from_millis(500);

/// Follows the store until `changes` is closed (the relay stopped).
pub(super) async fn run(store: Arc<Store>, changes: UnboundedSender<Change>) {
    let Backend::Etcd(etcd) = &store.backend else {
        return;
    };
    let mut from = etcd.revision.load(Ordering::Acquire) + 1;
    let mut fresh = true;
    while !changes.is_closed() {
        if !fresh {
            match etcd.snapshot().await {
                Ok((entries, revision)) => {
                    resync(&store, etcd, entries, &changes);
                    from = revision + 1;
                    tracing::info!(revision, "shared state read again; following it");
                }
                Err(e) => {
                    tracing::warn!("{e}; reading again in {} ms", RETRY.as_millis());
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            }
        }
        fresh = false;
        if let Err(why) = watch(&store, etcd, &mut from, &changes).await {
            tracing::warn!("following the shared state stopped: {why}");
            tokio::time::sleep(RETRY).await;
        }
    }
}

/// Watches from revision `from` (moved on past every event applied) until the watch ends.
async fn watch(
    store: &Store,
    etcd: &Etcd,
    from: &mut i64,
    changes: &UnboundedSender<Change>,
) -> Result<(), String> {
    let mut client = etcd.client.clone();
    let options = WatchOptions::new().with_prefix().with_start_revision(*from);
    let mut stream = within(
        "watching",
        Instant::now() + STORE_TIMEOUT,
        client.watch(PREFIX, Some(options)),
    )
    .await
    .map_err(|e| e.to_string())?;
    loop {
        let response = match stream.message().await {
            Ok(Some(r)) => r,
            Ok(None) => return Err("the watch ended".into()),
            Err(e) => return Err(e.to_string()),
        };
        if response.compact_revision() > 0 {
            return Err(format!(
                "history compacted up to revision {}",
                response.compact_revision()
            ));
        }
        if response.canceled() {
            return Err(format!("watch cancelled: {}", response.cancel_reason()));
        }
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            *from = (*from).max(kv.mod_revision() + 1);
            match event.event_type() {
                EventType::Put => {
                    if let Some(entry) = parse(kv) {
                        apply(store, etcd, entry, changes);
                    }
                }
                EventType::Delete => {
                    if let Some(id) = member_key(kv.key()) {
                        let removed = etcd.members.lock().map(|mut m| m.remove(&id));
                        if let Ok(true) = removed {
                            let _ = changes.send(Change::Member {
                                id,
                                admitted: false,
                            });
                        }
                    }
                }
            }
        }
    }
}

/// Puts `entry` in the cache; tells the server if it is news.
fn apply(store: &Store, etcd: &Etcd, entry: Entry, changes: &UnboundedSender<Change>) {
    match entry {
        Entry::Member(id) => {
            if let Ok(true) = etcd.members.lock().map(|mut m| m.insert(id)) {
                let _ = changes.send(Change::Member { id, admitted: true });
            }
        }
        Entry::List {
            signer,
            version,
            list,
        } => {
            if store.cache_list(signer, version, list.clone()) {
                let _ = changes.send(Change::List {
                    signer,
                    version,
                    list,
                });
            }
        }
        Entry::Rotation { old, new, rotation } => {
            if store.cache_rotation(old, rotation.clone()) == RotationPut::Stored {
                let _ = changes.send(Change::Rotation { old, new, rotation });
            }
        }
        Entry::Witnessed(node, cp) => store.cache_witnessed(node, cp),
    }
}

/// Applies a whole new view: every entry, and the removal of members no longer in it.
fn resync(store: &Store, etcd: &Etcd, entries: Vec<Entry>, changes: &UnboundedSender<Change>) {
    let now: std::collections::HashSet<_> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Member(id) => Some(*id),
            _ => None,
        })
        .collect();
    let gone: Vec<_> = etcd
        .members
        .lock()
        .map(|mut m| {
            let gone = m.difference(&now).copied().collect();
            m.retain(|id| now.contains(id));
            gone
        })
        .unwrap_or_default();
    for id in gone {
        let _ = changes.send(Change::Member {
            id,
            admitted: false,
        });
    }
    for entry in entries {
        apply(store, etcd, entry, changes);
    }
}
