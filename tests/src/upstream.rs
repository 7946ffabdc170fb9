//! A relay splice hook that counts the bytes each session carried from caller to callee:
//! for tests that check what crossed the relay before the callee decided.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use nullport_protocol::SessionId;
use nullport_relay::testing::{Direction, HookOutput, SpliceHook, TestHooks};

use crate::RelayOptions;

/// Counts caller-to-callee bytes per session; forwards everything unchanged.
#[derive(Debug, Default)]
pub struct Upstream {
    up: Mutex<Vec<(SessionId, usize)>>,
}

impl Upstream {
    /// Options for a relay that counts with `counter`.
    pub fn relay_options(counter: &Arc<Self>) -> RelayOptions {
        RelayOptions {
            hooks: TestHooks {
                splice: Some(counter.clone()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// Bytes carried caller to callee in the last session that carried any.
    pub fn last_session_up(&self) -> usize {
        self.up.lock().unwrap().last().map_or(0, |(_, n)| *n)
    }

    /// Waits (at most 10 s, else panics) until the last session carried `want` bytes from
    /// its caller.
    pub async fn wait_last_session_up(&self, want: usize) {
        let crossed = async {
            while self.last_session_up() < want {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(10), crossed)
            .await
            .is_err()
        {
            panic!(
                "only {} of {want} bytes crossed before the verdict",
                self.last_session_up()
            );
        }
    }
}

impl SpliceHook for Upstream {
    fn on_chunk(&self, session: SessionId, direction: Direction, chunk: Bytes) -> HookOutput {
        if direction == Direction::CallerToTarget {
            let mut up = self.up.lock().unwrap();
            match up.iter_mut().find(|(s, _)| *s == session) {
                Some((_, n)) => *n += chunk.len(),
                None => up.push((session, chunk.len())),
            }
        }
        HookOutput::forward(vec![chunk])
    }
}
