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
//! env = ["LANG", "TZ=UTC"]       # exec and mcp: variables passed to the process
//!
//! [services.web]
//! tcp = "127.0.0.1:8080"
//! proxy_protocol = true          # tcp: a PROXY protocol v2 header naming the caller
//!
//! [services.api]
//! tcp = "127.0.0.1:8081"
//! http_peer_header = true        # tcp: relay HTTP/1.1, the caller in X-Nullport-Peer
//!
//! [services.files]
//! mcp = ["npx", "@modelcontextprotocol/server-filesystem", "/srv/docs"]
//! [services.files.sandbox]       # exec and mcp: see `nullport::sandbox`
//! ro = ["/srv/docs"]
//! ```
//!
//! Exec and MCP processes start with a cleared environment: only [`DEFAULT_ENV`] (those set
//! in the daemon's own environment), what `env` lists (a name passes the daemon's value, a
//! `NAME=value` sets it), and `NULLPORT_PEER` / `NULLPORT_PEER_ALIAS` / `NULLPORT_SERVICE`
//! naming the caller. nullport's own variables (`NULLPORT_PASSPHRASE`, `NULLPORT_HOME`, ...)
//! are never passed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What a service forwards to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceSpec {
    /// A local TCP address (SSH, HTTP, a database).
    Tcp(String),
    /// A command; one process per channel, stdin/stdout piped, stderr logged.
    Exec(Vec<String>),
    /// A stdio MCP server command, one process per caller session, behind the JSON-RPC
    /// firewall.
    Mcp(Vec<String>),
    /// A local Streamable HTTP MCP server (`http://127.0.0.1:PORT/mcp`), behind the firewall.
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

/// Variables an exec or MCP process gets from the daemon's environment unless its service
/// says otherwise (only those that are set).
pub const DEFAULT_ENV: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TERM", "TMPDIR",
];

/// An exposed service: what it forwards to, and its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// What the service forwards to.
    pub spec: ServiceSpec,
    /// Exec and MCP: extra variables for the process (`NAME` passes the daemon's value,
    /// `NAME=value` sets one).
    pub env: Vec<String>,
    /// TCP: start each connection with a PROXY protocol v2 header naming the caller.
    pub proxy_protocol: bool,
    /// TCP: speak HTTP/1.1 on the channel and name the caller in `X-Nullport-Peer` (and
    /// `X-Nullport-Peer-Alias`) on every request, replacing whatever the caller sent under
    /// those names (see [`crate::services::http_peer`]).
    pub http_peer_header: bool,
    /// Exec and MCP commands: run each process in this sandbox.
    pub sandbox: Option<crate::sandbox::Sandbox>,
}

impl Service {
    /// A service with no options.
    pub fn new(spec: ServiceSpec) -> Self {
        Self {
            spec,
            env: Vec::new(),
            proxy_protocol: false,
            http_peer_header: false,
            sandbox: None,
        }
    }

    /// The environment of an exec or MCP process of this service, for `peer` (and its alias
    /// here, if any), built from nothing: see the module doc. `daemon_env` looks up the
    /// daemon's own variables.
    pub fn child_env(
        &self,
        service: &str,
        peer: &str,
        alias: Option<&str>,
        daemon_env: impl Fn(&str) -> Option<String>,
    ) -> Vec<(String, String)> {
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        for name in DEFAULT_ENV {
            if let Some(v) = daemon_env(name) {
                env.insert((*name).to_owned(), v);
            }
        }
        for entry in &self.env {
            match entry.split_once('=') {
                Some((name, value)) => {
                    env.insert(name.to_owned(), value.to_owned());
                }
                None => {
                    if let Some(v) = daemon_env(entry) {
                        env.insert(entry.clone(), v);
                    }
                }
            }
        }
        env.retain(|name, _| !name.starts_with("NULLPORT_"));
        env.insert("NULLPORT_PEER".into(), peer.to_owned());
        env.insert("NULLPORT_SERVICE".into(), service.to_owned());
        if let Some(alias) = alias {
            env.insert("NULLPORT_PEER_ALIAS".into(), alias.to_owned());
        }
        env.into_iter().collect()
    }
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.spec)?;
        if self.proxy_protocol {
            f.write_str(" (PROXY v2)")?;
        }
        if self.http_peer_header {
            f.write_str(" (HTTP, X-Nullport-Peer)")?;
        }
        if !self.env.is_empty() {
            write!(f, " (env {})", self.env.join(" "))?;
        }
        if self.sandbox.is_some() {
            f.write_str(" (sandboxed)")?;
        }
        Ok(())
    }
}

