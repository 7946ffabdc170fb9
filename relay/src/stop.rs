//! Stopping the relay: SIGTERM and SIGINT, caught from the start of `run`.

/// SIGTERM and SIGINT, caught from when this is made (until then their default action
/// would kill the process).
pub(crate) struct StopSignals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    pub(crate) fn new() -> StopSignals {
        use tokio::signal::unix::{SignalKind, signal};
        let catch = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("no {name} handler: {e}");
                None
            }
        };
        StopSignals {
            term: catch(SignalKind::terminate(), "SIGTERM"),
            int: catch(SignalKind::interrupt(), "SIGINT"),
        }
    }

    /// The next SIGTERM or SIGINT.
    pub(crate) async fn next(&mut self) {
        async fn on(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            () = on(&mut self.term) => {},
            () = on(&mut self.int) => {},
        }
    }
}
