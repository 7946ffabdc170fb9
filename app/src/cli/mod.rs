//! The `nullport` command line, split by command group: [`node`], [`services`], [`trust`],
//! [`mcp`], [`audit`]. This file holds the command tree and the helpers they share.

mod audit;
mod listen;
mod mcp;
mod meta;
mod node;
mod pins;
mod services;
mod trust;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use audit::AuditCommand;
use clap::{Args, Parser, Subcommand};
use mcp::McpCommand;
use node::{InitArgs, UpArgs};
use nullport::config_file::{NodeFile, Service, ServiceSpec};
use nullport::control::{ControlRequest, ControlResponse};
use nullport::daemon::Daemon;
use nullport::home::Home;
use nullport_keyring::{KdfParams, PassphraseSource, Policy, Protection, TrustStore, key_file};
use nullport_node::RelaySpec;
use nullport_protocol::{Identity, NodeId, ServiceName};
use services::ExposeArgs;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use trust::{RevocationsCommand, TokenCommand, TrustCommand};

/// nullport: zero-trust transport for AI agents and their tools.
///
/// Every node dials out to a relay; nothing listens on the network. Two nodes prove their
/// identities to each other before a single byte of payload flows, and the relay can read
/// none of it. The callee decides who may use which service (default deny).
///
/// First steps:
///   nullport init                                  create this node's identity
///   nullport up --relay <relay NodeId>@host:7443   run the daemon (foreground)
///   nullport expose tcp ssh 127.0.0.1:22           offer a local service ...
///   nullport allow <peer> ssh                      ... to one peer
///   nullport pipe <peer>/ssh                       reach a peer's service (ssh ProxyCommand)
///
/// Try it all on this machine, with nothing else running:  nullport quickstart
#[derive(Parser, Debug)]
#[command(name = "nullport", version, verbatim_doc_comment)]
pub struct Cli {
    /// The node's home directory (identity, trust store, config, policy, control socket).
    #[arg(long, global = true, env = "NULLPORT_HOME")]
    home: Option<PathBuf>,
    /// Log lines as text (default) or as JSON objects, one per line (for log shippers).
    #[arg(long, global = true, env = "NULLPORT_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create this node's identity key and print its NodeId.
    Init(InitArgs),
    /// Join a relay that runs in allowlist mode, with an invite from its operator
    /// (`nullport-relay invite`); saves the relay in the config.
    Join {
        /// The invite (npi1...).
        invite: String,
        /// The relay, `<relay NodeId>@host:port`.
        #[arg(long)]
        relay: String,
        /// Read the key passphrase from this file.
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
    },
    /// Print this node's NodeId.
    Id {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Manage peer aliases (like known_hosts); aliases work wherever a NodeId does.
    #[command(subcommand)]
    Trust(TrustCommand),
    /// Offer a local service to peers (default deny: also run `nullport allow`).
    Expose(ExposeArgs),
    /// Stop offering a service.
    Unexpose {
        /// The service name.
        name: String,
    },
    /// Allow a peer (alias or NodeId) to use a service.
    Allow {
        /// Alias or NodeId.
        peer: String,
        /// Service name.
        service: String,
    },
    /// `deny PEER SERVICE` takes back an `allow`; `deny ID` refuses a waiting tool call.
    Deny {
        /// Alias or NodeId (or an approval id, alone).
        peer: String,
        /// Service name (absent: the first argument is an approval id).
        service: Option<String>,
        /// With an approval id: why (recorded in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Approve a tool call that waits for a human (see `nullport approvals`); with a scope,
    /// the approval also covers later calls (a standing grant, listed by `approvals grants`).
    Approve(mcp::ApproveArgs),
    /// List tool calls waiting for a human's approval, with their arguments; `--watch`
    /// streams them as they come; `grants` lists standing grants, `revoke ID` ends one.
    Approvals {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Keep printing calls as they wait and as they are decided.
        #[arg(long)]
        watch: bool,
        #[command(subcommand)]
        command: Option<mcp::ApprovalsCommand>,
    },
    /// Revoke a node key (NodeId or alias) or a token, network-wide: signs this node's
    /// revocation list and publishes it through the relay, which pushes it to every node.
    /// It applies on this node at once (its live channels close); elsewhere it applies where
    /// this node is trusted to revoke: as a node-wide signer (`nullport revocations trust`),
    /// or as a token issuer for a service (for that service's keys and tokens).
    Revoke {
        /// NodeId, alias, or token (text or @FILE).
        what: String,
        /// Read the key passphrase from this file.
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
    },
    /// Revocation lists held here and what each applies to; who may revoke here.
    #[command(subcommand)]
    Revocations(RevocationsCommand),
    /// Move this node to a new identity key. Publishes a statement signed by the old and the
    /// new key through the relay (which admits the new key in place of the old); peers that
    /// trusted the old key follow it and refuse the old one from then on. Needs the daemon
    /// running; restart it afterwards (`nullport up`).
    Rotate {
        /// Read the key passphrase from this file (the new key keeps the same protection).
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
    },
    /// Capability tokens: issue, delegate (narrower only), inspect, trust an issuer.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The tamper-evident audit log: show, verify, export.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// MCP: bridge a local MCP client to a peer's MCP service, and set MCP rules.
    #[command(subcommand)]
    Mcp(McpCommand),
    /// Run the daemon in the foreground: the relay link, the services, the control socket.
    Up(UpArgs),
    /// Listen on a local TCP port; each connection becomes a channel to <peer>/<service>.
    Connect {
        /// `<peer>/<service>`, peer as alias or NodeId.
        target: String,
        /// Where to listen: a loopback `host:port` (every local user can connect to it and
        /// use your access), or `unix:PATH` for a Unix socket only you can use (mode 0600).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// Permit a non-loopback listen address (anyone who can reach it gets your access).
        #[arg(long)]
        allow_remote: bool,
        /// Present a capability token (its text, or @FILE) on every channel.
        #[arg(long)]
        token: Option<String>,
    },
    /// Connect stdin/stdout to <peer>/<service>, e.g.
    /// ssh -o ProxyCommand='nullport pipe %h/ssh' user@files-server
    Pipe {
        /// `<peer>/<service>`, peer as alias or NodeId.
        target: String,
        /// Present a capability token (its text, or @FILE).
        #[arg(long)]
        token: Option<String>,
    },
    /// Make the running daemon re-read config.toml, policy.toml and trust.toml (live
    /// channels that lose their grant are closed). Commands that edit them do this already;
    /// `kill -HUP <daemon>` does the same.
    Reload,
    /// Stop the running daemon cleanly: open channels get a close frame, the relay link is
    /// closed, the control socket removed. Returns once it has stopped.
    Down,
    /// Show the relay link, exposed services and open channels.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// One-command demo: a relay and two nodes on loopback in a temporary directory, a real
    /// local service exposed on one and called from the other, step by step.
    Quickstart,
    /// Open the local web console (status, approvals, audit trail, policy): the daemon
    /// serves it on 127.0.0.1 only, and this prints a login address that works once (run it
    /// again for another).
    Console {
        /// The loopback port (default: any free port; ignored if the console already runs).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Print the version, and the relay-link protocol version this node speaks.
    Version {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Print shell completions, e.g. `nullport completions bash > /etc/bash_completion.d/nullport`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Write man pages (nullport.1, and nullport-<command>.1 for each command) into a
    /// directory, e.g. /usr/local/share/man/man1.
    Man {
        /// Where to write them.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
}

impl Cli {
    /// Whether this invocation runs the daemon (which logs at info by default).
    pub fn is_daemon(&self) -> bool {
        matches!(self.command, Command::Up(_))
    }

    /// Whether this command changes config, policy or trust store (and so holds the home's
    /// edit lock while it does).
    fn edits_files(&self) -> bool {
        matches!(
            &self.command,
            Command::Trust(trust::TrustCommand::Add { .. } | trust::TrustCommand::Remove { .. })
                | Command::Expose(_)
                | Command::Unexpose { .. }
                | Command::Allow { .. }
                | Command::Deny {
                    service: Some(_),
                    ..
                }
                | Command::Mcp(
                    mcp::McpCommand::Allow { .. }
                        | mcp::McpCommand::Deny { .. }
                        | mcp::McpCommand::RequireApproval { .. }
                )
                | Command::Token(trust::TokenCommand::TrustIssuer { .. })
                | Command::Revocations(trust::RevocationsCommand::Trust { .. })
                | Command::Join { .. }
        )
    }

    /// Whether logs are JSON lines.
    pub fn json_logs(&self) -> bool {
        self.log_format == "json"
    }
}

/// Runs one command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let _ = JSON_LOGS.set(cli.json_logs());
    let home = Home::resolve(cli.home.clone());
    // Edits are one at a time: load, change, check, write (a home being created has no
    // concurrent edit to wait for).
    let _edits = if cli.edits_files() && home.dir().is_dir() {
        Some(home.lock_edits()?)
    } else {
        None
    };
    match cli.command {
        Command::Init(args) => node::init(&home, args),
        Command::Id { json } => node::id(&home, json),
        Command::Trust(cmd) => trust::trust(&home, cmd).await,
        Command::Expose(cmd) => services::expose(&home, cmd).await,
        Command::Unexpose { name } => services::unexpose(&home, &name).await,
        Command::Allow { peer, service } => services::allow(&home, &peer, &service).await,
        Command::Deny {
            peer: id,
            service: None,
            reason,
        } => mcp::deny_call(&home, &id, reason).await,
        Command::Deny {
            peer,
            service: Some(service),
            reason: None,
        } => services::deny(&home, &peer, &service).await,
        Command::Deny {
            reason: Some(_), ..
        } => bail!(
            "--reason is for denying a waiting call: `nullport deny <approval id> --reason ...`"
        ),
        Command::Approve(args) => mcp::approve(&home, args).await,
        Command::Approvals {
            json,
            watch,
            command,
        } => mcp::approvals(&home, json, watch, command).await,
        Command::Mcp(cmd) => mcp::mcp(&home, cmd).await,
        Command::Audit(cmd) => audit::audit(&home, cmd).await,
        Command::Token(cmd) => trust::token(&home, cmd).await,
        Command::Rotate { passphrase_file } => node::rotate(&home, passphrase_file).await,
        Command::Revocations(cmd) => trust::revocations(&home, cmd).await,
        Command::Join {
            invite,
            relay,
            passphrase_file,
        } => node::join(&home, &invite, &relay, passphrase_file).await,
        Command::Revoke {
            what,
            passphrase_file,
        } => trust::revoke(&home, &what, passphrase_file).await,
        Command::Up(args) => node::up(&home, args).await,
        Command::Connect {
            target,
            listen,
            allow_remote,
            token,
        } => services::connect(&home, &target, listen, allow_remote, read_token(token)?).await,
        Command::Pipe { target, token } => {
            services::pipe(&home, &target, services::Mcp::No, token).await
        }
        Command::Status { json } => node::status(&home, json).await,
        Command::Reload => node::reload_now(&home).await,
        Command::Down => node::down(&home).await,
        Command::Quickstart => crate::quickstart::run().await,
        Command::Console { port } => {
            let (response, _) = control(&home, &ControlRequest::Console { port }).await?;
            match response.console {
                Some(url) if response.ok => {
                    println!("{url}");
                    eprintln!(
                        "open it in a browser on this machine; it logs in once (run `nullport console` again for a new one)"
                    );
                    Ok(())
                }
                _ => bail!("{}", response.error.unwrap_or_default()),
            }
        }
        Command::Version { json } => meta::version(json),
        Command::Completions { shell } => meta::completions(shell),
        Command::Man { dir } => meta::man(&dir),
    }
}

/// Whether this invocation logs JSON (set once, at the start of [`run`]).
static JSON_LOGS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// A line for the person running a long-lived command: on stderr, or as a log record when
/// logs are JSON (so every line of a JSON log is JSON).
pub(crate) fn say(text: &str) {
    if JSON_LOGS.get().copied().unwrap_or(false) {
        tracing::info!("{text}");
    } else {
        eprintln!("{text}");
    }
}

/// The systemd credential the key passphrase is read from (`LoadCredential=`), when no
/// file or variable gives it.
pub(crate) const PASSPHRASE_CREDENTIAL: &str = "nullport-passphrase";

/// A token argument: its text, or `@FILE`.
pub(crate) fn read_token(arg: Option<String>) -> anyhow::Result<Option<String>> {
    match arg {
        Some(a) if a.starts_with('@') => {
            let path = &a[1..];
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading token file {path}"))?;
            Ok(Some(text.trim().to_owned()))
        }
        other => Ok(other),
    }
}

pub(crate) fn parse_ttl(ttl: &str) -> anyhow::Result<u64> {
    Ok(nullport_keyring::ttl::parse(ttl)?)
}

pub(crate) fn node_id(home: &Home) -> anyhow::Result<NodeId> {
    key_file::read_node_id(&home.key()).map_err(|e| match e {
        nullport_keyring::Error::Io { .. } if !home.key().exists() => {
            anyhow!(
                "no identity in {} (run `nullport init`)",
                home.dir().display()
            )
        }
        other => anyhow!("key file unreadable: {other}"),
    })
}

pub(crate) fn load_identity(
    home: &Home,
    passphrase_file: Option<PathBuf>,
) -> anyhow::Result<Identity> {
    node_id(home)?;
    Ok(load_identity_and_passphrase(home, passphrase_file)?.0)
}

/// The identity, and the passphrase that opened it (for re-encrypting a rotated key).
pub(crate) fn load_identity_and_passphrase(
    home: &Home,
    passphrase_file: Option<PathBuf>,
) -> anyhow::Result<(Identity, Option<zeroize::Zeroizing<String>>)> {
    let path = home.key();
    let encrypted =
        key_file::is_encrypted(&path).map_err(|e| anyhow!("key file unreadable: {e}"))?;
    let pass = if encrypted {
        Some(
            PassphraseSource::choose(
                passphrase_file,
                "NULLPORT_PASSPHRASE",
                PASSPHRASE_CREDENTIAL,
            )
            .read("identity key", |p: &str| rpassword::prompt_password(p))?,
        )
    } else {
        None
    };
    let identity = key_file::load(&path, pass.as_ref().map(|p| p.as_str()))
        .map_err(|e| anyhow!("key file unreadable: {e}"))?;
    Ok((identity, pass))
}

pub(crate) fn load_config(home: &Home) -> anyhow::Result<NodeFile> {
    Ok(NodeFile::load(&home.config())?)
}

/// Asks a running daemon to reload what a command just wrote; returns a note for the user.
/// A daemon that cannot load the files is an error (the change is on disk, the daemon runs
/// with the previous configuration, and `status` says so until it is fixed).
pub(crate) async fn reload(home: &Home) -> anyhow::Result<String> {
    match control(home, &ControlRequest::Reload).await {
        Ok((r, _)) if r.ok => Ok(" (daemon reloaded)".to_owned()),
        Ok((r, _)) => bail!(
            "the change is written, but the running daemon cannot load the configuration and keeps the previous one: {}; fix that file, then `nullport reload`",
            r.error.unwrap_or_default()
        ),
        Err(_) => Ok(" (takes effect when the daemon starts)".to_owned()),
    }
}

/// Sends one control request; returns the response and the stream (for pipes).
pub(crate) async fn control(
    home: &Home,
    request: &ControlRequest,
) -> anyhow::Result<(ControlResponse, BufReader<UnixStream>)> {
    control_with_fds(home, request, &[]).await
}

/// [`control`] with file descriptors handed to the daemon along with the request.
pub(crate) async fn control_with_fds(
    home: &Home,
    request: &ControlRequest,
    fds: &[std::os::fd::BorrowedFd<'_>],
) -> anyhow::Result<(ControlResponse, BufReader<UnixStream>)> {
    nullport::control::request_with_fds(&home.socket(), request, fds)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                anyhow!(
                    "the nullport daemon is not running for {} (start it with `nullport up`)",
                    home.dir().display()
                )
            }
            // It took the request and closed without an answer: it stopped or crashed.
            std::io::ErrorKind::UnexpectedEof => anyhow!(
                "the nullport daemon for {} closed the connection before answering (it stopped or crashed; see its log, and `nullport up` to start it again)",
                home.dir().display()
            ),
            _ => anyhow!("control socket {}: {e}", home.socket().display()),
        })
}

pub(crate) fn split_target(target: &str) -> anyhow::Result<(&str, &str)> {
    target
        .split_once('/')
        .filter(|(p, s)| !p.is_empty() && !s.is_empty())
        .ok_or_else(|| anyhow!("{target:?} is not <peer>/<service>"))
}

/// `text` safe to print on a terminal: control characters (escape sequences among them),
/// bidirectional and invisible characters shown as `\u{..}` instead of acting.
pub(crate) fn printable(text: &str) -> String {
    nullport::mcp::approvals::render::visible(text)
}
