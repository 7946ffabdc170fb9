//! The launcher inside the sandbox: `nullport __sandbox-exec PLAN`, run by bubblewrap in
//! the new namespaces. It applies what namespaces cannot (resource limits, an unprivileged
//! user, Landlock, seccomp, no new privileges) to itself, then executes the server, which
//! inherits all of it. It runs before any async runtime or thread exists, so each
//! restriction (Landlock and seccomp apply to the calling thread) covers the whole process.
//!
//! Any failure is printed to stderr (the daemon logs it) and ends the launcher with status
//! 126 before the server runs: a sandbox that cannot be made as required is not started.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use landlock::{
    ABI, Access, AccessFs, AccessNet, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus,
    Scope, path_beneath_rules,
};
use rustix::process::{Resource, Rlimit, setrlimit};
use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
};
use serde::{Deserialize, Serialize};

use super::{Level, SANDBOX_GID, SANDBOX_HOME, SANDBOX_UID, SYSTEM_ETC, SYSTEM_ROOTS, Sandbox};

/// What the launcher is asked to run, and how.
#[derive(Debug, Serialize, Deserialize)]
pub struct Plan {
    /// The sandbox's configuration.
    pub sandbox: Sandbox,
    /// The program.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Each `--ro`/`--rw` path with the (device, inode) the daemon checked: what bubblewrap
    /// mounted must be that directory, not what a swap put there in between.
    #[serde(default)]
    pub bound: Vec<(PathBuf, u64, u64)>,
}

/// The launcher's status when it refuses to run the server.
pub const REFUSED: u8 = 126;

/// Runs the launcher on `plan` (its JSON); returns only on failure, with the exit status.
pub fn main(plan: &str) -> std::process::ExitCode {
    let failure = match serde_json::from_str::<Plan>(plan) {
        Ok(plan) => run(&plan),
        Err(e) => format!("unreadable sandbox plan: {e}"),
    };
    eprintln!("nullport sandbox: not started: {failure}");
    std::process::ExitCode::from(REFUSED)
}

fn run(plan: &Plan) -> String {
    let s = &plan.sandbox;
    for (path, dev, ino) in &plan.bound {
        use std::os::unix::fs::MetadataExt;
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.dev() == *dev && m.ino() == *ino && !m.file_type().is_symlink() => {}
            _ => {
                return format!(
                    "{} changed between the check and the mount (swapped for another file or a symlink?)",
                    path.display()
                );
            }
        }
    }
    if let Err(e) = limits(s) {
        return format!("cannot set resource limits: {e}");
    }
    match landlock(s) {
        Ok(RulesetStatus::NotEnforced) if s.level == Level::Full => {
            return "this kernel does not enforce Landlock; the service requires it (accept `--sandbox-level no-landlock` to run without)".into();
        }
        Ok(_) => {}
        Err(e) if s.level == Level::Full => return format!("cannot apply Landlock rules: {e}"),
        Err(_) => {}
    }
    if let Err(e) = seccomp(s) {
        return format!("cannot apply the seccomp filter: {e}");
    }
    let mut cmd = std::process::Command::new(&plan.program);
    cmd.args(&plan.args);
    if rustix::process::getuid().is_root() {
        // Leaving root drops every capability and supplementary group (std calls
        // setgroups(0) before setuid when the caller is root).
        cmd.uid(SANDBOX_UID).gid(SANDBOX_GID);
    }
    let e = cmd.exec();
    format!("cannot execute {}: {e}", plan.program)
}

fn limits(s: &Sandbox) -> rustix::io::Result<()> {
    let limit = |v: u64| Rlimit {
        current: Some(v),
        maximum: Some(v),
    };
    setrlimit(Resource::Data, limit(s.memory_mib.saturating_mul(1 << 20)))?;
    setrlimit(Resource::Nproc, limit(s.processes))?;
    setrlimit(Resource::Cpu, limit(s.cpu_secs))?;
    setrlimit(Resource::Core, limit(0))?;
    Ok(())
}

/// Landlock: the system read-only, the operator's paths as listed, /tmp, the home and /dev
/// writable; without `--net`, no TCP bind or connect; no signals to, or abstract sockets
/// of, processes outside.
fn landlock(s: &Sandbox) -> Result<RulesetStatus, landlock::RulesetError> {
    let abi = ABI::V6;
    let read: Vec<PathBuf> = SYSTEM_ROOTS
        .iter()
        .chain(SYSTEM_ETC)
        .chain(&["/proc"])
        .map(PathBuf::from)
        .chain(s.ro.iter().cloned())
        .collect();
    let write: Vec<PathBuf> = ["/tmp", SANDBOX_HOME, "/dev"]
        .iter()
        .map(PathBuf::from)
        .chain(s.rw.iter().cloned())
        .collect();
    let mut ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))?
        .scope(Scope::from_all(abi))?;
    if !s.net {
        ruleset = ruleset.handle_access(AccessNet::from_all(abi))?;
    }
    let status = ruleset
        .create()?
        .add_rules(path_beneath_rules(&read, AccessFs::from_read(abi)))?
        .add_rules(path_beneath_rules(&write, AccessFs::from_all(abi)))?
        .restrict_self()?;
    Ok(status.ruleset)
}

/// Syscalls no tool server needs, refused always.
const NEVER: &[i64] = &[
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_setns,
    libc::SYS_unshare,
    // io_uring can open sockets (IORING_OP_SOCKET) without the socket() the filter checks.
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
];

/// The first seccomp filter: syscalls no tool server needs (ptrace, process_vm_*, kexec,
/// bpf, perf_event_open, userfaultfd, keyrings, modules, mount, pivot_root, setns, unshare,
/// io_uring) fail with EPERM.
pub fn never_filter() -> Result<seccompiler::BpfProgram, seccompiler::Error> {
    let arch = seccompiler::TargetArch::try_from(std::env::consts::ARCH)?;
    let rules: BTreeMap<i64, Vec<SeccompRule>> = NEVER.iter().map(|&n| (n, vec![])).collect();
    SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )?
    .try_into()
    .map_err(seccompiler::Error::Backend)
}

fn seccomp(s: &Sandbox) -> Result<(), seccompiler::Error> {
    seccompiler::apply_filter(&never_filter()?)?;
    if !s.net {
        seccompiler::apply_filter(&socket_filter()?)?;
    }
    Ok(())
}

/// Without `--net`: `socket()` of any family but AF_UNIX fails with EACCES.
pub fn socket_filter() -> Result<seccompiler::BpfProgram, seccompiler::Error> {
    let arch = seccompiler::TargetArch::try_from(std::env::consts::ARCH)?;
    let not_unix = SeccompCondition::new(
        0,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::Ne,
        libc::AF_UNIX as u64,
    )?;
    let rules = BTreeMap::from([(libc::SYS_socket, vec![SeccompRule::new(vec![not_unix])?])]);
    SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EACCES as u32),
        arch,
    )?
    .try_into()
    .map_err(seccompiler::Error::Backend)
}
