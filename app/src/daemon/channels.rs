//! The table of open channels, and the overseer that takes access away from live ones.
//!
//! Every incoming channel is admitted through [`Table::admit`]: the access decision and the
//! reservation of its slot happen under one lock, so the per-caller and total caps hold
//! however many callers race. The [`oversee`] task re-checks every incoming channel against
//! the new access snapshot whenever it changes (a reload, `deny`, `unexpose`, a revocation
//! list, a rotation), and once a second against the clock (token expiry plus skew, the idle
//! timeout); a channel that no longer passes is ended with an abort frame whose reason the
//! caller reads, and the audit log says why.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nullport_protocol::{DenyReason, NodeId};
use tokio::sync::watch;

use crate::access::{Access, Grant, Load, Refusal};
use crate::daemon::State;
use crate::services::io::Counters;
use crate::tokens::unix_now;
use nullport_node::AbortHandle;

/// Which way a channel goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// A peer called this node.
    In,
    /// This node called a peer.
    Out,
}

impl Direction {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

/// What an incoming channel rests on, to re-check it.
#[derive(Debug, Clone)]
struct Authority {
    blob: Vec<u8>,
    expires: Option<u64>,
}

/// One open channel.
pub(crate) struct OpenChannel {
    pub(crate) direction: Direction,
    pub(crate) peer: NodeId,
    pub(crate) service: String,
    pub(crate) counters: Arc<Counters>,
    pub(crate) opened: Instant,
    abort: AbortHandle,
    authority: Option<Authority>,
    /// Bytes both ways at the last look, and when they last changed.
    activity: (u64, Instant),
    ended: bool,
}

struct Inner {
    open: Mutex<HashMap<u64, OpenChannel>>,
    next: AtomicU64,
    count: watch::Sender<usize>,
    /// Bytes in and out of the channels that have ended.
    ended_bytes: [AtomicU64; 2],
    /// When each peer last had a channel with this node (opened or ended).
    seen: Mutex<HashMap<NodeId, std::time::SystemTime>>,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            open: Mutex::default(),
            next: AtomicU64::new(1),
            count: watch::Sender::new(0),
            ended_bytes: Default::default(),
            seen: Mutex::default(),
        }
    }
}

/// The open channels.
#[derive(Default, Clone)]
pub(crate) struct Table {
    inner: Arc<Inner>,
}

/// A slot in the table; dropping it removes the channel.
pub(crate) struct Registered {
    inner: Arc<Inner>,
    id: u64,
    /// Bytes in and out, shown by `status`.
    pub(crate) counters: Arc<Counters>,
    /// Ends the channel (the daemon's channel takes this handle when it is accepted).
    pub(crate) abort: AbortHandle,
}

