//! `nullport-relay`: the rendezvous relay binary. A thin layer over the library.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use nullport_keyring::{KdfParams, PassphraseSource, Protection, key_file};
use nullport_protocol::Identity;
use nullport_relay::{Admission, Relay, RelayConfig};

mod cli_map;
mod stop;

/// nullport's rendezvous relay: the only listener in a nullport network.
///
/// Nodes dial out to it over QUIC (one UDP port) and are admitted by their Ed25519 key. It
/// splices end-to-end encrypted channels between them and can read none of them.
///
/// Typical use on a VPS:
///   nullport-relay init --key /var/lib/nullport-relay/relay.key --insecure-plaintext-key
///   nullport-relay run --listen 0.0.0.0:7443 --key /var/lib/nullport-relay/relay.key --allow /etc/nullport-relay/allow
#[derive(Parser, Debug)]
#[command(name = "nullport-relay", version, verbatim_doc_comment)]
struct Cli {
    /// Log lines as text (default) or as JSON objects, one per line (for log shippers).
    #[arg(long, global = true, env = "NULLPORT_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create the relay's identity key and print the address nodes will use.
    Init(InitArgs),
    /// Run the relay in the foreground (logs to stderr; RUST_LOG=debug for more).
    Run(RunArgs),
    /// Print the relay's NodeId (and address, with --public).
    Id(IdArgs),
    /// Make an enrollment invite: `nullport join <invite>` puts a node on this relay's
    /// allowlist (the relay must run with --allow FILE --enroll).
    Invite(InviteArgs),
    /// Revoke node keys network-wide, as the network admin (the relay's key signs the list):
    /// the running relay refuses them and closes their links within a second, and pushes the
    /// list to every node (nodes that trust the relay's key as a revocation signer refuse
    /// them too). Writes `admin-revocations.json` in the state directory.
    Revoke(RevokeArgs),
    /// A fleet's signed relay map: sign one, show one, print its bootstrap strings (see
    /// docs/fleet.md).
    #[command(subcommand)]
    Map(cli_map::MapCommand),
    /// List the nodes online (since when, from where, bytes each way, dials), asking the
    /// running relay on its metrics listener (`run --metrics`).
    Nodes {
        /// The relay's metrics listener.
        #[arg(long, default_value = "127.0.0.1:9477")]
        metrics: SocketAddr,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Print the version, and the relay-link protocol version this relay speaks.
    Version {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write man pages (nullport-relay.1 and one per command) into a directory.
    Man {
        /// Where to write them.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
}

#[derive(Args, Debug)]
struct RevokeArgs {
    #[command(flatten)]
    key: KeyArgs,
    /// The relay's state directory (the same as `run --state-dir`).
    #[arg(long)]
    state_dir: PathBuf,
    /// NodeIds to revoke.
    #[arg(required = true)]
    keys: Vec<nullport_protocol::NodeId>,
}

#[derive(Args, Debug)]
struct InviteArgs {
    #[command(flatten)]
    key: KeyArgs,
    /// How long the invite is valid: 30s, 10m, 2h, 1d.
    #[arg(long, default_value = "1h")]
    ttl: String,
    /// How many nodes may join with it.
    #[arg(long, default_value_t = 1)]
    uses: u32,
}

#[derive(Args, Debug)]
struct KeyArgs {
    /// The relay's key file.
    #[arg(long, default_value = "relay.key", env = "NULLPORT_RELAY_KEY")]
    key: PathBuf,
    /// Read the key passphrase from this file (first line). Otherwise from
    /// $NULLPORT_RELAY_PASSPHRASE, or a prompt.
    #[arg(long)]
    passphrase_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct InitArgs {
    #[command(flatten)]
    key: KeyArgs,
    /// Store the key unencrypted (mode 0600 only): for unattended servers.
    #[arg(long)]
    insecure_plaintext_key: bool,
    /// Replace an existing key file (the old identity is lost; nodes must re-pin).
    #[arg(long)]
    force: bool,
    /// Host name or IP nodes will reach this relay at, to print the full address.
    #[arg(long, default_value = "<host>")]
    public: String,
    /// UDP port nodes will reach this relay at.
    #[arg(long, default_value_t = 7443)]
    port: u16,
}

#[derive(Args, Debug)]
struct IdArgs {
    #[command(flatten)]
    key: KeyArgs,
    /// Host name or IP to print the full address with.
    #[arg(long)]
    public: Option<String>,
    /// UDP port for the printed address.
    #[arg(long, default_value_t = 7443)]
    port: u16,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("admission").required(true).args(["allow", "open"])))]
struct RunArgs {
    #[command(flatten)]
    key: KeyArgs,
    /// UDP address to listen on.
    #[arg(long, default_value = "0.0.0.0:7443")]
    listen: SocketAddr,
    /// Admit only the NodeIds in this file (one a line, # comments). Re-read on SIGHUP and
    /// when the file changes. Created empty if it does not exist yet.
    #[arg(long)]
    allow: Option<PathBuf>,
    /// The host name or address nodes reach this relay at, to print the whole address they
    /// need (`<relay NodeId>@HOST:PORT`).
    #[arg(long)]
    public: Option<String>,
    /// Admit any node with a valid key (for testing or public relays).
    #[arg(long)]
    open: bool,
    /// Serve Prometheus metrics (and `/nodes`, the list of nodes online with their
    /// addresses) on this loopback TCP address.
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// Allow --metrics on a non-loopback address: anyone who reaches it sees every node
    /// online and its address.
    #[arg(long, requires = "metrics")]
    metrics_public: bool,
    /// Dials per second per node.
    #[arg(long, default_value_t = 50)]
    dials_per_second: u64,
    /// Bytes per second per node through the relay (0: unlimited).
    #[arg(long, default_value_t = 0)]
    bytes_per_second: u64,
    /// Admitted connections at once.
    #[arg(long, default_value_t = 100_000)]
    max_connections: usize,
    /// Keep state that must survive a restart here (witnessed audit checkpoints,
    /// revocation lists, used invites).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Keep that state in an etcd cluster shared by the relays of a fleet instead:
    /// `etcd://host:port,host:port,...` (needs a relay built with the `etcd` feature; see
    /// docs/fleet-store.md). --state-dir then holds only the network admin's list file.
    #[arg(long, value_name = "etcd://HOST:PORT,...")]
    store: Option<nullport_relay::store::StoreSpec>,
    /// With --allow: let unknown keys connect only to enroll with an invite (`invite`).
    #[arg(long, requires = "allow")]
    enroll: bool,
    /// Revocation lists held for distribution (one per signer; a node may publish only its
    /// own). A new signer over the bound is refused.
    #[arg(long, default_value_t = 10_000)]
    max_revocation_lists: usize,
    #[command(flatten)]
    fleet: cli_map::FleetArgs,
}

fn passphrase(args: &KeyArgs, confirm: bool) -> anyhow::Result<zeroize::Zeroizing<String>> {
    let source = PassphraseSource::choose(
        args.passphrase_file.clone(),
        "NULLPORT_RELAY_PASSPHRASE",
        "nullport-relay-passphrase",
    );
    Ok(if confirm {
        source.read_new("relay key", |p: &str| rpassword::prompt_password(p))?
    } else {
        source.read("relay key", |p: &str| rpassword::prompt_password(p))?
    })
}

fn parse_ttl(ttl: &str) -> anyhow::Result<u64> {
    Ok(nullport_keyring::ttl::parse(ttl)?)
}

fn load_identity(args: &KeyArgs) -> anyhow::Result<Identity> {
    let encrypted = key_file::is_encrypted(&args.key).with_context(|| {
        format!(
            "no usable relay key at {} (create one with `nullport-relay init`)",
            args.key.display()
        )
    })?;
    let pass = if encrypted {
        Some(passphrase(args, false)?)
    } else {
        None
    };
    Ok(key_file::load(
        &args.key,
        pass.as_ref().map(|p| p.as_str()),
    )?)
}

fn init(args: InitArgs) -> anyhow::Result<()> {
    let identity = Identity::generate().map_err(|e| anyhow::anyhow!("randomness: {e}"))?;
    let protection = if args.insecure_plaintext_key {
        Protection::InsecurePlaintext
    } else {
        Protection::Passphrase(passphrase(&args.key, true)?, KdfParams::default())
    };
    if let Some(dir) = args.key.key.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    key_file::store(&args.key.key, &identity, &protection, args.force)?;
    eprintln!("created relay key {}", args.key.key.display());
    println!("{}@{}:{}", identity.node_id(), args.public, args.port);
    Ok(())
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    // SIGTERM and SIGINT from the first moment too: a stop asked while the relay starts
    // waits for it (and gets its drain) instead of killing it half-started.
    let mut stop = stop::StopSignals::new();
    // SIGHUP from the first moment: a reload asked while starting is handled once the relay
    // runs, instead of killing it.
    let hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("no SIGHUP handler: {e}");
            None
        }
    };
    if let Some(addr) = args.metrics
        && !addr.ip().is_loopback()
        && !args.metrics_public
    {
        anyhow::bail!(
            "--metrics {addr}: metrics and /nodes (every node online, with its address) belong on loopback; use 127.0.0.1:PORT, or add --metrics-public if you mean it"
        );
    }
    let identity = Arc::new(load_identity(&args.key)?);
    cli_map::check_before_start(&args.fleet, &identity.node_id())?;
    let admission = match &args.allow {
        Some(path) => {
            if !path.exists() {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                }
                std::fs::write(
                    path,
                    "# nullport-relay allowlist: one NodeId a line; `#` starts a comment\n",
                )
                .with_context(|| format!("creating the allowlist {}", path.display()))?;
                say!(
                    "created an empty allowlist at {} (add NodeIds one a line, or let nodes join with an invite: --enroll and `nullport-relay invite`)",
                    path.display()
                );
            }
            Admission::from_file(path)?
        }
        None => Admission::open(),
    };
    let admission = Arc::new(admission);
    admission.set_enrolling(args.enroll);
    let mut config = RelayConfig::new(identity.clone(), args.listen, admission.clone());
    config.limits.dials_per_second = args.dials_per_second;
    config.limits.bytes_per_second = args.bytes_per_second;
    config.limits.max_connections = args.max_connections;
    config.limits.max_revocation_lists = args.max_revocation_lists;
    if let Some(dir) = &args.state_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    config.state_dir = args.state_dir.clone();
    config.store = args.store.clone().unwrap_or_default();
    let mut relay = Relay::bind(config).await?;
    say!(
        "nullport-relay listening on udp {} as {}",
        relay.local_addr(),
        identity.node_id()
    );
    match &args.public {
        Some(host) => say!(
            "nodes use: {}@{host}:{}",
            identity.node_id(),
            relay.local_addr().port()
        ),
        None => say!(
            "nodes use: {}@<this machine's public address>:{} (pass --public HOST to print it whole)",
            identity.node_id(),
            relay.local_addr().port()
        ),
    }
    if let Some(addr) = args.metrics {
        let bound = relay.serve_metrics(addr).await?;
        say!("metrics on http://{bound}/metrics");
    }
    let port = relay.local_addr().port();
    let map = cli_map::start(&args.fleet, &relay.handle(), &identity.node_id(), port)?;
    let watcher = tokio::spawn(watch_admission(
        relay.handle(),
        args.allow.clone(),
        hup,
        map,
    ));
    stop.next().await;
    cli_map::drain(&args.fleet, &relay.handle(), &mut stop).await;
    say!("shutting down");
    watcher.abort();
    relay.shutdown().await;
    Ok(())
}

