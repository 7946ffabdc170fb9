//! Sandboxed service processes (`expose mcp|exec ... --sandbox`).
//!
//! A sandboxed process is started through two layers, each a maintained mechanism:
//!
//! 1. **bubblewrap** (`bwrap`, from the distribution) gives it its own mount, PID, IPC, UTS
//!    and (unless `--net`) network namespaces; a read-only view of the system (`/usr` and the
//!    few files of `/etc` programs need, never `/etc/shadow` or the rest of `/etc`), a
//!    private tmpfs for `/tmp` and its home, only the paths the operator listed
//!    (`--ro`, `--rw`), a new session (no terminal injection) and death with its parent.
//! 2. Inside, `nullport` itself ([`inside`]) then sets resource limits (memory, processes,
//!    CPU time, no core files), leaves root for an unprivileged user when the daemon runs as
//!    root, applies Landlock rules (the same paths, by the kernel's LSM, a second wall behind
//!    the mounts), a seccomp filter (no sockets but Unix ones without `--net`; never ptrace,
//!    bpf, mount, module or keyring calls), no new privileges, and executes the server.
//!
//! Fail closed: if a layer the service's [`Level`] requires is missing on this kernel, the
//! process does not start (the caller is told the service is unavailable and the daemon log
//! says why). The operator may accept a named weaker level (`--sandbox-level no-landlock`).
//! When a session ends the whole PID namespace is killed and waited for ([`end`]): no
//! process, mount or tmpfs file outlives it.

pub mod inside;
mod paths;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};

pub use paths::{SYSTEM_ETC, SYSTEM_ROOTS};

/// The home directory a sandboxed process sees (a private tmpfs).
pub const SANDBOX_HOME: &str = "/home/sandbox";
/// The user a sandboxed process runs as when the daemon runs as root (`nobody`).
pub const SANDBOX_UID: u32 = 65534;
/// The group a sandboxed process runs as when the daemon runs as root (`nogroup`).
pub const SANDBOX_GID: u32 = 65534;
/// The first argument that makes `nullport` the in-sandbox launcher ([`inside::main`]).
pub const INSIDE_ARG: &str = "__sandbox-exec";

/// How much isolation a sandboxed service requires before its process may start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Level {
    /// Namespaces, seccomp, resource limits and Landlock: all of it, or no start.
    #[default]
    Full,
    /// Everything but Landlock (for kernels without it), accepted by the operator by name.
    NoLandlock,
}

impl Level {
    /// The name used on the command line and in the config file.
    pub fn name(self) -> &'static str {
        match self {
            Level::Full => "full",
            Level::NoLandlock => "no-landlock",
        }
    }

    /// Parses [`Level::name`].
    pub fn parse(s: &str) -> Option<Level> {
        match s {
            "full" => Some(Level::Full),
            "no-landlock" => Some(Level::NoLandlock),
            _ => None,
        }
    }
}

/// A service's sandbox, as configured (`[services.NAME.sandbox]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sandbox {
    /// Paths the process may read (and execute), bound read-only at the same place.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ro: Vec<PathBuf>,
    /// Paths the process may read and write, bound at the same place.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rw: Vec<PathBuf>,
    /// Share the host's network (otherwise: none at all, and no network sockets).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub net: bool,
    /// Largest data segment (heap), in MiB (`RLIMIT_DATA`).
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u64,
    /// Most processes (and threads) of the sandbox's user (`RLIMIT_NPROC`).
    #[serde(default = "default_processes")]
    pub processes: u64,
    /// Most CPU seconds one process may use (`RLIMIT_CPU`).
    #[serde(default = "default_cpu_secs")]
    pub cpu_secs: u64,
    /// The isolation required to start.
    #[serde(default, skip_serializing_if = "is_full")]
    pub level: Level,
}

fn default_memory_mib() -> u64 {
    2048
}
fn default_processes() -> u64 {
    256
}
fn default_cpu_secs() -> u64 {
    3600
}
fn is_full(level: &Level) -> bool {
    *level == Level::Full
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox {
            ro: Vec::new(),
            rw: Vec::new(),
            net: false,
            memory_mib: default_memory_mib(),
            processes: default_processes(),
            cpu_secs: default_cpu_secs(),
            level: Level::Full,
        }
    }
}

