//! A node's home directory: identity key, trust store, config, policy, audit log and the
//! daemon's control socket. Several nodes on one machine are several homes.

use std::path::{Path, PathBuf};

/// The files of one node.
#[derive(Debug, Clone)]
pub struct Home {
    dir: PathBuf,
}

impl Home {
    /// `--home` if given, else `$NULLPORT_HOME`, else `$XDG_CONFIG_HOME/nullport`, else
    /// `~/.config/nullport`.
    pub fn resolve(explicit: Option<PathBuf>) -> Home {
        let dir = explicit
            .or_else(|| std::env::var_os("NULLPORT_HOME").map(PathBuf::from))
            .or_else(|| {
                std::env::var_os("XDG_CONFIG_HOME").map(|d| PathBuf::from(d).join("nullport"))
            })
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/nullport")))
            .unwrap_or_else(|| PathBuf::from(".nullport"));
        Home { dir }
    }

    /// A home at exactly `dir`.
    pub fn at(dir: impl Into<PathBuf>) -> Home {
        Home { dir: dir.into() }
    }

    /// Creates the directory (mode 0700) if needed.
    pub fn create(&self) -> std::io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The newest relay map of a fleet node (kept so a restart neither waits for the
    /// bootstrap relay nor takes an older map).
    pub fn relay_map(&self) -> PathBuf {
        self.dir.join("relay-map.json")
    }

    /// The identity key file.
    pub fn key(&self) -> PathBuf {
        self.dir.join("identity.key")
    }

    /// The trust store (aliases).
    pub fn trust(&self) -> PathBuf {
        self.dir.join("trust.toml")
    }

    /// The node config (relay, services).
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    /// The service policy.
    pub fn policy(&self) -> PathBuf {
        self.dir.join("policy.toml")
    }

    /// The audit log (JSON lines).
    pub fn audit(&self) -> PathBuf {
        self.dir.join("audit.log")
    }

    /// The latest audit checkpoint the relay countersigned (JSON).
    pub fn audit_witness(&self) -> PathBuf {
        self.dir.join("audit.witness")
    }

    /// Revocation lists received (JSON).
    pub fn revocations(&self) -> PathBuf {
        self.dir.join("revocations.json")
    }

    /// This node's own revocation list, as last published (JSON).
    pub fn revocations_issued(&self) -> PathBuf {
        self.dir.join("revocations-issued.json")
    }

    /// Key rotations this node followed (the first per old key; the old keys stay retired).
    pub fn rotations(&self) -> PathBuf {
        self.dir.join("rotations.json")
    }

    /// Pinned MCP tool manifests.
    pub fn pins(&self) -> PathBuf {
        self.dir.join("pins.json")
    }

    /// The path the edit lock is taken on (`edits.lock` beside it).
    pub fn edits_lock(&self) -> PathBuf {
        self.dir.join("edits")
    }

    /// Holds the home's edit lock (`edits.lock`) until dropped: commands that change
    /// config, policy or trust store take it, so two edits at once never lose one.
    pub fn lock_edits(&self) -> Result<nullport_keyring::fs::FileLock, nullport_keyring::Error> {
        nullport_keyring::fs::lock(&self.edits_lock())
    }

    /// The daemon's control socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("nullport.sock")
    }
}