/// Reloads the allowlist, the network admin's revocation list and the relay map on SIGHUP
/// and when their files change (checked twice a second, so a removed or revoked key loses
/// its link within a second). Nodes no longer admitted are disconnected.
async fn watch_admission(
    relay: nullport_relay::RelayHandle,
    allow: Option<PathBuf>,
    mut hup: Option<tokio::signal::unix::Signal>,
    mut map: Option<nullport_relay::map_file::MapWatcher>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut admin_version = 0;
    loop {
        let forced = tokio::select! {
            _ = tick.tick() => false,
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
        };
        if let Some(path) = &allow {
            report_reload(relay.reload_allowlist(forced), path);
        }
        if let Some(map) = map.as_mut() {
            cli_map::follow(map, &relay, forced);
        }
        match relay.reload_admin_list().await {
            Ok(v) if v != admin_version => {
                admin_version = v;
                tracing::info!("network admin's revocation list version {v} in force");
            }
            Ok(_) => {}
            Err(e) => tracing::error!("admin revocation list not reloaded: {e}"),
        }
    }
}

fn report_reload(r: Result<Option<usize>, nullport_relay::Error>, path: &Path) {
    match r {
        Ok(Some(n)) => tracing::info!("allowlist {} reloaded: {n} nodes", path.display()),
        Ok(None) => {}
        Err(e) => tracing::error!("allowlist not reloaded, previous list stays in force: {e}"),
    }
}

