//! Atomic, private file writes.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::Error;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |error| Error::Io {
        path: path.to_owned(),
        error,
    }
}

/// Writes `bytes` to `path` with mode 0600 through a temporary file in the same directory,
/// fsynced and then moved into place, so a crash leaves exactly the old or the new file.
/// Without `overwrite`, an existing file is an error (checked atomically by linking).
pub fn write_private(path: &Path, bytes: &[u8], overwrite: bool) -> Result<(), Error> {
    write_atomic(path, bytes, 0o600, overwrite)
}

/// [`write_private`] with another file mode (`0o644` for a file others should read, such as
/// a relay map).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32, overwrite: bool) -> Result<(), Error> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut suffix = [0u8; 8];
    getrandom::getrandom(&mut suffix).map_err(|_| Error::Random)?;
    let tmp = dir.join(format!(".{name}.tmp-{}", u64::from_le_bytes(suffix)));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io(&tmp))?;
        file.write_all(bytes).map_err(io(&tmp))?;
        file.sync_all().map_err(io(&tmp))?;
        if overwrite {
            fs::rename(&tmp, path).map_err(io(path))?;
        } else {
            fs::hard_link(&tmp, path).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    Error::AlreadyExists {
                        path: path.to_owned(),
                    }
                } else {
                    Error::Io {
                        path: path.to_owned(),
                        error: e,
                    }
                }
            })?;
            fs::remove_file(&tmp).map_err(io(&tmp))?;
        }
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// An exclusive lock on `<path>.lock` (created 0600), held until dropped: one writer at a
/// time for a read-modify-write of `path` (two `revoke` commands at once must not lose one).
#[derive(Debug)]
pub struct FileLock {
    _file: fs::File,
}

/// Takes the lock for `path`, waiting for another holder to let go.
pub fn lock(path: &Path) -> Result<FileLock, Error> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = std::path::PathBuf::from(name);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(io(&lock_path))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive).map_err(|e| Error::Io {
        path: lock_path.clone(),
        error: e.into(),
    })?;
    Ok(FileLock { _file: file })
}

/// The effective uid of this process.
pub fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Reads a file that must belong to the user running nullport and not be readable by group
/// or others.
pub fn read_private(path: &Path) -> Result<Vec<u8>, Error> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = fs::metadata(path).map_err(io(path))?;
    let mode = meta.permissions().mode() & 0o777;
    if meta.uid() != euid() {
        return Err(Error::ForeignOwner {
            path: path.to_owned(),
            owner: meta.uid(),
            euid: euid(),
        });
    }
    if mode & 0o077 != 0 {
        return Err(Error::LoosePermissions {
            path: path.to_owned(),
            mode,
        });
    }
    fs::read(path).map_err(io(path))
}

/// Checks that `dir` is a directory of the user running nullport with no access for group
/// or others (a node's home: it holds the key, the control socket and the audit log).
pub fn check_private_dir(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = fs::metadata(dir).map_err(io(dir))?;
    let mode = meta.permissions().mode() & 0o777;
    if !meta.is_dir() || meta.uid() != euid() || mode & 0o077 != 0 {
        return Err(Error::LooseDirectory {
            path: dir.to_owned(),
            mode,
            owner: meta.uid(),
            euid: euid(),
        });
    }
    Ok(())
}
