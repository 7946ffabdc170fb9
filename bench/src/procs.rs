//! Child processes of the suite (relays, servers, sshd) and what they cost: CPU time and
//! resident memory from `/proc`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};

/// A child process, killed when dropped.
pub struct Proc {
    child: Child,
    /// What it printed first (its address or identity).
    pub line: String,
}

impl Proc {
    /// Runs this binary with `args` and waits for its first line of output.
    pub fn role(args: &[&str]) -> Result<Proc> {
        let exe = std::env::current_exe().context("locating np-bench")?;
        Proc::spawn(Command::new(exe).args(args), true)
    }

    /// Spawns `cmd`; with `read_line`, waits for its first line of standard output.
    pub fn spawn(cmd: &mut Command, read_line: bool) -> Result<Proc> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(if read_line {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        let mut line = String::new();
        if read_line {
            if let Some(out) = child.stdout.take() {
                BufReader::new(out).read_line(&mut line)?;
            }
            if line.is_empty() {
                let _ = child.kill();
                bail!("{cmd:?} exited without saying where it listens");
            }
        }
        Ok(Proc {
            child,
            line: line.trim().to_owned(),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The `i`th word of its first line.
    pub fn word(&self, i: usize) -> Result<&str> {
        self.line
            .split_whitespace()
            .nth(i)
            .with_context(|| format!("unexpected output {:?}", self.line))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces.
    let rest = &text[text.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// `pid` and all its descendants.
pub fn tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return all;
    };
    let parents: Vec<(u32, u32)> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| Some((p, stat_fields(p)?.get(1)?.parse().ok()?)))
        .collect();
    let mut i = 0;
    while i < all.len() {
        let parent = all[i];
        all.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    all
}

/// CPU clock ticks (user + system) used so far by `pid` alone.
fn cpu_ticks(pid: u32) -> u64 {
    stat_fields(pid)
        .map(|f| {
            // Fields after the name: state(0) ppid(1) ... utime(11) stime(12).
            let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            get(11) + get(12)
        })
        .unwrap_or(0)
}

/// CPU seconds (user + system) used so far by `pid` and its descendants.
pub fn cpu_seconds(pid: u32) -> f64 {
    let ticks: u64 = tree(pid).into_iter().map(cpu_ticks).sum();
    ticks as f64 / 100.0
}

/// CPU seconds (user + system) used so far by `pid` itself, without its children (for this
/// process, whose children are the relays and servers).
pub fn own_cpu_seconds(pid: u32) -> f64 {
    cpu_ticks(pid) as f64 / 100.0
}

/// Resident memory of `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Context switches (voluntary + involuntary) so far, over every thread of `pid`.
pub fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .map(|s| {
            s.lines()
                .filter_map(|l| {
                    l.strip_prefix("voluntary_ctxt_switches:")
                        .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
                })
                .filter_map(|v| v.trim().parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}