/// `nullport-relay revoke`: adds keys to the network admin's list, signed with the relay key.
fn revoke(args: RevokeArgs) -> anyhow::Result<()> {
    use nullport_keyring::revocation::RevocationList;
    let identity = load_identity(&args.key)?;
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("creating {}", args.state_dir.display()))?;
    // One `revoke` at a time: two at once must not both write version N+1.
    let _lock = nullport_keyring::fs::lock(
        &args
            .state_dir
            .join(nullport_relay::store::ADMIN_REVOCATIONS_FILE),
    )?;
    let held = nullport_relay::store::read_admin_list(&args.state_dir, &identity.node_id())
        .map_err(|e| anyhow::anyhow!(e))?;
    let mut list = held
        .map(|(l, _)| l)
        .unwrap_or_else(|| RevocationList::new(identity.node_id()));
    let added: Vec<_> = args
        .keys
        .into_iter()
        .filter(|key| list.revoke_key(*key))
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let signed = list.next(now, &identity);
    nullport_relay::store::write_admin_list(&args.state_dir, &signed)
        .map_err(|e| anyhow::anyhow!(e))?;
    for key in &added {
        println!("revoked {key}");
    }
    eprintln!(
        "network admin's revocation list version {} ({} keys) written to {}; a running relay \
         with this --state-dir applies it within a second",
        list.version,
        list.keys.len(),
        args.state_dir
            .join(nullport_relay::store::ADMIN_REVOCATIONS_FILE)
            .display()
    );
    Ok(())
}

