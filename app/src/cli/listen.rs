//! `connect --listen`: the listening socket handed to the daemon, which accepts on it.

use super::*;
use nullport::control::Local;

/// How often `connect` asks again for a daemon it cannot reach.
pub(super) const RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// Hands `listener` to the daemon, which then accepts on it and serves every connection
/// itself (no hand-over per connection); prints what the daemon reports about refused
/// connections, and hands the listener over again whenever the daemon lets go of it (a
/// restart). Returns `None` when the daemon does not take listeners (connections are then
/// handed over one by one), or why the daemon cannot be asked right now.
pub(super) async fn listen_through_daemon(
    home: &Home,
    (peer, service): (&str, &str),
    token: &Option<String>,
    listener: &impl std::os::fd::AsFd,
) -> Option<anyhow::Error> {
    use tokio::io::AsyncBufReadExt;
    let request = ControlRequest::Attach {
        peer: peer.to_owned(),
        service: service.to_owned(),
        local: Local::Listener,
        mcp: false,
        pin: false,
        token: token.clone(),
    };
    loop {
        let (response, mut reader) =
            match control_with_fds(home, &request, &[listener.as_fd()]).await {
                Ok(answer) => answer,
                Err(e) => return Some(e),
            };
        if !response.ok {
            let error = response.error.unwrap_or_default();
            if error.starts_with("bad request: unknown variant") {
                return None;
            }
            return Some(anyhow!("{error}"));
        }
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line).await {
                Ok(n) if n > 0 => {
                    if let Ok(note) = serde_json::from_str::<ControlResponse>(&line)
                        && let Some(e) = note.error
                    {
                        eprintln!("{}", super::printable(&e));
                    }
                }
                _ => break,
            }
        }
        eprintln!("the daemon let go of the listening socket (restarted?); handing it over again");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
