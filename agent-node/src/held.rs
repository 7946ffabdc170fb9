//! A caller's stream while the callee decides: read by a task of its own, up to what the
//! protocol allows before the verdict (the dial's first bytes: one frame), so that an
//! undecided channel never holds the relay link's flow-control window, and a caller that
//! sends more than that before the verdict is cut off instead of filling it.
//!
//! The bytes read stay in the deframer, undecrypted, until the channel is accepted; a denied
//! or dropped channel drops them unread.

use nullport_protocol::limits::{LENGTH_PREFIX, MAX_NOISE_MESSAGE};
use nullport_protocol::{Deframer, Error as ProtocolError};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::error::Error;

/// The most a caller may send after its last handshake message and before the verdict: one
/// whole frame (its first bytes).
pub(crate) const PRE_VERDICT_MAX: usize = LENGTH_PREFIX + MAX_NOISE_MESSAGE;

/// The reset code of a stream whose caller sent more than [`PRE_VERDICT_MAX`] before the
/// verdict.
pub(crate) const TOO_EARLY: u32 = 2;

/// The stream and what was read of it, handed back when the decision is made.
pub(crate) struct Holding {
    pub(crate) recv: quinn::RecvStream,
    pub(crate) deframer: Deframer,
    /// Why the channel cannot be accepted, if the caller broke the rule.
    violation: Option<Error>,
}

/// A caller's stream held, and read, while its channel waits for a decision.
pub(crate) struct Held {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Holding>,
}

impl Held {
    /// Starts reading `recv` (after the handshake's last message, which `deframer` no longer
    /// holds).
    pub(crate) fn start(recv: quinn::RecvStream, deframer: Deframer) -> Self {
        let (stop, stopped) = oneshot::channel();
        Self {
            stop: Some(stop),
            task: tokio::spawn(hold(recv, deframer, stopped)),
        }
    }

    /// Stops reading and hands the stream back, or the caller's violation.
    pub(crate) async fn finish(mut self) -> Result<Holding, Error> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let holding = (&mut self.task).await.map_err(|_| Error::Shutdown)?;
        match holding.violation {
            Some(e) => Err(e),
            None => Ok(holding),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // Undecided and dropped: the task ends with the stop signal's sender (and drops the
        // stream); aborting it is only a backstop.
        if self.stop.is_some() {
            self.task.abort();
        }
    }
}

async fn hold(
    mut recv: quinn::RecvStream,
    mut deframer: Deframer,
    mut stopped: oneshot::Receiver<()>,
) -> Holding {
    let mut probe = [0u8; 1];
    let violation = loop {
        let buffered = deframer.buffered();
        if buffered > PRE_VERDICT_MAX {
            break Some(());
        }
        // Room for one byte past the bound, so that any excess shows.
        let spare = deframer.spare();
        let room = (PRE_VERDICT_MAX + 1 - buffered).min(spare.len());
        let probing = room == 0;
        let buf = if probing {
            &mut probe[..]
        } else {
            &mut spare[..room]
        };
        let read = tokio::select! {
            biased;
            _ = &mut stopped => None,
            read = recv.read(buf) => Some(read),
        };
        match read {
            None => break None,
            Some(Ok(Some(n))) if probing && n > 0 => break Some(()),
            Some(Ok(Some(n))) => deframer.commit(n),
            // The caller ended its side, or the stream failed: nothing more to hold; the
            // channel meets the end or the error when it reads on.
            Some(Ok(None) | Err(_)) => {
                let _ = (&mut stopped).await;
                break None;
            }
        }
    };
    let violation = violation.map(|()| {
        tracing::warn!(
            "the caller sent more than its first bytes before the verdict; refusing its channel"
        );
        let _ = recv.stop(TOO_EARLY.into());
        Error::Protocol(ProtocolError::UnexpectedFrame {
            what: "application bytes beyond the first bytes, before the verdict",
        })
    });
    Holding {
        recv,
        deframer,
        violation,
    }
}