/// Whether logs are JSON (set once in `main`).
static JSON_LOGS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// A line for the operator: on stderr, or a log record when logs are JSON (so every line of
/// a JSON log is JSON).
macro_rules! say {
    ($($arg:tt)*) => {
        if JSON_LOGS.get().copied().unwrap_or(false) {
            tracing::info!($($arg)*);
        } else {
            eprintln!($($arg)*);
        }
    };
}
use say;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let _ = JSON_LOGS.set(cli.log_format == "json");
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr);
    if cli.log_format == "json" {
        logs.json().init();
    } else {
        logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    match real_main(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nullport-relay: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Init(args) => init(args),
        Command::Id(args) => {
            let identity = load_identity(&args.key)?;
            match args.public {
                Some(host) => println!("{}@{host}:{}", identity.node_id(), args.port),
                None => println!("{}", identity.node_id()),
            }
            Ok(())
        }
        Command::Run(args) => tokio::runtime::Runtime::new()?.block_on(run(args)),
        Command::Nodes { metrics, json } => nodes(metrics, json),
        Command::Version { json } => {
            let (version, link) = (
                env!("CARGO_PKG_VERSION"),
                nullport_protocol::relay_link::LINK_VERSION,
            );
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "version": version, "relay_link_version": link })
                );
            } else {
                println!("nullport-relay {version} (relay link version {link})");
            }
            Ok(())
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "nullport-relay", &mut script);
            match std::io::Write::write_all(&mut std::io::stdout(), &script) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(141),
                other => Ok(other?),
            }
        }
        Command::Man { dir } => {
            use clap::CommandFactory;
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(Cli::command(), &dir)
                .with_context(|| format!("writing man pages into {}", dir.display()))?;
            println!(
                "wrote nullport-relay.1 and a page per command into {}",
                dir.display()
            );
            Ok(())
        }
        Command::Revoke(args) => revoke(args),
        Command::Map(command) => cli_map::run(command),
        Command::Invite(args) => {
            let identity = load_identity(&args.key)?;
            let secs = parse_ttl(&args.ttl)?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let bytes = nullport_keyring::invite::Invite::create(&identity, now + secs, args.uses)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{}", nullport_keyring::invite::Invite::to_text(&bytes));
            eprintln!(
                "valid {} for {} node(s); the relay must run with --allow FILE --enroll",
                args.ttl, args.uses
            );
            Ok(())
        }
    }
}

/// `nodes`: asks the running relay's metrics listener for `/nodes` and prints it.
fn nodes(metrics: SocketAddr, json: bool) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&metrics, Duration::from_secs(5))
        .with_context(|| {
            format!("no relay metrics listener at {metrics} (is the relay running with --metrics {metrics}?)")
        })?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(b"GET /nodes HTTP/1.0\r\n\r\n")?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .ok_or_else(|| anyhow::anyhow!("{metrics} did not answer like a nullport relay"))?;
    let mut nodes: Vec<nullport_relay::NodeStats> = serde_json::from_str(body)
        .with_context(|| format!("{metrics} did not answer like a nullport relay"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&nodes)?);
        return Ok(());
    }
    nodes.sort_by_key(|n| n.since);
    println!("{} nodes online", nodes.len());
    for n in &nodes {
        let since = nullport_audit::rfc3339(std::time::UNIX_EPOCH + Duration::from_secs(n.since));
        println!(
            "{}  from {}  since {}  sent {} B  received {} B  dials {}",
            n.node, n.remote, since, n.bytes_sent, n.bytes_received, n.dials
        );
    }
    Ok(())
}
