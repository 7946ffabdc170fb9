//! Network namespaces as hosts, for the tests that run nullport as separate processes
//! (`tests/all/netns.rs`, `tests/all/fleet_netns.rs`): create them, run and spawn programs in
//! them, drop new inbound connections on a node host, and remove them all (with every process
//! spawned in them) on drop.
//!
//! These need root, `ip` (iproute2), `nft` (nftables) and `ss`; [`can_run`] reports a test
//! that lacks them as not run (a failure under `CI=true`, see [`crate::skip`]).

use std::io::BufReader;
use std::process::{Child, ChildStdout, Command, Stdio};

use nullport_protocol::Identity;

/// Runs `args` (program first) and returns its stdout, or its stderr as the error.
pub fn run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{args:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Root, `ip`, `nft` and `ss`: what namespace tests need.
pub fn prerequisites() -> Result<(), String> {
    let uid = run(&["id", "-u"])?;
    if uid.trim() != "0" {
        return Err("not root".into());
    }
    for tool in ["ip", "nft", "ss"] {
        run(&["sh", "-c", &format!("command -v {tool}")])
            .map_err(|_| format!("{tool} not installed"))?;
    }
    Ok(())
}

/// Reports `test` as not run (fails under CI) when namespaces cannot be made here.
pub fn can_run(test: &str) -> bool {
    match prerequisites() {
        Ok(()) => true,
        Err(why) => {
            crate::skip::not_run(test, &format!("{why} (needs root, iproute2, nftables)"));
            false
        }
    }
}

/// Network namespaces (each with `lo` up), removed on drop with every process spawned in
/// them (killed first).
pub struct Namespaces {
    /// The namespaces' names, in the order given to [`Namespaces::create`].
    pub names: Vec<String>,
    children: Vec<Option<Child>>,
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in &self.names {
            let _ = run(&["ip", "netns", "del", n]);
        }
    }
}

impl Namespaces {
    /// Creates the namespaces `names` (a name already taken is an error) with `lo` up.
    pub fn create(names: Vec<String>) -> Result<Namespaces, String> {
        let mut ns = Namespaces {
            names: Vec::new(),
            children: Vec::new(),
        };
        for n in names {
            run(&["ip", "netns", "add", &n])?;
            ns.names.push(n);
            let n = &ns.names[ns.names.len() - 1];
            run(&["ip", "-n", n, "link", "set", "lo", "up"])?;
        }
        Ok(ns)
    }

    /// The name of namespace `i`.
    pub fn name(&self, i: usize) -> &str {
        &self.names[i]
    }

    /// Runs `args` in namespace `i`; its stdout, or its stderr as the error.
    pub fn exec(&self, i: usize, args: &[&str]) -> Result<String, String> {
        let mut full = vec!["ip", "netns", "exec", self.names[i].as_str()];
        full.extend_from_slice(args);
        run(&full)
    }

    /// Starts `args` in namespace `i` (stdout piped, stderr inherited), killed on drop.
    pub fn spawn(
        &mut self,
        i: usize,
        args: &[&str],
    ) -> Result<(BufReader<ChildStdout>, u32), String> {
        let id = self.spawn_with(i, args, Stdio::null(), Stdio::piped(), Stdio::inherit())?;
        let child = self.child(id);
        let pid = child.id();
        let stdout = child.stdout.take().ok_or("no stdout")?;
        Ok((BufReader::new(stdout), pid))
    }

    /// Starts `args` in namespace `i` with the given stdin, stdout and stderr; returns its
    /// number for [`Namespaces::child`] and [`Namespaces::kill`]. `ip netns exec` execs the
    /// program, so the child is the program itself (a kill reaches it).
    pub fn spawn_with(
        &mut self,
        i: usize,
        args: &[&str],
        stdin: Stdio,
        stdout: Stdio,
        stderr: Stdio,
    ) -> Result<usize, String> {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.names[i]])
            .args(args)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("{args:?}: {e}"))?;
        self.children.push(Some(child));
        Ok(self.children.len() - 1)
    }

    /// A process spawned by [`Namespaces::spawn_with`] (panics if it was killed).
    pub fn child(&mut self, id: usize) -> &mut Child {
        self.children[id]
            .as_mut()
            .unwrap_or_else(|| panic!("process {id} was killed"))
    }

    /// Kills a process at once (SIGKILL) and reaps it.
    pub fn kill(&mut self, id: usize) {
        if let Some(mut c) = self.children[id].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Drops every new inbound connection or datagram in namespace `i` (a node host), and
    /// counts them (see [`Namespaces::dropped_inbound`]).
    pub fn drop_new_inbound(&self, i: usize) -> Result<(), String> {
        self.exec(i, &["nft", "add table inet nullport_test"])?;
        self.exec(
            i,
            &[
                "nft",
                "add chain inet nullport_test input { type filter hook input priority 0; policy accept; }",
            ],
        )?;
        self.exec(
            i,
            &[
                "nft",
                "add rule inet nullport_test input ct state new counter drop",
            ],
        )?;
        Ok(())
    }

    /// How many new inbound packets [`Namespaces::drop_new_inbound`] dropped in namespace `i`.
    pub fn dropped_inbound(&self, i: usize) -> u64 {
        let text = self
            .exec(i, &["nft", "list chain inet nullport_test input"])
            .unwrap_or_default();
        text.split("packets ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

/// The identity `np-testnode fleet-nodes --seeds` gives the node of `seed` (the seed's eight
/// little-endian bytes, then 0x5a), so a test can pick nodes by their home before starting
/// them.
pub fn seeded_identity(seed: u64) -> Identity {
    let mut bytes = [0x5a; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    Identity::from_seed(bytes)
}