/// A service as written in the file: exactly one of the kinds, plus options.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceTable {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tcp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exec: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mcp: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mcp_url: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    env: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    proxy_protocol: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    http_peer_header: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sandbox: Option<crate::sandbox::Sandbox>,
}

/// What is wrong with a service's table in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceTableError {
    /// Not exactly one of the kinds, or an empty command.
    #[error("a service needs exactly one of tcp, exec, mcp, mcp_url (commands not empty)")]
    NotOneKind,
    /// `proxy_protocol` on a service that is not tcp.
    #[error("proxy_protocol is for tcp services")]
    ProxyProtocolNotTcp,
    /// `http_peer_header` on a service that is not tcp.
    #[error("http_peer_header is for tcp services")]
    HttpPeerHeaderNotTcp,
    /// `env` on a service that runs no process.
    #[error("env is for exec and mcp services")]
    EnvWithoutProcess,
    /// `sandbox` on a service that runs no process.
    #[error("sandbox is for exec and mcp (command) services")]
    SandboxWithoutProcess,
}

impl TryFrom<ServiceTable> for Service {
    type Error = ServiceTableError;

    fn try_from(t: ServiceTable) -> Result<Self, ServiceTableError> {
        let spec = match (t.tcp, t.exec, t.mcp, t.mcp_url) {
            (Some(a), None, None, None) => ServiceSpec::Tcp(a),
            (None, Some(c), None, None) if !c.is_empty() => ServiceSpec::Exec(c),
            (None, None, Some(c), None) if !c.is_empty() => ServiceSpec::Mcp(c),
            (None, None, None, Some(u)) => ServiceSpec::McpUrl(u),
            _ => return Err(ServiceTableError::NotOneKind),
        };
        if t.proxy_protocol && !matches!(spec, ServiceSpec::Tcp(_)) {
            return Err(ServiceTableError::ProxyProtocolNotTcp);
        }
        if t.http_peer_header && !matches!(spec, ServiceSpec::Tcp(_)) {
            return Err(ServiceTableError::HttpPeerHeaderNotTcp);
        }
        if !t.env.is_empty() && !matches!(spec, ServiceSpec::Exec(_) | ServiceSpec::Mcp(_)) {
            return Err(ServiceTableError::EnvWithoutProcess);
        }
        if t.sandbox.is_some() && !matches!(spec, ServiceSpec::Exec(_) | ServiceSpec::Mcp(_)) {
            return Err(ServiceTableError::SandboxWithoutProcess);
        }
        Ok(Service {
            spec,
            env: t.env,
            proxy_protocol: t.proxy_protocol,
            http_peer_header: t.http_peer_header,
            sandbox: t.sandbox,
        })
    }
}

impl From<&Service> for ServiceTable {
    fn from(s: &Service) -> Self {
        let mut t = ServiceTable {
            env: s.env.clone(),
            proxy_protocol: s.proxy_protocol,
            http_peer_header: s.http_peer_header,
            sandbox: s.sandbox.clone(),
            ..ServiceTable::default()
        };
        match &s.spec {
            ServiceSpec::Tcp(a) => t.tcp = Some(a.clone()),
            ServiceSpec::Exec(c) => t.exec = Some(c.clone()),
            ServiceSpec::Mcp(c) => t.mcp = Some(c.clone()),
            ServiceSpec::McpUrl(u) => t.mcp_url = Some(u.clone()),
        }
        t
    }
}

/// The file's layout.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLayout {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    relay: Option<String>,
    #[serde(default)]
    services: BTreeMap<String, ServiceTable>,
    #[serde(default, skip_serializing_if = "AccessTable::is_default")]
    access: AccessTable,
    #[serde(default, skip_serializing_if = "LinkTable::is_default")]
    link: LinkTable,
    #[serde(default, skip_serializing_if = "ApprovalsTable::is_default")]
    approvals: ApprovalsTable,
}

