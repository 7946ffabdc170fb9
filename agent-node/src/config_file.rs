//! The node's config file (`config.toml` in its home): the relay and the exposed services.
//!
//! ```toml
//! relay = "np...@relay.example.net:7443"
//!
//! [services.ssh]
//! tcp = "127.0.0.1:22"
//!
//! [services.date]
//! exec = ["date", "-u"]
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What a service forwards to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum ServiceSpec {
    /// A local TCP address (SSH, HTTP, a database).
    Tcp(String),
    /// A command; one process per channel, stdin/stdout piped, stderr logged.
    Exec(Vec<String>),
    /// A stdio MCP server command, one process per caller session, behind the JSON-RPC
    /// firewall.
    Mcp(Vec<String>),
    /// A local Streamable HTTP MCP server (`http://127.0.0.1:PORT/mcp`), behind the firewall.
    #[serde(rename = "mcp_url")]
    McpUrl(String),
}

impl std::fmt::Display for ServiceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServiceSpec::Tcp(addr) => write!(f, "tcp {addr}"),
            ServiceSpec::Exec(cmd) => write!(f, "exec {}", cmd.join(" ")),
            ServiceSpec::Mcp(cmd) => write!(f, "mcp {}", cmd.join(" ")),
            ServiceSpec::McpUrl(url) => write!(f, "mcp {url}"),
        }
    }
}

/// The parsed config file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    /// The relay address, `<NodeId>@host:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<String>,
    /// Exposed services by name.
    #[serde(default)]
    pub services: BTreeMap<String, ServiceSpec>,
}

/// Why the config file could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong (TOML errors name the line and column).
    pub reason: String,
}

impl NodeFile {
    /// Loads the file; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<NodeFile, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).map_err(|e| ConfigError {
                path: path.to_owned(),
                reason: e.to_string().trim_end().to_owned(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(NodeFile::default()),
            Err(e) => Err(ConfigError {
                path: path.to_owned(),
                reason: e.to_string(),
            }),
        }
    }

    /// Saves the file atomically (mode 0600).
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let err = |reason: String| ConfigError {
            path: path.to_owned(),
            reason,
        };
        let text = toml::to_string_pretty(self).map_err(|e| err(e.to_string()))?;
        nullport_keyring::fs::write_private(
            path,
            format!("# nullport node config\n{text}").as_bytes(),
            true,
        )
        .map_err(|e| err(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("config.toml");
        let mut file = NodeFile::default();
        file.services
            .insert("ssh".into(), ServiceSpec::Tcp("127.0.0.1:22".into()));
        file.services.insert(
            "date".into(),
            ServiceSpec::Exec(vec!["date".into(), "-u".into()]),
        );
        file.save(&path).unwrap_or_else(|e| panic!("{e}"));
        let back = NodeFile::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.services, file.services);
        std::fs::write(
            &path,
            "relay = \"x\"\n[services.ssh]\ntcp = \"a\"\nudp = \"b\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let err = NodeFile::load(&path)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("line 2"), "{err}");
    }
}