impl Drop for Registered {
    fn drop(&mut self) {
        for (total, now) in self
            .inner
            .ended_bytes
            .iter()
            .zip([&self.counters.bytes_in, &self.counters.bytes_out])
        {
            total.fetch_add(now.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        if let Ok(mut open) = self.inner.open.lock()
            && let Some(ended) = open.remove(&self.id)
        {
            self.inner.count.send_replace(open.len());
            if let Ok(mut seen) = self.inner.seen.lock() {
                seen.insert(ended.peer, std::time::SystemTime::now());
            }
        }
    }
}

impl Table {
    fn insert(&self, channel: OpenChannel) -> Registered {
        let id = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let (counters, abort) = (channel.counters.clone(), channel.abort.clone());
        if let Ok(mut seen) = self.inner.seen.lock() {
            seen.insert(channel.peer, std::time::SystemTime::now());
        }
        if let Ok(mut open) = self.inner.open.lock() {
            open.insert(id, channel);
            self.inner.count.send_replace(open.len());
        }
        Registered {
            inner: self.inner.clone(),
            id,
            counters,
            abort,
        }
    }

    fn new_channel(direction: Direction, peer: NodeId, service: &str) -> OpenChannel {
        OpenChannel {
            direction,
            peer,
            service: service.to_owned(),
            counters: Arc::default(),
            opened: Instant::now(),
            abort: AbortHandle::default(),
            authority: None,
            activity: (0, Instant::now()),
            ended: false,
        }
    }

    /// Decides an incoming channel and, if granted, takes its slot, in one step.
    pub(crate) fn admit(
        &self,
        access: &Access,
        peer: NodeId,
        service: &str,
        blob: &[u8],
        now: u64,
    ) -> Result<(Grant, Registered), Refusal> {
        if let Ok(mut seen) = self.inner.seen.lock() {
            seen.insert(peer, std::time::SystemTime::now());
        }
        let Ok(mut open) = self.inner.open.lock() else {
            return Err(Refusal::NodeFull { open: 0 });
        };
        // Channels already ended (closing down) no longer count.
        let incoming = open
            .values()
            .filter(|c| c.direction == Direction::In && !c.ended);
        let load = incoming.fold(Load::default(), |mut l, c| {
            l.total += 1;
            l.caller += usize::from(c.peer == peer);
            l
        });
        let grant = access.decide(&peer, service, blob, now, load)?;
        let mut channel = Self::new_channel(Direction::In, peer, service);
        channel.authority = Some(Authority {
            blob: blob.to_vec(),
            expires: grant.expires,
        });
        let id = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let (counters, abort) = (channel.counters.clone(), channel.abort.clone());
        open.insert(id, channel);
        self.inner.count.send_replace(open.len());
        Ok((
            grant,
            Registered {
                inner: self.inner.clone(),
                id,
                counters,
                abort,
            },
        ))
    }

    /// Registers a channel this node opened.
    pub(crate) fn register_out(&self, peer: NodeId, service: &str) -> Registered {
        self.insert(Self::new_channel(Direction::Out, peer, service))
    }

    /// Waits until no channel is open.
    pub(crate) async fn wait_empty(&self) {
        let mut count = self.inner.count.subscribe();
        let _ = count.wait_for(|n| *n == 0).await;
    }

    /// Channels open now (in, out) and bytes in and out of every channel since start.
    pub(crate) fn totals(&self) -> ((usize, usize), (u64, u64)) {
        let (mut open, mut bytes) = ((0, 0), (0, 0));
        bytes.0 = self.inner.ended_bytes[0].load(Ordering::Relaxed);
        bytes.1 = self.inner.ended_bytes[1].load(Ordering::Relaxed);
        if let Ok(channels) = self.inner.open.lock() {
            for ch in channels.values().filter(|c| !c.ended) {
                match ch.direction {
                    Direction::In => open.0 += 1,
                    Direction::Out => open.1 += 1,
                }
            }
            for ch in channels.values() {
                bytes.0 += ch.counters.bytes_in.load(Ordering::Relaxed);
                bytes.1 += ch.counters.bytes_out.load(Ordering::Relaxed);
            }
        }
        (open, bytes)
    }

    /// Ends every channel cleanly, with a close frame (an orderly shutdown).
    pub(crate) fn close_all(&self) {
        if let Ok(open) = self.inner.open.lock() {
            for c in open.values() {
                c.abort.close();
            }
        }
    }

    /// Ends one channel cleanly (a close frame), by its id; its peer and service.
    pub(crate) fn close_one(&self, id: u64) -> Option<(NodeId, String)> {
        let open = self.inner.open.lock().ok()?;
        let c = open.get(&id)?;
        c.abort.close();
        Some((c.peer, c.service.clone()))
    }

    /// When each peer last had a channel with this node.
    pub(crate) fn last_seen(&self) -> HashMap<NodeId, std::time::SystemTime> {
        self.inner
            .seen
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// Runs `f` over the open channels with their ids (for the console).
    pub(crate) fn with_each_id<T>(&self, mut f: impl FnMut(u64, &OpenChannel) -> T) -> Vec<T> {
        self.inner
            .open
            .lock()
            .map(|open| open.iter().map(|(id, c)| f(*id, c)).collect())
            .unwrap_or_default()
    }

    /// Runs `f` over the open channels (for `status`).
    pub(crate) fn with_each<T>(&self, mut f: impl FnMut(&OpenChannel) -> T) -> Vec<T> {
        self.inner
            .open
            .lock()
            .map(|open| open.values().map(&mut f).collect())
            .unwrap_or_default()
    }

    /// Ends the incoming channels that no longer pass: against `access` in full when
    /// `full`, else only their token expiry; and those idle for `idle`. With `full`, also
    /// the outgoing channels to a key revoked here. Returns each ended channel's (peer,
    /// service, why).
    pub(crate) fn sweep(
        &self,
        access: &Access,
        full: bool,
        idle: Option<Duration>,
        now: u64,
    ) -> Vec<(NodeId, String, String)> {
        let skew = access.settings.token_skew_secs;
        let mut ended = Vec::new();
        let Ok(mut open) = self.inner.open.lock() else {
            return ended;
        };
        for c in open.values_mut() {
            if c.ended {
                continue;
            }
            let Some(authority) = &c.authority else {
                // A channel this node opened: it ends when the peer's key is revoked here
                // (a stolen key must not go on serving this node's users).
                if full && let Some(signer) = access.key_revoked_everywhere(&c.peer) {
                    c.ended = true;
                    c.abort.abort(DenyReason::Revoked);
                    let why = format!("the peer's key is revoked here (by {signer})");
                    ended.push((c.peer, c.service.clone(), why));
                }
                continue;
            };
            let bytes = c.counters.bytes_in.load(Ordering::Relaxed)
                + c.counters.bytes_out.load(Ordering::Relaxed);
            if bytes != c.activity.0 {
                c.activity = (bytes, Instant::now());
            }
            let why: Option<(DenyReason, String)> = if full {
                access
                    .recheck(&c.peer, &c.service, &authority.blob, now)
                    .err()
                    .map(|r| (r.reason(), r.to_string()))
            } else {
                authority
                    .expires
                    .filter(|e| now > e.saturating_add(skew))
                    .map(|e| {
                        (
                            DenyReason::Expired,
                            format!("capability token expired at {e}"),
                        )
                    })
            };
            let why = why.or_else(|| {
                idle.filter(|limit| c.activity.1.elapsed() >= *limit)
                    .map(|limit| (DenyReason::Idle, format!("idle for {} s", limit.as_secs())))
            });
            if let Some((reason, text)) = why {
                c.ended = true;
                c.abort.abort(reason);
                ended.push((c.peer, c.service.clone(), text));
            }
        }
        ended
    }
}

/// Re-checks live channels: at once on every new access snapshot, and every second for
/// expiry and idleness.
pub(crate) async fn oversee(state: Arc<State>) {
    let mut snapshots = state.access.subscribe();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let full = tokio::select! {
            changed = snapshots.changed() => {
                if changed.is_err() {
                    return;
                }
                true
            }
            _ = tick.tick() => false,
        };
        let access = snapshots.borrow_and_update().clone();
        let idle = state
            .files
            .read()
            .ok()
            .and_then(|f| f.config.access.idle_timeout());
        for (peer, service, why) in state.channels.sweep(&access, full, idle, unix_now()) {
            tracing::info!(peer = %peer.fmt_short(), %service, "channel closed: {why}");
            state.audit.channel(
                &peer,
                &service,
                nullport_audit::ChannelOutcome::Closed,
                &why,
            );
        }
    }
}
