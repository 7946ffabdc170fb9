//! Process groups: each exec or MCP process leads its own, and ends with everything in it.

use tokio::process::Child;

/// Kills the process group a child leads (it was started with `process_group(0)`): the child
/// and whatever it started, daemons that did not leave the group included.
pub fn kill(child: &Child) {
    if let Some(pid) = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}