/// `[link]`: the relay link's timings (optional).
///
/// ```toml
/// [link]
/// superseded_retry_secs = 30   # after another process with this key took over the link
/// keep_alive_secs = 10         # keep-alive towards the relay (a fleet's default: 3)
/// idle_timeout_secs = 30       # a relay link silent this long is lost (a fleet's default: 9)
/// resume_secs = 600            # channels to a peer resume for this long after a full handshake (0: off)
/// resume_dh = false            # true: every resumed channel runs its own X25519 exchange
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkTable {
    /// Seconds between attempts after another connection with this identity superseded this
    /// one (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded_retry_secs: Option<u64>,
    /// Seconds between keep-alives towards the relay (default 10; a fleet node's 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive_secs: Option<u64>,
    /// Seconds of silence after which a relay link counts as lost (default 30; a fleet
    /// node's 9). A relay that dies without a word is noticed within keep-alive + this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_secs: Option<u64>,
    /// Seconds after a full end-to-end handshake with a peer during which further channels
    /// between the two open by resumption (one round trip, no identity proofs; the callee
    /// still decides each; `docs/protocol.md`). Default 600; 0 turns resumption off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_secs: Option<u64>,
    /// Whether every resumed channel mixes in a fresh X25519 exchange (forward secrecy per
    /// channel, about 150 us more per channel). Default false: a resumed channel's keys come
    /// from the resumption secret, so forward secrecy is bounded by `resume_secs`. A callee
    /// with it set refuses keyed opens, saying why: the caller then runs the full handshake
    /// and opens to it with a DH from then on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_dh: Option<bool>,
}

impl LinkTable {
    fn is_default(&self) -> bool {
        *self == LinkTable::default()
    }

    /// The node limits these settings give (defaults elsewhere: a lone relay's, or with
    /// `fleet` a fleet node's).
    pub fn limits(&self, fleet: bool) -> nullport_node::NodeLimits {
        use std::time::Duration;
        let mut limits = if fleet {
            nullport_node::NodeLimits::fleet()
        } else {
            nullport_node::NodeLimits::default()
        };
        if let Some(secs) = self.superseded_retry_secs {
            limits.superseded_backoff = Duration::from_secs(secs.max(1));
        }
        if let Some(secs) = self.keep_alive_secs {
            limits.keep_alive = Duration::from_secs(secs.max(1));
        }
        if let Some(secs) = self.idle_timeout_secs {
            // Above the keep-alive, or the link would time out between two keep-alives.
            limits.idle_timeout = Duration::from_secs(secs.max(1)).max(limits.keep_alive * 2);
        }
        if let Some(secs) = self.resume_secs {
            limits.handshake.resume_lifetime = Duration::from_secs(secs);
        }
        if let Some(dh) = self.resume_dh {
            limits.handshake.resume_dh = dh;
        }
        limits
    }
}

/// `[access]`: bounds and tolerances of the callee's access decision (all optional).
///
/// ```toml
/// [access]
/// token_skew_secs = 60            # clock tolerance for token validity
/// max_channels_per_caller = 32    # incoming channels one caller may hold open
/// max_channels = 192              # incoming channels in total (below the relay's 256 streams)
/// idle_timeout_secs = 900         # an incoming channel silent this long is closed (0: never)
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessTable {
    /// Clock tolerance for token validity, in seconds (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_skew_secs: Option<u64>,
    /// Incoming channels one caller may hold open (default 32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_channels_per_caller: Option<usize>,
    /// Incoming channels in total (default 192).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_channels: Option<usize>,
    /// Seconds an incoming channel may carry nothing before it is closed (default 900; 0:
    /// never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_secs: Option<u64>,
}

impl AccessTable {
    fn is_default(&self) -> bool {
        *self == AccessTable::default()
    }

    /// The idle timeout (None: never).
    pub fn idle_timeout(&self) -> Option<std::time::Duration> {
        match self.idle_timeout_secs.unwrap_or(900) {
            0 => None,
            secs => Some(std::time::Duration::from_secs(secs)),
        }
    }
}

