//! The trust store: local aliases for NodeIds, like `known_hosts`.
//!
//! A TOML file with one table:
//! ```toml
//! [peers]
//! files-server = "np..."
//! alice-agent = "np..."
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nullport_protocol::NodeId;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::fs::write_private;

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustFile {
    #[serde(default)]
    peers: BTreeMap<String, NodeId>,
}

/// Aliases for NodeIds, loaded from and saved to one TOML file.
#[derive(Clone, Debug)]
pub struct TrustStore {
    path: PathBuf,
    file: TrustFile,
}

impl TrustStore {
    /// Loads the store at `path`; a missing file is an empty store.
    pub fn load(path: &Path) -> Result<Self, Error> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self {
                path: path.to_owned(),
                file: TrustFile::default(),
            }),
            Err(error) => Err(Error::Io {
                path: path.to_owned(),
                error,
            }),
        }
    }

    /// Parses trust-store text (the contents of the file at `path`, named in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Self, Error> {
        let file: TrustFile = toml::from_str(text).map_err(|e| Error::Format {
            path: path.to_owned(),
            error: e.into(),
        })?;
        for alias in file.peers.keys() {
            check_alias(alias)?;
        }
        Ok(Self {
            path: path.to_owned(),
            file,
        })
    }

    /// Adds `alias -> id`. Re-adding the same pair is a no-op; an alias that names another
    /// NodeId is refused unless `replace`.
    pub fn add(&mut self, alias: &str, id: NodeId, replace: bool) -> Result<(), Error> {
        check_alias(alias)?;
        if let Some(existing) = self.file.peers.get(alias)
            && *existing != id
            && !replace
        {
            return Err(Error::AliasTaken {
                name: alias.to_owned(),
                existing: *existing,
            });
        }
        self.file.peers.insert(alias.to_owned(), id);
        Ok(())
    }

    /// Removes an alias; returns what it named.
    pub fn remove(&mut self, alias: &str) -> Option<NodeId> {
        self.file.peers.remove(alias)
    }

    /// Resolves a NodeId in text form, or an alias.
    pub fn resolve(&self, name: &str) -> Result<NodeId, Error> {
        let parsed = name.parse::<NodeId>();
        if let Ok(id) = parsed {
            return Ok(id);
        }
        if let Some(id) = self.file.peers.get(name) {
            return Ok(*id);
        }
        match parsed {
            // It looks like a NodeId: say what is wrong with it, not just "unknown".
            Err(error) if name.starts_with("np") && name.len() > 40 => Err(Error::BadNodeId {
                text: name.to_owned(),
                error,
            }),
            _ => Err(Error::UnknownAlias {
                name: name.to_owned(),
            }),
        }
    }

    /// The alias for a NodeId, if any.
    pub fn alias_of(&self, id: &NodeId) -> Option<&str> {
        self.file
            .peers
            .iter()
            .find(|(_, v)| *v == id)
            .map(|(k, _)| k.as_str())
    }

    /// All aliases, sorted.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &NodeId)> {
        self.file.peers.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Writes the store back atomically.
    pub fn save(&self) -> Result<(), Error> {
        let text = toml::to_string_pretty(&self.file).map_err(|e| Error::Format {
            path: self.path.clone(),
            error: e.into(),
        })?;
        let text = format!("# nullport trust store: alias = NodeId\n{text}");
        // What is written must load back: checked before the file changes.
        TrustStore::parse(&self.path, &text)?;
        write_private(&self.path, text.as_bytes(), true)
    }
}

fn check_alias(alias: &str) -> Result<(), Error> {
    let ok = !alias.is_empty()
        && alias.len() <= 64
        // Not `np...` in any case: an alias must never read as a NodeId (a person reading
        // `NP4P47...` takes it for that node; NodeIds are case-insensitive to many eyes).
        && !alias
            .get(..2)
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case("np"))
        && alias
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidAlias {
            name: alias.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nullport_protocol::Identity;

    #[test]
    fn add_save_load_resolve() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trust.toml");
        let id = Identity::from_seed([1; 32]).node_id();
        let mut store = TrustStore::load(&path).unwrap();
        store.add("files-server", id, false).unwrap();
        store.save().unwrap();
        let store = TrustStore::load(&path).unwrap();
        assert_eq!(store.resolve("files-server").ok(), Some(id));
        assert_eq!(store.resolve(&id.to_string()).ok(), Some(id));
        assert_eq!(store.alias_of(&id), Some("files-server"));
        assert!(matches!(
            store.resolve("nobody"),
            Err(Error::UnknownAlias { .. })
        ));
    }

    #[test]
    fn alias_rules() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = TrustStore::load(&dir.path().join("t.toml")).unwrap();
        let (a, b) = (
            Identity::from_seed([1; 32]).node_id(),
            Identity::from_seed([2; 32]).node_id(),
        );
        let upper = b.to_string().to_uppercase();
        for bad in [
            "",
            "has space",
            "np-looks-like-an-id",
            "NP-looks-like-an-id",
            "Np4p",
            upper.as_str(),
            "x/y",
        ] {
            assert!(
                matches!(store.add(bad, a, false), Err(Error::InvalidAlias { .. })),
                "{bad}"
            );
        }
        assert!(store.add("srv", a, false).is_ok());
        assert!(store.add("srv", a, false).is_ok());
        assert!(matches!(
            store.add("srv", b, false),
            Err(Error::AliasTaken { .. })
        ));
        assert!(store.add("srv", b, true).is_ok());
        assert_eq!(store.remove("srv"), Some(b));
    }

    #[test]
    fn malformed_file_reports_line_and_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trust.toml");
        std::fs::write(&path, "[peers]\nsrv = \"npnotanid\"\n").unwrap();
        let err = TrustStore::load(&path)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("line 2"), "{err}");
        std::fs::write(&path, "[peerz]\n").unwrap();
        let err = TrustStore::load(&path)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("unknown field"), "{err}");
    }
}
