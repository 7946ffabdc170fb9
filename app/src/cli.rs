//! The `nullport` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use nullport::config_file::{NodeFile, Service, ServiceSpec};
use nullport::control::{ControlRequest, ControlResponse};
use nullport::daemon::Daemon;
use nullport::home::Home;
use nullport_keyring::{KdfParams, PassphraseSource, Policy, Protection, TrustStore, key_file};
use nullport_node::RelayAddr;
use nullport_protocol::{Identity, NodeId, ServiceName};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

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
    #[command(subcommand)]
    Expose(ExposeCommand),
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
    },
    /// Approve a tool call that waits for a human (see `nullport approvals`).
    Approve {
        /// The approval id.
        id: String,
    },
    /// List tool calls waiting for a human's approval.
    Approvals {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
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
    /// channels that lose their grant are closed). Commands that edit them do this already.
    Reload,
    /// Show the relay link, exposed services and open channels.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// One-command demo: a relay and two nodes on loopback in a temporary directory, a real
    /// local service exposed on one and called from the other, step by step.
    Quickstart,
}

#[derive(Args, Debug)]
struct InitArgs {
    /// Store the key unencrypted (mode 0600 only): for unattended servers.
    #[arg(long)]
    insecure_plaintext_key: bool,
    /// Read the new passphrase from this file (otherwise $NULLPORT_PASSPHRASE or a prompt).
    #[arg(long)]
    passphrase_file: Option<PathBuf>,
    /// Replace an existing identity (peers that trusted the old one will refuse this node).
    #[arg(long)]
    force: bool,
}