impl std::fmt::Display for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sandbox: own mount, PID, IPC, UTS namespaces, {}; read-only system, private /tmp and home",
            if self.net {
                "host network"
            } else {
                "no network"
            }
        )?;
        for p in &self.ro {
            write!(f, "; ro {}", p.display())?;
        }
        for p in &self.rw {
            write!(f, "; rw {}", p.display())?;
        }
        write!(
            f,
            "; seccomp{}; limits {} MiB, {} processes, {} CPU s; {}",
            if self.net {
                ""
            } else {
                " (no network sockets)"
            },
            self.memory_mib,
            self.processes,
            self.cpu_secs,
            match self.level {
                Level::Full => "Landlock required",
                Level::NoLandlock => "WITHOUT Landlock (accepted: no-landlock)",
            }
        )
    }
}

/// Why a sandboxed process cannot start, or a sandbox is not acceptable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// bubblewrap is not installed.
    #[error(
        "bubblewrap (bwrap) is not installed: install it (Debian: apt install bubblewrap) or expose without --sandbox"
    )]
    NoBubblewrap,
    /// A listed path is not absolute, does not exist, or is not allowed.
    #[error("{path}: {why}")]
    BadPath {
        /// The path.
        path: PathBuf,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A `--rw` path the sandbox's user could not write.
    #[error(
        "{0}: not writable by the sandbox's user (uid {SANDBOX_UID}, `nobody`; the daemon runs as root): make it theirs (chown {SANDBOX_UID}:{SANDBOX_GID}) or writable by others"
    )]
    NotWritable(PathBuf),
    /// The program is not visible inside the sandbox.
    #[error(
        "{0}: the program is not inside the sandbox (not under /usr, /bin, /sbin, /lib or a --ro path); add --ro with its directory"
    )]
    ProgramOutside(PathBuf),
    /// A sandbox path lies inside a path some sandbox may write: what is bound could be
    /// swapped for a symlink by that sandbox (and a read-only path would be writable).
    #[error("{path}: inside {rw}, which a sandbox may write; bind a path outside every --rw path")]
    InsideWritable {
        /// The path.
        path: PathBuf,
        /// The writable path it is inside.
        rw: PathBuf,
    },
    /// A sandbox path is, holds or lies inside the node's home (its key, policy, audit log).
    #[error("{0}: overlaps the node's home, which no sandbox may see")]
    TouchesHome(PathBuf),
    /// A limit is zero.
    #[error("sandbox limits must be at least 1 (memory MiB, processes, CPU seconds)")]
    ZeroLimit,
    /// The probe (a sandboxed `true`) failed: the isolation is not available here.
    #[error("the sandbox cannot start on this machine: {0}")]
    Unavailable(String),
    /// Starting a process failed.
    #[error("cannot start the sandbox: {0}")]
    Io(#[from] std::io::Error),
}

impl Sandbox {
    /// Checks the configuration against this machine: absolute, existing paths (not `/` or
    /// a system directory for `--rw`), `--rw` writable by the sandbox's user, the program
    /// visible inside, bubblewrap installed, limits not zero.
    pub fn check(&self, program: &str, path_var: Option<&str>) -> Result<(), SandboxError> {
        if self.memory_mib == 0 || self.processes == 0 || self.cpu_secs == 0 {
            return Err(SandboxError::ZeroLimit);
        }
        for p in self.ro.iter().chain(&self.rw) {
            paths::check_bindable(p)?;
        }
        for p in &self.rw {
            paths::check_writable(p, running_as_root())?;
        }
        let program = paths::resolve_program(program, path_var)
            .ok_or_else(|| SandboxError::ProgramOutside(PathBuf::from(program)))?;
        if !paths::visible_inside(&program, &self.ro, &self.rw) {
            return Err(SandboxError::ProgramOutside(program));
        }
        bwrap().ok_or(SandboxError::NoBubblewrap)?;
        Ok(())
    }