/// `[approvals]`: human approval of tool calls (all optional).
///
/// ```toml
/// [approvals]
/// timeout_secs = 120                          # unanswered this long: denied
/// webhook = "https://hooks.example.net/np"    # POSTed when a call waits and when decided
/// desktop = true                              # notify-send, where it exists
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsTable {
    /// Seconds a call waits for an answer before it is denied (default 120).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// An `https://` URL (or `http://` on loopback) to notify of approvals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// Desktop notifications with `notify-send`, where it exists (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desktop: Option<bool>,
}

impl ApprovalsTable {
    fn is_default(&self) -> bool {
        *self == ApprovalsTable::default()
    }

    /// The timeout (default 120 s; at least 1 s).
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.timeout_secs.unwrap_or(120).max(1))
    }
}

/// The parsed config file.
#[derive(Debug, Clone, Default)]
pub struct NodeFile {
    /// The relay address, `<NodeId>@host:port`.
    pub relay: Option<String>,
    /// Exposed services by name.
    pub services: BTreeMap<String, Service>,
    /// Bounds of the access decision.
    pub access: AccessTable,
    /// The relay link's timings.
    pub link: LinkTable,
    /// Human approval settings.
    pub approvals: ApprovalsTable,
}

/// Why the config file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Reading the file failed.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// The file is not valid TOML for a node config (the error names line and column).
    #[error("{path}: {error}")]
    Format {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        error: nullport_keyring::FormatError,
    },
    /// A service's table is not valid.
    #[error("{path}: service {name:?}: {error}")]
    Service {
        /// The file.
        path: PathBuf,
        /// The service.
        name: String,
        /// What is wrong.
        error: ServiceTableError,
    },
    /// Writing the file failed.
    #[error(transparent)]
    Write(#[from] nullport_keyring::Error),
}

impl NodeFile {
    /// The sandboxed services, as (name, sandbox, program), for
    /// [`crate::sandbox::check_all`].
    pub fn sandboxes(&self) -> impl Iterator<Item = (&str, &crate::sandbox::Sandbox, &str)> {
        self.services.iter().filter_map(|(name, s)| {
            let command = match &s.spec {
                ServiceSpec::Exec(c) | ServiceSpec::Mcp(c) => c,
                _ => return None,
            };
            let program = command.first().map(String::as_str).unwrap_or_default();
            Some((name.as_str(), s.sandbox.as_ref()?, program))
        })
    }

    /// Loads the file; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<NodeFile, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(NodeFile::default()),
            Err(error) => {
                return Err(ConfigError::Io {
                    path: path.to_owned(),
                    error,
                });
            }
        };
        let layout: FileLayout = toml::from_str(&text).map_err(|e| ConfigError::Format {
            path: path.to_owned(),
            error: e.into(),
        })?;
        let mut services = BTreeMap::new();
        for (name, table) in layout.services {
            match Service::try_from(table) {
                Ok(service) => services.insert(name, service),
                Err(error) => {
                    return Err(ConfigError::Service {
                        path: path.to_owned(),
                        name,
                        error,
                    });
                }
            };
        }
        Ok(NodeFile {
            relay: layout.relay,
            services,
            access: layout.access,
            link: layout.link,
            approvals: layout.approvals,
        })
    }

    /// Saves the file atomically (mode 0600).
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let layout = FileLayout {
            relay: self.relay.clone(),
            services: self
                .services
                .iter()
                .map(|(n, s)| (n.clone(), ServiceTable::from(s)))
                .collect(),
            access: self.access.clone(),
            link: self.link.clone(),
            approvals: self.approvals.clone(),
        };
        let text = toml::to_string_pretty(&layout).map_err(|e| ConfigError::Format {
            path: path.to_owned(),
            error: e.into(),
        })?;
        let text = format!("# nullport node config\n{text}");
        // What is written must load back: checked before the file changes.
        let back: FileLayout = toml::from_str(&text).map_err(|e| ConfigError::Format {
            path: path.to_owned(),
            error: e.into(),
        })?;
        for (name, table) in back.services {
            Service::try_from(table).map_err(|error| ConfigError::Service {
                path: path.to_owned(),
                name,
                error,
            })?;
        }
        nullport_keyring::fs::write_private(path, text.as_bytes(), true)?;
        Ok(())
    }
}

#[cfg(test)]
#[path = "config_file_tests.rs"]
mod tests;