#[derive(Args, Debug)]
struct UpArgs {
    /// The relay, `<relay NodeId>@host:port` (saved to the config for next time).
    #[arg(long)]
    relay: Option<String>,
    /// Read the key passphrase from this file (otherwise $NULLPORT_PASSPHRASE or a prompt).
    #[arg(long)]
    passphrase_file: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum TrustCommand {
    /// Name a NodeId.
    Add {
        /// The alias (letters, digits, `.`, `_`, `-`).
        alias: String,
        /// The NodeId.
        node_id: String,
        /// Replace an alias that names another NodeId.
        #[arg(long)]
        replace: bool,
    },
    /// Remove an alias.
    Remove {
        /// The alias.
        alias: String,
    },
    /// List aliases.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
struct ScopeArgs {
    /// MCP tools (names or `*` globs), comma separated; omitted: whatever the parent allows.
    #[arg(long, value_delimiter = ',')]
    tools: Option<Vec<String>>,
    /// MCP resource URI prefixes, comma separated.
    #[arg(long, value_delimiter = ',')]
    resources: Option<Vec<String>>,
    /// MCP prompts, comma separated.
    #[arg(long, value_delimiter = ',')]
    prompts: Option<Vec<String>>,
    /// Extra JSON-RPC methods, comma separated.
    #[arg(long, value_delimiter = ',')]
    methods: Option<Vec<String>>,
    /// The callee it is for (alias or NodeId); omitted: any (or the parent's).
    #[arg(long)]
    audience: Option<String>,
    /// How long it is valid: 30s, 10m, 2h, 1d.
    #[arg(long, default_value = "10m")]
    ttl: String,
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Issue a token signed by this node to a holder for a service.
    Issue {
        /// The holder (alias or NodeId): only it can present the token.
        #[arg(long)]
        to: String,
        /// The service it opens.
        #[arg(long)]
        service: String,
        #[command(flatten)]
        scope: ScopeArgs,
        /// Read the key passphrase from this file.
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
    },
    /// Delegate a token this node holds to another holder, never wider than it.
    Delegate {
        /// The token (text, or @FILE).
        token: String,
        /// The new holder (alias or NodeId).
        #[arg(long)]
        to: String,
        #[command(flatten)]
        scope: ScopeArgs,
        /// Read the key passphrase from this file.
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
    },
    /// Show a token's links (issuer, holder, service, scope, validity).
    Inspect {
        /// The token (text, or @FILE).
        token: String,
    },
    /// Accept tokens issued by an issuer for a service on this node.
    TrustIssuer {
        /// Alias or NodeId.
        issuer: String,
        /// The service.
        service: String,
    },
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Print the last entries (and follow new ones with -f).
    Tail {
        /// How many entries.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
        /// Keep printing new entries.
        #[arg(short, long)]
        follow: bool,
    },
    /// Check the hash chain and the signed checkpoints; exit 1 naming the first bad entry.
    Verify {
        /// Also check against the checkpoint the relay witnessed (asks the running daemon;
        /// without one, uses the local copy in the home).
        #[arg(long)]
        witness: bool,
    },
    /// Print entries as JSON lines for SIEM ingestion.
    Export {
        /// Only entries at or after this RFC 3339 UTC time (e.g. 2026-11-22T00:00:00Z).
        #[arg(long)]
        since: Option<String>,
        /// Output format.
        #[arg(long, default_value = "jsonl", value_parser = ["jsonl"])]
        format: String,
    },
}

#[derive(Subcommand, Debug)]
enum McpCommand {
    /// A stdio MCP server for any MCP client: carries JSON-RPC to <peer>/<service>.
    /// Client config: command "nullport", args ["mcp", "bridge", "files-server/files"].
    Bridge {
        /// `<peer>/<service>`.
        target: String,
        /// Present a capability token (its text, or @FILE).
        #[arg(long)]
        token: Option<String>,
    },
    /// Set what a caller may do on an MCP service (replaces its previous rules).
    Allow {
        /// Alias or NodeId.
        peer: String,
        /// The MCP service.
        service: String,
        /// Tool names or `*` globs, comma separated.
        #[arg(long, value_delimiter = ',')]
        tools: Vec<String>,
        /// Resource URI prefixes, comma separated.
        #[arg(long, value_delimiter = ',')]
        resources: Vec<String>,
        /// Prompt names or globs, comma separated.
        #[arg(long, value_delimiter = ',')]
        prompts: Vec<String>,
        /// Extra JSON-RPC methods beyond the defaults, comma separated.
        #[arg(long, value_delimiter = ',')]
        methods: Vec<String>,
        /// Tool calls per minute.
        #[arg(long)]
        calls_per_minute: Option<u32>,
        /// Tool calls in flight at once.
        #[arg(long)]
        max_concurrent: Option<u32>,
    },
    /// Take a caller's MCP rules on a service away (its open sessions end at once).
    Deny {
        /// Alias or NodeId.
        peer: String,
        /// The MCP service.
        service: String,
    },
    /// Show every MCP service's callers, their rules, and the tools that need approval.
    Show {
        /// Only this service.
        service: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Make every call of a tool wait for a human (`nullport approve <id>`).
    RequireApproval {
        /// The MCP service.
        service: String,
        /// Tool name or glob.
        tool: String,
    },
}

#[derive(Subcommand, Debug)]
enum RevocationsCommand {
    /// The lists held (signer, version, size) and what each applies to here.
    Show {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Trust SIGNER (alias or NodeId) to revoke keys and tokens on this node, node-wide.
    /// (An issuer trusted for a service's tokens may revoke for that service already.)
    Trust {
        /// Alias or NodeId.
        signer: String,
    },
}

#[derive(Subcommand, Debug)]
enum ExposeCommand {
    /// Forward channels to a local TCP address (SSH, HTTP, databases).
    Tcp {
        /// Service name.
        name: String,
        /// `host:port` to forward to.
        target: String,
        /// Start each connection with a PROXY protocol v2 header naming the caller (its
        /// NodeId, and its alias here): for backends that log or authorise by caller.
        #[arg(long)]
        proxy_protocol: bool,
    },
    /// Expose a stdio MCP server (one process per caller session) behind the JSON-RPC
    /// firewall; set each caller's rules with `nullport mcp allow`.
    Mcp {
        /// Service name.
        name: String,
        /// A local Streamable HTTP MCP server instead of a command: http://127.0.0.1:PORT/mcp
        #[arg(long, conflicts_with = "command")]
        url: Option<String>,
        /// Pass this variable to the server process (`NAME` from the daemon's environment,
        /// or `NAME=value`); repeatable. The process otherwise gets only PATH, HOME, USER,
        /// LANG, TZ and the like, plus NULLPORT_PEER / NULLPORT_PEER_ALIAS naming the caller.
        #[arg(long = "env", value_name = "NAME[=VALUE]")]
        env: Vec<String>,
        /// The server command and its arguments (after `--`).
        #[arg(last = true, required_unless_present = "url")]
        command: Vec<String>,
    },
    /// Run a command per channel with its stdin/stdout as the channel.
    Exec {
        /// Service name.
        name: String,
        /// Pass this variable to the process (`NAME` from the daemon's environment, or
        /// `NAME=value`); repeatable. The process otherwise gets only PATH, HOME, USER, LANG,
        /// TZ and the like, plus NULLPORT_PEER / NULLPORT_PEER_ALIAS naming the caller.
        #[arg(long = "env", value_name = "NAME[=VALUE]")]
        env: Vec<String>,
        /// The command and its arguments (after `--`).
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

impl Cli {
    /// Whether this invocation runs the daemon (which logs at info by default).
    pub fn is_daemon(&self) -> bool {
        matches!(self.command, Command::Up(_))
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let home = Home::resolve(cli.home);
    match cli.command {
        Command::Init(args) => init(&home, args),
        Command::Id { json } => {
            let id = node_id(&home)?;
            if json {
                println!("{}", serde_json::json!({ "node_id": id.to_string() }));
            } else {
                println!("{id}");
            }
            Ok(())
        }
        Command::Trust(cmd) => trust(&home, cmd).await,
        Command::Expose(cmd) => expose(&home, cmd).await,
        Command::Unexpose { name } => {
            let mut file = load_config(&home)?;
            if file.services.remove(&name).is_none() {
                bail!("no service named {name:?} is exposed");
            }
            file.save(&home.config())?;
            println!("{name} is no longer exposed{}", reload(&home).await);
            Ok(())
        }
        Command::Allow { peer, service } => {
            let trust = TrustStore::load(&home.trust())?;
            let id = trust.resolve(&peer)?;
            let mut policy = Policy::load(&home.policy())?;
            let added = policy.allow(&peer, &service);
            policy.save()?;
            let exposed = load_config(&home)?.services.contains_key(&service);
            println!(
                "{peer} ({}) {} use {service}{}{}",
                id.fmt_short(),
                if added { "may now" } else { "could already" },
                if exposed {
                    ""
                } else {
                    " (note: no service of that name is exposed yet)"
                },
                reload(&home).await
            );
            Ok(())
        }
        Command::Deny {
            peer: id,
            service: None,
        } => answer(&home, &id, false).await,
        Command::Approve { id } => answer(&home, &id, true).await,
        Command::Approvals { json } => approvals(&home, json).await,
        Command::Mcp(cmd) => mcp(&home, cmd).await,
        Command::Audit(cmd) => audit(&home, cmd).await,
        Command::Token(cmd) => token(&home, cmd).await,
        Command::Rotate { passphrase_file } => rotate(&home, passphrase_file).await,
        Command::Revocations(RevocationsCommand::Show { json }) => {
            let (response, _) = control(&home, &ControlRequest::Status).await?;
            let status = response
                .status
                .ok_or_else(|| anyhow!("{}", response.error.unwrap_or_default()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status.revocations)?);
                return Ok(());
            }
            if status.revocations.is_empty() {
                println!("no revocation lists held");
            }
            for l in &status.revocations {
                println!(
                    "{} ({}) v{}: {} keys, {} tokens; applies to {}",
                    l.alias.as_deref().unwrap_or("-"),
                    l.signer,
                    l.version,
                    l.keys,
                    l.tokens,
                    l.applies
                );
            }
            Ok(())
        }
        Command::Revocations(RevocationsCommand::Trust { signer }) => {
            let trust = TrustStore::load(&home.trust())?;
            let id = trust.resolve(&signer)?;
            let mut policy = Policy::load(&home.policy())?;
            let added = policy.trust_revocation_signer(&signer);
            policy.save()?;
            println!(
                "{signer} ({id}) {} revoke keys and tokens on this node{}",
                if added { "may now" } else { "could already" },
                reload(&home).await
            );
            Ok(())
        }
        Command::Join {
            invite,
            relay,
            passphrase_file,
        } => join(&home, &invite, &relay, passphrase_file).await,
        Command::Revoke {
            what,
            passphrase_file,
        } => revoke(&home, &what, passphrase_file).await,
        Command::Deny {
            peer,
            service: Some(service),
        } => {
            let trust = TrustStore::load(&home.trust())?;
            let mut policy = Policy::load(&home.policy())?;
            let removed = policy.withdraw(&peer, &service, &trust);
            if removed.is_empty() {
                bail!(
                    "no rule lets {peer} use {service} (see `nullport mcp show` and {})",
                    home.policy().display()
                );
            }
            policy.save()?;
            println!(
                "{peer} may no longer use {service} (removed: {}); its open channels to {service} are closed{}",
                removed.join(", "),
                reload(&home).await
            );
            Ok(())
        }
        Command::Up(args) => up(&home, args).await,
        Command::Connect {
            target,
            listen,
            allow_remote,
            token,
        } => connect(&home, &target, listen, allow_remote, read_token(token)?).await,
        Command::Pipe { target, token } => pipe(&home, &target, false, token).await,
        Command::Status { json } => status(&home, json).await,
        Command::Reload => {
            let (response, _) = control(&home, &ControlRequest::Reload).await?;
            if !response.ok {
                bail!(
                    "the daemon kept its previous configuration: {}",
                    response.error.unwrap_or_default()
                );
            }
            println!("reloaded");
            Ok(())
        }
        Command::Quickstart => crate::quickstart::run().await,
    }
}

async fn join(
    home: &Home,
    invite: &str,
    relay: &str,
    passphrase_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    let bytes = nullport_keyring::invite::Invite::from_text(invite)
        .map_err(|e| anyhow!("{e}: an invite looks like npi1..."))?;
    let relay_addr: RelayAddr = relay.parse()?;
    let identity = Arc::new(load_identity(home, passphrase_file)?);
    let mut config = nullport_node::NodeConfig::new(identity.clone(), relay_addr.clone());
    config.join = Some(bytes);
    config.limits.refused_backoff_max = std::time::Duration::from_secs(60);
    let node = nullport_node::Node::start(config).await?;
    node.wait_online(std::time::Duration::from_secs(10))
        .await
        .map_err(|e| anyhow!("join failed: {e}"))?;
    node.shutdown().await;
    let mut file = load_config(home)?;
    file.relay = Some(relay.to_owned());
    file.save(&home.config())?;
    println!(
        "joined {relay_addr} as {}; start the daemon with `nullport up`",
        identity.node_id()
    );
    Ok(())
}

async fn rotate(home: &Home, passphrase_file: Option<PathBuf>) -> anyhow::Result<()> {
    let path = home.key();
    let (old, pass) = load_identity_and_passphrase(home, passphrase_file)?;
    let new = Identity::generate().map_err(|e| anyhow!("randomness: {e}"))?;
    let statement = nullport_keyring::rotation::sign(&old, &new, nullport::tokens::unix_now());
    let (response, _) = control(
        home,
        &ControlRequest::PublishRotation {
            rotation: statement,
        },
    )
    .await?;
    if !response.ok {
        bail!(
            "the relay did not take the rotation: {}",
            response.error.unwrap_or_default()
        );
    }
    let protection = match pass {
        Some(p) => Protection::Passphrase(p, KdfParams::default()),
        None => Protection::InsecurePlaintext,
    };
    // Keep the old key beside the new one (0600), then replace it atomically.
    key_file::store(
        &home.dir().join("identity.key.old"),
        &old,
        &protection,
        true,
    )?;
    key_file::store(&path, &new, &protection, true)?;
    println!("rotated {} -> {}", old.node_id(), new.node_id());
    println!(
        "restart the daemon (`nullport up`) to use the new key; peers that trusted the old one follow it"
    );
    Ok(())
}

async fn revoke(home: &Home, what: &str, passphrase_file: Option<PathBuf>) -> anyhow::Result<()> {
    use nullport_keyring::revocation::RevocationList;
    let identity = load_identity(home, passphrase_file)?;
    let trust = TrustStore::load(&home.trust())?;
    let path = home.revocations_issued();
    let mut list: RevocationList = match std::fs::read(&path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).with_context(|| format!("reading {}", path.display()))?
        }
        Err(_) => RevocationList {
            signer: identity.node_id(),
            version: 0,
            issued: 0,
            keys: Vec::new(),
            tokens: Vec::new(),
        },
    };
    let described = if what.starts_with("npt1") || what.starts_with('@') {
        let text = read_token(Some(what.to_owned()))?.unwrap_or_default();
        let token = nullport_keyring::token::Token::from_text(&text)?;
        let id = token.last().body.id;
        if !list.tokens.contains(&id) {
            list.tokens.push(id);
        }
        format!("token {}", token.ids().last().cloned().unwrap_or_default())
    } else {
        let key = trust.resolve(what)?;
        if !list.keys.contains(&key) {
            list.keys.push(key);
        }
        format!("key {key}")
    };
    list.version += 1;
    list.issued = nullport::tokens::unix_now();
    let signed = list.sign(&identity);
    let (response, _) = control(home, &ControlRequest::PublishRevocations { list: signed }).await?;
    if !response.ok {
        bail!(
            "the list was not applied: {}",
            response.error.unwrap_or_default()
        );
    }
    nullport_keyring::fs::write_private(&path, &serde_json::to_vec_pretty(&list)?, true)?;
    match response.note {
        None => println!(
            "revoked {described} (revocation list version {}): refused here at once, and published through the relay",
            list.version
        ),
        Some(note) => println!(
            "revoked {described} (revocation list version {}): refused here at once; {note}",
            list.version
        ),
    }
    Ok(())
}

/// A token argument: its text, or `@FILE`.
fn read_token(arg: Option<String>) -> anyhow::Result<Option<String>> {
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

fn parse_ttl(ttl: &str) -> anyhow::Result<u64> {
    Ok(nullport_keyring::ttl::parse(ttl)?)
}

fn scope_of(args: &ScopeArgs) -> nullport_keyring::token::Scope {
    nullport_keyring::token::Scope {
        tools: args.tools.clone(),
        resources: args.resources.clone(),
        prompts: args.prompts.clone(),
        methods: args.methods.clone(),
    }
}

/// The `--audience` of a token command, resolved through the trust store.
fn audience_of(
    args: &ScopeArgs,
    trust: &TrustStore,
) -> anyhow::Result<Option<nullport_protocol::NodeId>> {
    Ok(args
        .audience
        .as_deref()
        .map(|a| trust.resolve(a))
        .transpose()?)
}

async fn token(home: &Home, cmd: TokenCommand) -> anyhow::Result<()> {
    use nullport_keyring::token::Token;
    let trust = TrustStore::load(&home.trust())?;
    let now = nullport::tokens::unix_now();
    match cmd {
        TokenCommand::Issue {
            to,
            service,
            scope,
            passphrase_file,
        } => {
            let identity = load_identity(home, passphrase_file)?;
            let holder = trust.resolve(&to)?;
            let audience = audience_of(&scope, &trust)?;
            let t = Token::issue(
                &identity,
                holder,
                audience,
                &service,
                scope_of(&scope),
                now,
                now + parse_ttl(&scope.ttl)?,
            )?;
            println!("{}", t.to_text());
        }
        TokenCommand::Delegate {
            token,
            to,
            scope,
            passphrase_file,
        } => {
            let identity = load_identity(home, passphrase_file)?;
            let parent = Token::from_text(&read_token(Some(token))?.unwrap_or_default())?;
            let holder = trust.resolve(&to)?;
            let audience = audience_of(&scope, &trust)?;
            let t = parent.delegate(
                &identity,
                holder,
                audience,
                scope_of(&scope),
                now,
                now + parse_ttl(&scope.ttl)?,
            )?;
            println!("{}", t.to_text());
        }
        TokenCommand::Inspect { token } => {
            let t = Token::from_text(&read_token(Some(token))?.unwrap_or_default())?;
            let time = |s: u64| {
                nullport::audit::rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s))
            };
            let links: Vec<serde_json::Value> = t
                .links
                .iter()
                .zip(t.ids())
                .map(|(l, id)| {
                    let b = &l.body;
                    serde_json::json!({
                        "id": id,
                        "issuer": b.issuer.to_string(),
                        "holder": b.holder.to_string(),
                        "audience": b.audience.map(|a| a.to_string()),
                        "service": b.service,
                        "scope": { "tools": b.scope.tools, "resources": b.scope.resources, "prompts": b.scope.prompts, "methods": b.scope.methods },
                        "not_before": time(b.not_before),
                        "expires": time(b.expires),
                        "expired": now > b.expires,
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&links)?);
        }
        TokenCommand::TrustIssuer { issuer, service } => {
            trust.resolve(&issuer)?;
            let mut policy = Policy::load(&home.policy())?;
            let added = policy.trust_issuer(&issuer, &service);
            policy.save()?;
            println!(
                "tokens from {issuer} {} open {service}{}",
                if added { "now" } else { "already" },
                reload(home).await
            );
        }
    }
    Ok(())
}

async fn audit(home: &Home, cmd: AuditCommand) -> anyhow::Result<()> {
    use nullport_keyring::audit;
    let path = home.audit();
    if !path.exists() {
        bail!("no audit log at {} (the daemon writes it)", path.display());
    }
    match cmd {
        AuditCommand::Tail { lines, follow } => {
            let text = std::fs::read_to_string(&path)?;
            let all: Vec<&str> = text.lines().collect();
            for l in &all[all.len().saturating_sub(lines)..] {
                println!("{l}");
            }
            if follow {
                let mut offset = text.len() as u64;
                loop {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    let len = std::fs::metadata(&path)?.len();
                    if len > offset {
                        use std::io::{Read, Seek};
                        let mut f = std::fs::File::open(&path)?;
                        f.seek(std::io::SeekFrom::Start(offset))?;
                        let mut more = String::new();
                        f.read_to_string(&mut more)?;
                        print!("{more}");
                        offset = len;
                    }
                }
            }
            Ok(())
        }
        AuditCommand::Export { since, .. } => {
            for entry in audit::entries(&path)? {
                let ts = entry["ts"].as_str().unwrap_or("");
                // RFC 3339 UTC with a fixed layout sorts as text.
                if since.as_deref().is_none_or(|s| ts >= s) {
                    println!("{entry}");
                }
            }
            Ok(())
        }
        AuditCommand::Verify { witness } => {
            let node = node_id(home)?;
            let mut source = "";
            let witnessed = if witness {
                let (w, from) = match control(home, &ControlRequest::AuditWitness).await {
                    Ok((r, _)) if r.ok => (r.witness, "the relay"),
                    _ => (
                        std::fs::read(home.audit_witness())
                            .ok()
                            .and_then(|b| serde_json::from_slice(&b).ok()),
                        "the local copy (daemon not running: the relay's latest could be newer)",
                    ),
                };
                source = from;
                let w = w.ok_or_else(|| anyhow!("no witnessed checkpoint yet ({from})"))?;
                let cp = nullport_protocol::relay_link::WitnessedCheckpoint {
                    seq: w["seq"].as_u64().unwrap_or(0),
                    head: w["head"].as_str().unwrap_or("").to_owned(),
                    node_sig: w["node_sig"].as_str().unwrap_or("").to_owned(),
                    relay_sig: w["relay_sig"].as_str().unwrap_or("").to_owned(),
                };
                let relay: RelayAddr = load_config(home)?
                    .relay
                    .ok_or_else(|| anyhow!("no relay in the config: cannot check the witness"))?
                    .parse()?;
                let sig = (0..64)
                    .map(|i| {
                        cp.relay_sig
                            .get(2 * i..2 * i + 2)
                            .and_then(|h| u8::from_str_radix(h, 16).ok())
                    })
                    .collect::<Option<Vec<u8>>>();
                let valid = sig
                    .and_then(|s| <[u8; 64]>::try_from(s).ok())
                    .is_some_and(|s| {
                        nullport_protocol::identity::verify(
                            &relay.node_id,
                            nullport_protocol::domain::AUDIT_WITNESS_V1,
                            &cp.witness_body(&node),
                            &s,
                        )
                        .is_ok()
                    });
                if !valid {
                    bail!(
                        "the witnessed checkpoint is not signed by the relay {}",
                        relay.node_id
                    );
                }
                Some(audit::Checkpoint {
                    seq: cp.seq,
                    head: cp.head,
                    sig: cp.node_sig,
                })
            } else {
                None
            };
            let report = audit::verify(&path, &node, witnessed.as_ref())?;
            for (file, line) in &report.torn_at {
                println!(
                    "note: {} line {line} is a torn write (a crash mid-append), not tampering",
                    file.display()
                );
            }
            if let Some(p) = &report.problem {
                println!(
                    "audit log FAILED at {} line {}: {}",
                    p.file.display(),
                    p.line,
                    p.reason
                );
                std::process::exit(1);
            }
            if let Some(Err(e)) = &report.witness {
                println!("audit log FAILED against the witness from {source}: {e}");
                std::process::exit(1);
            }
            println!(
                "audit log OK: {} entries, {} signed checkpoints (last at entry {}), {} newer entries not yet signed",
                report.entries,
                report.checkpoints,
                report
                    .last_checkpoint
                    .as_ref()
                    .map(|c| c.seq.to_string())
                    .unwrap_or_default(),
                report.unsigned_tail
            );
            match (&report.witness, witness) {
                (Some(Ok(())), _) => println!(
                    "witness: the checkpoint {} countersigned by the relay is in the log ({source})",
                    witnessed.map(|c| c.seq).unwrap_or(0)
                ),
                (_, false) => println!(
                    "note: without --witness, a cut-off tail after the last checkpoint cannot be detected"
                ),
                _ => {}
            }
            Ok(())
        }
    }
}

async fn answer(home: &Home, id: &str, approve: bool) -> anyhow::Result<()> {
    let (response, _) = control(
        home,
        &ControlRequest::Answer {
            id: id.to_owned(),
            approve,
        },
    )
    .await?;
    if !response.ok {
        bail!("{}", response.error.unwrap_or_default());
    }
    let what = response.approvals.and_then(|v| v.into_iter().next());
    match what {
        Some(a) => println!(
            "{} {} call of {} by {}",
            if approve { "approved" } else { "denied" },
            a.service,
            a.tool,
            a.caller
        ),
        None => println!("{}", if approve { "approved" } else { "denied" }),
    }
    Ok(())
}

async fn approvals(home: &Home, json: bool) -> anyhow::Result<()> {
    let (response, _) = control(home, &ControlRequest::Approvals).await?;
    let list = response.approvals.unwrap_or_default();
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else if list.is_empty() {
        println!("no tool calls are waiting for approval");
    } else {
        for a in list {
            println!(
                "{}  {}/{}  caller {}  args sha256 {}  waiting {} s",
                a.id, a.service, a.tool, a.caller, a.args_digest, a.waiting_secs
            );
        }
    }
    Ok(())
}

async fn mcp(home: &Home, cmd: McpCommand) -> anyhow::Result<()> {
    match cmd {
        McpCommand::Bridge { target, token } => pipe(home, &target, true, token).await,
        McpCommand::Allow {
            peer,
            service,
            tools,
            resources,
            prompts,
            methods,
            calls_per_minute,
            max_concurrent,
        } => {
            TrustStore::load(&home.trust())?.resolve(&peer)?;
            let mut policy = Policy::load(&home.policy())?;
            let rules = nullport_keyring::McpRules {
                tools,
                resources,
                prompts,
                methods,
                calls_per_minute,
                max_concurrent,
            };
            policy.set_mcp_rules(&peer, &service, rules.clone());
            policy.save()?;
            println!(
                "{peer} on {service}: tools {:?}, resources {:?}, prompts {:?}{}",
                rules.tools,
                rules.resources,
                rules.prompts,
                reload(home).await
            );
            Ok(())
        }
        McpCommand::Deny { peer, service } => {
            let trust = TrustStore::load(&home.trust())?;
            let mut policy = Policy::load(&home.policy())?;
            if !policy.withdraw_mcp(&peer, &service, &trust) {
                bail!("{peer} has no MCP rules on {service} (see `nullport mcp show {service}`)");
            }
            policy.save()?;
            println!(
                "{peer} may no longer use MCP service {service}; its open sessions are closed{}",
                reload(home).await
            );
            Ok(())
        }
        McpCommand::Show { service, json } => {
            let policy = Policy::load(&home.policy())?;
            let services: Vec<_> = policy
                .mcp_services()
                .into_iter()
                .filter(|(name, _, _)| service.as_ref().is_none_or(|s| s == name))
                .collect();
            if json {
                let out: Vec<serde_json::Value> = services
                    .iter()
                    .map(|(name, callers, approve)| {
                        serde_json::json!({
                            "service": name,
                            "approve": approve,
                            "callers": callers.iter().map(|(peer, r)| serde_json::json!({
                                "peer": peer, "tools": r.tools, "resources": r.resources,
                                "prompts": r.prompts, "methods": r.methods,
                                "calls_per_minute": r.calls_per_minute,
                                "max_concurrent": r.max_concurrent,
                            })).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&out)?);
                return Ok(());
            }
            if services.is_empty() {
                println!(
                    "no MCP rules{}",
                    service.map(|s| format!(" for {s}")).unwrap_or_default()
                );
            }
            for (name, callers, approve) in services {
                println!("{name}");
                if !approve.is_empty() {
                    println!("  approval needed: {}", approve.join(", "));
                }
                for (peer, r) in callers {
                    println!("  {peer}");
                    let list = |v: &[String]| {
                        if v.is_empty() {
                            "(none)".to_owned()
                        } else {
                            v.join(", ")
                        }
                    };
                    println!("    tools      {}", list(&r.tools));
                    println!("    resources  {}", list(&r.resources));
                    println!("    prompts    {}", list(&r.prompts));
                    if !r.methods.is_empty() {
                        println!("    methods    {}", r.methods.join(", "));
                    }
                    if let Some(n) = r.calls_per_minute {
                        println!("    calls/min  {n}");
                    }
                    if let Some(n) = r.max_concurrent {
                        println!("    concurrent {n}");
                    }
                }
            }
            Ok(())
        }
        McpCommand::RequireApproval { service, tool } => {
            let mut policy = Policy::load(&home.policy())?;
            policy.require_approval(&service, &tool);
            policy.save()?;
            println!(
                "calls of {service}/{tool} now wait for `nullport approve <id>`{}",
                reload(home).await
            );
            Ok(())
        }
    }
}

fn init(home: &Home, args: InitArgs) -> anyhow::Result<()> {
    home.create()
        .with_context(|| format!("creating {}", home.dir().display()))?;
    let identity = Identity::generate().map_err(|e| anyhow!("randomness: {e}"))?;
    let protection = if args.insecure_plaintext_key {
        Protection::InsecurePlaintext
    } else {
        let pass =
            PassphraseSource::choose(args.passphrase_file, "NULLPORT_PASSPHRASE").read(|| {
                let p = rpassword::prompt_password("passphrase for the new identity key: ")?;
                if rpassword::prompt_password("again: ")? != p {
                    return Err(std::io::Error::other("passphrases differ"));
                }
                Ok(p)
            })?;
        Protection::Passphrase(pass, KdfParams::default())
    };
    key_file::store(&home.key(), &identity, &protection, args.force).map_err(|e| match e {
        nullport_keyring::Error::AlreadyExists { path } => {
            anyhow!(
                "{} already holds an identity (`nullport id` shows it; --force replaces it)",
                path.display()
            )
        }
        other => other.into(),
    })?;
    eprintln!(
        "created identity {} ({})",
        home.key().display(),
        if args.insecure_plaintext_key {
            "unencrypted"
        } else {
            "encrypted"
        }
    );
    println!("{}", identity.node_id());
    Ok(())
}

fn node_id(home: &Home) -> anyhow::Result<NodeId> {
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

fn load_identity(home: &Home, passphrase_file: Option<PathBuf>) -> anyhow::Result<Identity> {
    node_id(home)?;
    Ok(load_identity_and_passphrase(home, passphrase_file)?.0)
}

/// The identity, and the passphrase that opened it (for re-encrypting a rotated key).
fn load_identity_and_passphrase(
    home: &Home,
    passphrase_file: Option<PathBuf>,
) -> anyhow::Result<(Identity, Option<zeroize::Zeroizing<String>>)> {
    let path = home.key();
    let encrypted =
        key_file::is_encrypted(&path).map_err(|e| anyhow!("key file unreadable: {e}"))?;
    let pass = if encrypted {
        Some(
            PassphraseSource::choose(passphrase_file, "NULLPORT_PASSPHRASE")
                .read(|| rpassword::prompt_password("identity key passphrase: "))?,
        )
    } else {
        None
    };
    let identity = key_file::load(&path, pass.as_ref().map(|p| p.as_str()))
        .map_err(|e| anyhow!("key file unreadable: {e}"))?;
    Ok((identity, pass))
}

fn load_config(home: &Home) -> anyhow::Result<NodeFile> {
    Ok(NodeFile::load(&home.config())?)
}

async fn trust(home: &Home, cmd: TrustCommand) -> anyhow::Result<()> {
    let mut store = TrustStore::load(&home.trust())?;
    match cmd {
        TrustCommand::Add {
            alias,
            node_id,
            replace,
        } => {
            let id: NodeId = node_id
                .parse()
                .map_err(|e| anyhow!("{node_id:?} is not a NodeId: {e}"))?;
            store.add(&alias, id, replace)?;
            home.create()?;
            store.save()?;
            println!("{alias} = {id}{}", reload(home).await);
        }
        TrustCommand::Remove { alias } => {
            if store.remove(&alias).is_none() {
                bail!("no alias {alias:?}");
            }
            store.save()?;
            println!("removed {alias}{}", reload(home).await);
        }
        TrustCommand::List { json } => {
            if json {
                let map: serde_json::Map<String, serde_json::Value> = store
                    .entries()
                    .map(|(a, id)| (a.to_owned(), id.to_string().into()))
                    .collect();
                println!("{}", serde_json::Value::Object(map));
            } else {
                for (alias, id) in store.entries() {
                    println!("{alias:<20} {id}");
                }
            }
        }
    }
    Ok(())
}

async fn expose(home: &Home, cmd: ExposeCommand) -> anyhow::Result<()> {
    let (name, service) = match cmd {
        ExposeCommand::Tcp {
            name,
            target,
            proxy_protocol,
        } => {
            let ok = target
                .rsplit_once(':')
                .map(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
                .unwrap_or(false);
            if !ok {
                bail!("{target:?} is not host:port");
            }
            let mut service = Service::new(ServiceSpec::Tcp(target));
            service.proxy_protocol = proxy_protocol;
            (name, service)
        }
        ExposeCommand::Exec { name, env, command } => {
            let mut service = Service::new(ServiceSpec::Exec(command));
            service.env = env;
            (name, service)
        }
        ExposeCommand::Mcp {
            name,
            url: Some(url),
            env,
            ..
        } => {
            if !env.is_empty() {
                bail!("--env is for MCP servers started as commands, not for --url");
            }
            nullport::mcp::http::HttpTarget::parse(&url).map_err(|e| anyhow!("{url}: {e}"))?;
            (name, Service::new(ServiceSpec::McpUrl(url)))
        }
        ExposeCommand::Mcp {
            name,
            url: None,
            env,
            command,
        } => {
            let mut service = Service::new(ServiceSpec::Mcp(command));
            service.env = env;
            (name, service)
        }
    };
    ServiceName::new(&name)
        .map_err(|_| anyhow!("invalid service name {name:?}: use 1-64 of A-Z a-z 0-9 . _ -"))?;
    for entry in &service.env {
        let var = entry.split_once('=').map_or(entry.as_str(), |(n, _)| n);
        if var.is_empty() || var.starts_with("NULLPORT_") {
            bail!(
                "--env {entry:?}: not a variable a service may get (NULLPORT_* are nullport's own)"
            );
        }
    }
    home.create()?;
    let mut file = load_config(home)?;
    file.services.insert(name.clone(), service.clone());
    file.save(&home.config())?;
    println!(
        "exposed {name}: {service} (default deny: `nullport allow <peer> {name}`){}",
        reload(home).await
    );
    Ok(())
}

/// Asks a running daemon to reload; returns a note for the user.
async fn reload(home: &Home) -> String {
    match control(home, &ControlRequest::Reload).await {
        Ok((r, _)) if r.ok => " (daemon reloaded)".to_owned(),
        Ok((r, _)) => format!(" (daemon did not reload: {})", r.error.unwrap_or_default()),
        Err(_) => " (takes effect when the daemon starts)".to_owned(),
    }
}

/// Sends one control request; returns the response and the stream (for pipes).
async fn control(
    home: &Home,
    request: &ControlRequest,
) -> anyhow::Result<(ControlResponse, BufReader<UnixStream>)> {
    nullport::control::request(&home.socket(), request)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                anyhow!(
                    "the nullport daemon is not running for {} (start it with `nullport up`)",
                    home.dir().display()
                )
            }
            _ => anyhow!("control socket {}: {e}", home.socket().display()),
        })
}

fn split_target(target: &str) -> anyhow::Result<(&str, &str)> {
    target
        .split_once('/')
        .filter(|(p, s)| !p.is_empty() && !s.is_empty())
        .ok_or_else(|| anyhow!("{target:?} is not <peer>/<service>"))
}

async fn open_pipe(
    home: &Home,
    peer: &str,
    service: &str,
    mcp: bool,
    token: Option<String>,
) -> anyhow::Result<BufReader<UnixStream>> {
    let (response, stream) = control(
        home,
        &ControlRequest::Pipe {
            peer: peer.to_owned(),
            service: service.to_owned(),
            mcp,
            token,
        },
    )
    .await?;
    if !response.ok {
        bail!(
            "{}",
            response.error.unwrap_or_else(|| "channel refused".into())
        );
    }
    Ok(stream)
}

async fn pipe(home: &Home, target: &str, mcp: bool, token: Option<String>) -> anyhow::Result<()> {
    let (peer, service) = split_target(target)?;
    let stream = open_pipe(home, peer, service, mcp, read_token(token)?).await?;
    let (mut from_daemon, mut to_daemon) = tokio::io::split(stream);
    let upload = async {
        let r = tokio::io::copy(&mut tokio::io::stdin(), &mut to_daemon).await;
        let _ = to_daemon.shutdown().await;
        r
    };
    let download = async {
        let mut stdout = tokio::io::stdout();
        let r = tokio::io::copy(&mut from_daemon, &mut stdout).await;
        let _ = stdout.flush().await;
        r
    };
    tokio::pin!(upload, download);
    // Done when the remote side is done; local stdin may stay open (as with ssh).
    let mut upload_done = false;
    loop {
        tokio::select! {
            r = &mut upload, if !upload_done => { upload_done = true; r?; }
            r = &mut download => { r?; return Ok(()); }
        }
    }
}

async fn connect(
    home: &Home,
    target: &str,
    listen: String,
    allow_remote: bool,
    token: Option<String>,
) -> anyhow::Result<()> {
    let (peer, service) = split_target(target)?;
    if let Some(path) = listen.strip_prefix("unix:") {
        return connect_unix(home, peer, service, PathBuf::from(path), token).await;
    }
    let listen: SocketAddr = listen
        .parse()
        .map_err(|_| anyhow!("--listen {listen:?}: expected host:port or unix:PATH"))?;
    if !listen.ip().is_loopback() && !allow_remote {
        bail!(
            "refusing to listen on {listen}: not a loopback address (anyone who reaches it would use your access); add --allow-remote if you mean it"
        );
    }
    // Fail early and clearly if the daemon is not running.
    control(home, &ControlRequest::Status).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AddrInUse => anyhow!("local port {listen} is already in use"),
            _ => anyhow!("cannot listen on {listen}: {e}"),
        })?;
    let bound = listener.local_addr()?;
    println!("listening on {bound} -> {peer}/{service}");
    eprintln!(
        "note: every local user can connect to {bound} and use your access to {peer}/{service}; use --listen unix:PATH for a socket only you can use"
    );
    loop {
        let (mut tcp, from) = listener.accept().await?;
        let home = home.clone();
        let (peer, service, token) = (peer.to_owned(), service.to_owned(), token.clone());
        tokio::spawn(async move {
            match open_pipe(&home, &peer, &service, false, token).await {
                Ok(mut stream) => {
                    let _ = tcp.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut stream).await;
                }
                Err(e) => eprintln!("{from}: {e:#}"),
            }
        });
    }
}

/// `connect --listen unix:PATH`: a Unix socket created under a 0077 umask (mode 0600), so
/// only this user can use the channel behind it.
async fn connect_unix(
    home: &Home,
    peer: &str,
    service: &str,
    path: PathBuf,
    token: Option<String>,
) -> anyhow::Result<()> {
    control(home, &ControlRequest::Status).await?;
    if path.exists() {
        bail!("{} already exists (remove it first)", path.display());
    }
    let previous = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let bound = tokio::net::UnixListener::bind(&path);
    rustix::process::umask(previous);
    let listener = bound.map_err(|e| anyhow!("cannot listen on {}: {e}", path.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    println!("listening on unix:{} -> {peer}/{service}", path.display());
    let serve = async {
        loop {
            let (mut local, _) = listener.accept().await?;
            let home = home.clone();
            let (peer, service, token) = (peer.to_owned(), service.to_owned(), token.clone());
            tokio::spawn(async move {
                match open_pipe(&home, &peer, &service, false, token).await {
                    Ok(mut stream) => {
                        let _ = tokio::io::copy_bidirectional(&mut local, &mut stream).await;
                    }
                    Err(e) => eprintln!("unix:{e:#}"),
                }
            });
        }
        #[allow(unreachable_code)]
        Ok::<(), anyhow::Error>(())
    };
    let result = tokio::select! {
        r = serve => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
    };
    let _ = std::fs::remove_file(&path);
    result
}

async fn status(home: &Home, json: bool) -> anyhow::Result<()> {
    let (response, _) = control(home, &ControlRequest::Status).await?;
    let status = response
        .status
        .ok_or_else(|| anyhow!("{}", response.error.unwrap_or_default()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    println!("node     {}", status.node_id);
    println!("relay    {}", status.relay);
    println!("link     {}", status.link);
    println!(
        "services {}",
        if status.services.is_empty() {
            "(none)"
        } else {
            ""
        }
    );
    for s in &status.services {
        println!("  {:<16} {}", s.name, s.target);
    }
    println!(
        "channels {}",
        if status.channels.is_empty() {
            "(none)"
        } else {
            ""
        }
    );
    for c in &status.channels {
        println!(
            "  {:<3} {:<24} {:<12} in {:>10} B  out {:>10} B  {:>5} s",
            c.direction, c.peer, c.service, c.bytes_in, c.bytes_out, c.age_secs
        );
    }
    if !status.revocations.is_empty() || status.retired_keys > 0 {
        println!("revocation lists");
        for l in &status.revocations {
            println!(
                "  {} v{}: {} keys, {} tokens; applies to {}",
                l.alias.as_deref().unwrap_or(&l.signer),
                l.version,
                l.keys,
                l.tokens,
                l.applies
            );
        }
        if status.retired_keys > 0 {
            println!("  {} keys retired by rotations", status.retired_keys);
        }
    }
    Ok(())
}

async fn up(home: &Home, args: UpArgs) -> anyhow::Result<()> {
    let mut file = load_config(home)?;
    let relay_text = match (&args.relay, &file.relay) {
        (Some(r), _) => r.clone(),
        (None, Some(r)) => r.clone(),
        (None, None) => {
            bail!("no relay: pass --relay <relay NodeId>@host:port (it is saved for next time)")
        }
    };
    let relay: RelayAddr = relay_text.parse()?;
    let identity = Arc::new(load_identity(home, args.passphrase_file)?);
    if args.relay.is_some() && file.relay.as_deref() != Some(relay_text.as_str()) {
        file.relay = Some(relay_text);
        file.save(&home.config())?;
    }
    let daemon = Daemon::start(
        home.clone(),
        identity.clone(),
        relay.clone(),
        file.link.limits(),
    )
    .await?;
    eprintln!(
        "nullport {} up; relay {relay}; control socket {}",
        identity.node_id(),
        home.socket().display()
    );
    eprintln!("no inbound port is open: this node only dials out to the relay");
    let mut state = daemon.node().watch_state();
    let signal = shutdown_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            _ = &mut signal => break,
            r = state.changed() => {
                if r.is_err() { break; }
                let s = state.borrow_and_update().clone();
                eprintln!("relay link: {}", match s {
                    nullport_node::LinkState::Online => "online".to_owned(),
                    nullport_node::LinkState::Connecting { last_error: Some(e), .. } => format!("down ({e}); retrying"),
                    nullport_node::LinkState::Connecting { .. } => "connecting".to_owned(),
                    nullport_node::LinkState::Refused { reason } => format!("refused: {reason}"),
                });
            }
        }
    }
    eprintln!("shutting down: closing channels");
    daemon.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
}