    /// The command that runs `command` in this sandbox, with exactly `env` as its
    /// environment (HOME set to [`SANDBOX_HOME`]), stdio piped, killed on drop.
    pub fn command(
        &self,
        command: &[String],
        env: &[(String, String)],
    ) -> Result<Command, SandboxError> {
        let bwrap = bwrap().ok_or(SandboxError::NoBubblewrap)?;
        let me = std::env::current_exe()?;
        let (program, args) = command.split_first().ok_or(SandboxError::BadPath {
            path: PathBuf::new(),
            why: "empty command",
        })?;
        // The program as the daemon finds it (on the PATH it was given), by absolute path:
        // inside, PATH is the system's.
        let path_var = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_str());
        let resolved = paths::resolve_program(program, path_var)
            .ok_or_else(|| SandboxError::ProgramOutside(PathBuf::from(program)))?;
        let mut bound = Vec::new();
        for p in self.ro.iter().chain(&self.rw) {
            use std::os::unix::fs::MetadataExt;
            let m = std::fs::symlink_metadata(p)?;
            if m.file_type().is_symlink() {
                return Err(SandboxError::BadPath {
                    path: p.clone(),
                    why: "not a resolved path (a symlink, `.` or `..` in it): give the path it resolves to",
                });
            }
            bound.push((p.clone(), m.dev(), m.ino()));
        }
        let plan = inside::Plan {
            sandbox: self.clone(),
            program: resolved.to_string_lossy().into_owned(),
            args: args.to_vec(),
            bound,
        };
        let plan = serde_json::to_string(&plan).map_err(std::io::Error::other)?;
        let args = bwrap_args(self, &me);
        tracing::debug!(?args, "bubblewrap");
        let mut cmd = Command::new(bwrap);
        cmd.args(args)
            .arg("--")
            .arg(&me)
            .arg(INSIDE_ARG)
            .arg(plan)
            .env_clear()
            .envs(
                env.iter()
                    .filter(|(k, _)| k != "HOME" && k != "TMPDIR" && k != "PATH")
                    .map(|(k, v)| (k, v)),
            )
            .env("HOME", SANDBOX_HOME)
            .env("PATH", SANDBOX_PATH)
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        Ok(cmd)
    }

    /// Starts `true` in this sandbox and waits for it: proves that every layer the level
    /// requires works here. The error carries what the launcher said.
    pub async fn probe(&self, path_var: Option<&str>) -> Result<(), SandboxError> {
        let mut env = Vec::new();
        if let Some(p) = path_var {
            env.push(("PATH".to_owned(), p.to_owned()));
        }
        let mut cmd = self.command(&["true".to_owned()], &env)?;
        cmd.stdin(Stdio::null());
        let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
            .await
            .map_err(|_| SandboxError::Unavailable("the probe did not finish in 30 s".into()))??;
        if out.status.success() {
            return Ok(());
        }
        let said = String::from_utf8_lossy(&out.stderr);
        let said = said.trim();
        Err(SandboxError::Unavailable(if said.is_empty() {
            format!("the probe ended with {}", out.status)
        } else {
            said.to_owned()
        }))
    }
}

/// Checks every sandboxed service of a configuration, as (name, sandbox, program): each
/// against this machine ([`Sandbox::check`]), none inside a path any of them may write,
/// none overlapping the node's `home`. Run when a configuration is loaded and when one is
/// changed; the error names the service.
pub fn check_all<'a>(
    services: impl IntoIterator<Item = (&'a str, &'a Sandbox, &'a str)>,
    home: &Path,
    path_var: Option<&str>,
) -> Result<(), (String, SandboxError)> {
    let services: Vec<_> = services.into_iter().collect();
    let home = std::fs::canonicalize(home).unwrap_or_else(|_| home.to_owned());
    let writable: Vec<&PathBuf> = services.iter().flat_map(|(_, s, _)| &s.rw).collect();
    for (name, sandbox, program) in &services {
        let fail = |e| Err(((*name).to_owned(), e));
        if let Err(e) = sandbox.check(program, path_var) {
            return fail(e);
        }
        for p in sandbox.ro.iter().chain(&sandbox.rw) {
            if p.starts_with(&home) || home.starts_with(p) {
                return fail(SandboxError::TouchesHome(p.clone()));
            }
            if let Some(rw) = writable.iter().find(|rw| p.starts_with(rw) && p != **rw) {
                return fail(SandboxError::InsideWritable {
                    path: p.clone(),
                    rw: (*rw).clone(),
                });
            }
        }
    }
    Ok(())
}

