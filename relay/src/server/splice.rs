//! Blind byte splicing between a caller's dial stream and the target's incoming stream.
//!
//! Each direction reads a chunk only when the previous one was accepted by the other side,
//! so QUIC flow control carries backpressure end to end and the relay holds at most one
//! chunk per direction. The relay never parses these bytes: they are the end-to-end Noise
//! handshake and channel.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use nullport_protocol::{NodeId, SessionId};

use crate::server::shared::{Shared, Side};

/// Largest chunk read at once.
const CHUNK: usize = 64 * 1024;

/// The per-node counters a pump adds to: the sending node's and the receiving node's.
pub(crate) struct Counted {
    pub(crate) sender: Option<Arc<crate::nodes::NodeCounters>>,
    pub(crate) receiver: Option<Arc<crate::nodes::NodeCounters>>,
}

/// Copies `from` to `to` until the end of the stream or an error, then propagates it: a
/// clean end as a clean end (FIN), anything else as a reset, so truncation is never dressed
/// up as completion. A reset's or a stop's code is passed on to the other node (a
/// callee's "busy" reaches its caller).
pub(crate) async fn pump(
    shared: Arc<Shared>,
    session: SessionId,
    side: Side,
    sender: NodeId,
    counters: Counted,
    mut from: quinn::RecvStream,
    mut to: quinn::SendStream,
) {
    loop {
        let chunk = tokio::select! {
            r = from.read_chunk(CHUNK, true) => r,
            stopped = to.stopped() => {
                // A stop's code is passed on, as a reset's is below.
                let code = stopped.ok().flatten().unwrap_or(0u32.into());
                let _ = from.stop(code);
                return;
            }
        };
        match chunk {
            Ok(Some(chunk)) => {
                let len = chunk.bytes.len() as u64;
                let wait = shared.byte_limiter.charge(&sender, len, Instant::now());
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                let (chunks, finish) = shared.hook_chunk(session, side, chunk.bytes);
                for bytes in chunks {
                    if let Err(e) = to.write_chunk(bytes).await {
                        let code = match e {
                            quinn::WriteError::Stopped(code) => code,
                            _ => 0u32.into(),
                        };
                        let _ = from.stop(code);
                        return;
                    }
                }
                shared
                    .metrics
                    .bytes_spliced
                    .fetch_add(len, Ordering::Relaxed);
                if let Some(c) = &counters.sender {
                    c.sent.fetch_add(len, Ordering::Relaxed);
                }
                if let Some(c) = &counters.receiver {
                    c.received.fetch_add(len, Ordering::Relaxed);
                }
                if finish {
                    let _ = to.finish();
                    let _ = from.stop(0u32.into());
                    return;
                }
            }
            Ok(None) => {
                let _ = to.finish();
                return;
            }
            Err(e) => {
                tracing::debug!(%session, ?side, "splice source failed: {e}");
                // A reset's code is passed on (a callee's "busy" reaches its caller).
                let code = match e {
                    quinn::ReadError::Reset(code) => code,
                    _ => 0u32.into(),
                };
                let _ = to.reset(code);
                return;
            }
        }
    }
}
