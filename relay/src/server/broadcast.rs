//! Pushing new revocation lists and rotations to every online node, in batches: whatever
//! arrived while the previous round was going out is sent as one round (paged to the
//! control-message bound), each node on a stream the relay opens, with a bounded number of
//! nodes served at once and a deadline per node, so one slow node delays nobody.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use nullport_protocol::relay_link::RelayToNode;

use crate::link::write_control;
use crate::push::{Push, revocation_pages, rotation_pages};
use crate::server::shared::Shared;

/// Nodes pushed to at once.
const CONCURRENT_NODES: usize = 64;
/// Time one node has to take a round.
const PER_NODE: Duration = Duration::from_secs(5);

/// Runs until the queue closes: each round takes everything queued and sends it to every
/// node online at that moment.
pub(crate) async fn run(shared: Arc<Shared>, mut queue: mpsc::UnboundedReceiver<Push>) {
    while let Some(first) = queue.recv().await {
        let mut lists = Vec::new();
        let mut rotations = Vec::new();
        let mut map = None;
        let mut draining = None;
        let mut take = |p: Push| match p {
            Push::Revocations(l) => lists.push(l),
            Push::Rotation(r) => rotations.push(r),
            Push::Map(m) => map = Some(m),
            Push::Draining(secs) => draining = Some(secs),
        };
        take(first);
        while let Ok(more) = queue.try_recv() {
            take(more);
        }
        let mut messages = Vec::new();
        if !lists.is_empty() {
            messages.extend(revocation_pages(&lists));
        }
        if !rotations.is_empty() {
            messages.extend(rotation_pages(&rotations));
        }
        if let Some(map) = map {
            messages.push(RelayToNode::Map { map: Some(map) });
        }
        if let Some(within_secs) = draining {
            messages.push(RelayToNode::Draining { within_secs });
        }
        let messages = Arc::new(messages);
        let conns: Vec<quinn::Connection> = shared.routes.iter().map(|r| r.conn.clone()).collect();
        let mut running = JoinSet::new();
        for conn in conns {
            if running.len() >= CONCURRENT_NODES {
                let _ = running.join_next().await;
            }
            let messages = messages.clone();
            running.spawn(async move {
                let sent = tokio::time::timeout(PER_NODE, async {
                    let (mut send, _recv) = conn.open_bi().await.ok()?;
                    for m in messages.iter() {
                        write_control(&mut send, m).await.ok()?;
                    }
                    send.finish().ok()
                })
                .await;
                if !matches!(sent, Ok(Some(()))) {
                    tracing::debug!("push to a node did not complete");
                }
            });
        }
        while running.join_next().await.is_some() {}
    }
}