/// The PATH a sandboxed process gets (the daemon's may name directories it cannot see).
pub const SANDBOX_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where bubblewrap is, if installed.
pub fn bwrap() -> Option<PathBuf> {
    ["/usr/bin/bwrap", "/bin/bwrap", "/usr/local/bin/bwrap"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

fn running_as_root() -> bool {
    rustix::process::getuid().is_root()
}

/// bubblewrap's arguments for `sandbox`, `me` being the launcher (this executable).
fn bwrap_args(sandbox: &Sandbox, me: &Path) -> Vec<std::ffi::OsString> {
    let mut a: Vec<std::ffi::OsString> = Vec::new();
    let mut push = |parts: &[&std::ffi::OsStr]| a.extend(parts.iter().map(|p| p.to_os_string()));
    // As root, no user namespace: the launcher leaves root for `nobody` for real (a user
    // namespace would map nobody back onto root). Otherwise one is needed to make the rest.
    if !running_as_root() {
        push(&["--unshare-user".as_ref()]);
    }
    push(&[
        "--unshare-ipc".as_ref(),
        "--unshare-pid".as_ref(),
        "--unshare-uts".as_ref(),
        "--unshare-cgroup-try".as_ref(),
    ]);
    if !sandbox.net {
        push(&["--unshare-net".as_ref()]);
    }
    push(&[
        "--die-with-parent".as_ref(),
        "--new-session".as_ref(),
        "--hostname".as_ref(),
        "sandbox".as_ref(),
    ]);
    for root in SYSTEM_ROOTS {
        let path = Path::new(root);
        match std::fs::read_link(path) {
            // Merged /usr: /bin -> usr/bin and the like stay symlinks.
            Ok(target) => push(&["--symlink".as_ref(), target.as_os_str(), path.as_os_str()]),
            Err(_) if path.is_dir() => {
                push(&["--ro-bind".as_ref(), path.as_os_str(), path.as_os_str()])
            }
            Err(_) => {}
        }
    }
    // The directories leading to what is bound from /etc, traversable by the sandbox's
    // user (bubblewrap would make them 0700).
    for dir in parents(SYSTEM_ETC.iter().map(Path::new)) {
        push(&[
            "--perms".as_ref(),
            "0755".as_ref(),
            "--dir".as_ref(),
            dir.as_os_str(),
        ]);
    }
    for file in SYSTEM_ETC {
        push(&["--ro-bind-try".as_ref(), file.as_ref(), file.as_ref()]);
    }
    if sandbox.net {
        push(&[
            "--ro-bind-try".as_ref(),
            "/etc/resolv.conf".as_ref(),
            "/etc/resolv.conf".as_ref(),
        ]);
    }
    // /tmp and the home are private and writable by the sandbox's user (`nobody` when the
    // daemon is root, hence the sticky, world-writable mode), each at most the memory limit
    // (tmpfs is memory).
    let tmpfs_size = sandbox.memory_mib.saturating_mul(1 << 20).to_string();
    push(&[
        "--proc".as_ref(),
        "/proc".as_ref(),
        "--dev".as_ref(),
        "/dev".as_ref(),
        "--perms".as_ref(),
        "1777".as_ref(),
        "--size".as_ref(),
        tmpfs_size.as_ref(),
        "--tmpfs".as_ref(),
        "/tmp".as_ref(),
        "--size".as_ref(),
        tmpfs_size.as_ref(),
        "--tmpfs".as_ref(),
        "/home".as_ref(),
        "--perms".as_ref(),
        "1777".as_ref(),
        "--dir".as_ref(),
        SANDBOX_HOME.as_ref(),
    ]);
    // The launcher itself, when it is not already under a system directory.
    let launcher = (!SYSTEM_ROOTS.iter().any(|r| me.starts_with(r))).then_some(me);
    // The same for the operator's paths and the launcher (after /tmp and /home are
    // mounted, before anything is bound under them).
    let operator = sandbox.ro.iter().chain(&sandbox.rw).map(PathBuf::as_path);
    for dir in parents(operator.chain(launcher)) {
        push(&[
            "--perms".as_ref(),
            "0755".as_ref(),
            "--dir".as_ref(),
            dir.as_os_str(),
        ]);
    }
    if let Some(me) = launcher {
        push(&["--ro-bind".as_ref(), me.as_os_str(), me.as_os_str()]);
    }
    for p in &sandbox.ro {
        push(&["--ro-bind".as_ref(), p.as_os_str(), p.as_os_str()]);
    }
    for p in &sandbox.rw {
        push(&["--bind".as_ref(), p.as_os_str(), p.as_os_str()]);
    }
    push(&["--chdir".as_ref(), "/tmp".as_ref()]);
    a
}

/// The directories leading to `paths`, parents first, once each; not `/`, `/tmp`,
/// `/home` or system directories (made or bound already).
fn parents<'a>(paths: impl Iterator<Item = &'a Path>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for p in paths {
        for dir in p.ancestors().skip(1).collect::<Vec<_>>().into_iter().rev() {
            let made = ["/", "/tmp", "/home"].iter().any(|s| dir == Path::new(s))
                || SYSTEM_ROOTS.iter().any(|r| dir.starts_with(r));
            if !made && !dirs.iter().any(|d| d == dir) {
                dirs.push(dir.to_owned());
            }
        }
    }
    dirs
}

/// Ends a sandboxed process and everything in its PID namespace, and waits until they are
/// gone (bounded at 5 s): the namespace's init is the launcher's child, and the kernel
/// kills and reaps the whole namespace before that init is gone.
pub async fn end(child: &mut Child) {
    let inits = child.id().map(paths::children_of).unwrap_or_default();
    crate::services::process_group::kill(child);
    let _ = child.start_kill();
    let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while inits.iter().any(paths::still_running) {
        if Instant::now() > deadline {
            tracing::warn!("a sandbox's processes did not end within 5 s of the session");
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[cfg(test)]
mod tests;
