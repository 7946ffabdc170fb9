//! What a sandbox shows of the host, the checks on operator paths, and finding a sandbox's
//! processes in `/proc`.

use std::path::{Path, PathBuf};

use super::{SANDBOX_GID, SANDBOX_UID, SandboxError};

/// System directories bound read-only (or kept as the symlinks they are, merged-/usr).
pub const SYSTEM_ROOTS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
];

/// The only parts of `/etc` a sandbox sees, read-only: what the dynamic linker, TLS,
/// time zones and user lookups need. Never shadow, sudoers, ssh keys, or the rest.
pub const SYSTEM_ETC: &[&str] = &[
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/ssl/certs",
    "/etc/ssl/openssl.cnf",
    "/etc/ca-certificates",
    "/etc/localtime",
    "/etc/nsswitch.conf",
    "/etc/hosts",
    "/etc/passwd",
    "/etc/group",
    "/etc/mime.types",
];

/// Checks a `--ro`/`--rw` path: absolute, existing, already resolved (no symlink, `.` or
/// `..` in it: what is bound is what the operator reads), and not `/` or a kernel
/// filesystem.
pub(super) fn check_bindable(path: &Path) -> Result<(), SandboxError> {
    let bad = |why| SandboxError::BadPath {
        path: path.to_owned(),
        why,
    };
    if !path.is_absolute() {
        return Err(bad("not an absolute path"));
    }
    let resolved = std::fs::canonicalize(path).map_err(|_| bad("does not exist"))?;
    if resolved != path {
        return Err(bad(
            "not a resolved path (a symlink, `.` or `..` in it): give the path it resolves to",
        ));
    }
    if path == Path::new("/")
        || ["/proc", "/sys", "/dev"]
            .iter()
            .any(|k| path.starts_with(k))
    {
        return Err(bad("the root or a kernel filesystem cannot be bound"));
    }
    Ok(())
}

/// Checks that the sandbox's user can write `path`: owned by it or writable by others when
/// the daemon runs as root (the sandbox runs as `nobody` then), writable by the daemon's
/// user otherwise. Also refuses system directories.
pub(super) fn check_writable(path: &Path, root: bool) -> Result<(), SandboxError> {
    if SYSTEM_ROOTS.iter().any(|r| path.starts_with(r)) || path.starts_with("/etc") {
        return Err(SandboxError::BadPath {
            path: path.to_owned(),
            why: "a system directory cannot be bound writable",
        });
    }
    let writable = if root {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).is_ok_and(|m| {
            (m.uid() == SANDBOX_UID && m.mode() & 0o200 != 0)
                || (m.gid() == SANDBOX_GID && m.mode() & 0o020 != 0)
                || m.mode() & 0o002 != 0
        })
    } else {
        rustix::fs::access(path, rustix::fs::Access::WRITE_OK).is_ok()
    };
    if writable {
        Ok(())
    } else {
        Err(SandboxError::NotWritable(path.to_owned()))
    }
}

/// The program a command names, as an absolute path: itself if it has a `/`, else the
/// first match in `path_var`.
pub(super) fn resolve_program(program: &str, path_var: Option<&str>) -> Option<PathBuf> {
    if program.contains('/') {
        return std::path::absolute(program).ok().filter(|p| p.is_file());
    }
    path_var?
        .split(':')
        .filter(|d| d.starts_with('/'))
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
}

/// Whether `program` (and what it resolves to) is inside the sandbox's view.
pub(super) fn visible_inside(program: &Path, ro: &[PathBuf], rw: &[PathBuf]) -> bool {
    let inside = |p: &Path| {
        SYSTEM_ROOTS.iter().any(|r| p.starts_with(r))
            || SYSTEM_ETC.iter().any(|e| p.starts_with(e))
            || ro.iter().chain(rw).any(|b| p.starts_with(b))
    };
    inside(program) && std::fs::canonicalize(program).is_ok_and(|p| inside(&p))
}

/// A process, as (pid, start time in clock ticks since boot): a pid alone may be reused.
pub(super) type ProcessRef = (u32, u64);

/// The children of `parent` (scanning `/proc`).
pub(super) fn children_of(parent: u32) -> Vec<ProcessRef> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = read_stat(pid)?;
            (stat.ppid == parent).then_some((pid, stat.start))
        })
        .collect()
}

/// Whether the process is still there (a zombie has already ended).
pub(super) fn still_running(process: &ProcessRef) -> bool {
    read_stat(process.0).is_some_and(|s| s.start == process.1 && s.state != 'Z')
}

struct Stat {
    state: char,
    ppid: u32,
    start: u64,
}

fn read_stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Parses `/proc/PID/stat` (the command name, in parentheses, may hold anything).
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_names_parse() {
        let line = "1234 (a) b (c) S 99 1234 1234 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 5678 0 0";
        let s = parse_stat(line).unwrap();
        assert_eq!((s.state, s.ppid, s.start), ('S', 99, 5678));
        assert!(parse_stat("1234 (x").is_none());
        assert!(parse_stat("").is_none());
    }

    #[test]
    fn operator_paths_must_be_absolute_resolved_and_not_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(dir.path()).unwrap();
        assert!(check_bindable(&real).is_ok());
        let err = |p: &Path| match check_bindable(p) {
            Err(SandboxError::BadPath { why, .. }) => why,
            other => panic!("{other:?}"),
        };
        assert_eq!(err(Path::new("relative")), "not an absolute path");
        assert_eq!(err(&real.join("missing")), "does not exist");
        std::fs::create_dir(real.join("sub")).unwrap();
        assert!(err(&real.join("sub/..")).contains("not a resolved path"));
        std::os::unix::fs::symlink(&real, real.join("link")).unwrap();
        assert!(err(&real.join("link")).contains("not a resolved path"));
        assert!(err(Path::new("/")).contains("root"));
        assert!(err(Path::new("/proc")).contains("kernel"));
        assert!(matches!(
            check_writable(Path::new("/usr/lib"), true),
            Err(SandboxError::BadPath { .. })
        ));
    }

    #[test]
    fn a_program_must_be_visible_inside() {
        assert!(visible_inside(Path::new("/bin/sh"), &[], &[]));
        let dir = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(dir.path()).unwrap();
        let prog = real.join("server");
        std::fs::write(&prog, "").unwrap();
        assert!(!visible_inside(&prog, &[], &[]));
        assert!(visible_inside(&prog, std::slice::from_ref(&real), &[]));
        // A symlink from a bound directory to a file outside is not visible.
        let other = tempfile::tempdir().unwrap();
        let other = std::fs::canonicalize(other.path()).unwrap();
        std::os::unix::fs::symlink(&prog, other.join("server")).unwrap();
        assert!(!visible_inside(
            &other.join("server"),
            std::slice::from_ref(&other),
            &[]
        ));
    }
}
