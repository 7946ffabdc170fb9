//! The fleet's commands: `nullport-relay map sign|show|bootstrap`, and what `run --map FILE`
//! adds (the map served and followed, and a drain announced before a planned stop).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use nullport_keyring::relay_map::{FleetBootstrap, RelayEntry, RelayMap};
use nullport_protocol::{Identity, NodeId};
use nullport_relay::RelayHandle;
use nullport_relay::map_file::{self, MapWatcher, VerifiedMap};

use super::JSON_LOGS;

/// `nullport-relay map ...`
#[derive(Subcommand, Debug)]
pub(crate) enum MapCommand {
    /// Sign a relay map with the network admin key and write it to a file.
    ///
    /// The map lists every relay of the fleet (its NodeId and the addresses nodes reach it
    /// at, optionally a region). Nodes pin the admin key, accept only a map with a higher
    /// version than the one they hold, and never dial a relay that is not in it. Install the
    /// file on every relay (`run --map FILE`): each relay reloads it when it changes and
    /// pushes it to its nodes.
    ///
    /// Example:
    ///   nullport-relay map sign --admin-key admin.key --version 2 \
    ///       --relay np1...@relay1.example.net:7443#eu-west \
    ///       --relay np2...@relay2.example.net:7443,[2001:db8::2]:7443#us-east \
    ///       --out relay-map.json
    #[command(verbatim_doc_comment)]
    Sign(SignArgs),
    /// Print a relay map: version, admin, when it was signed, each relay with its addresses
    /// and region, and the fleet bootstrap string for each relay. Exits non-zero, saying
    /// why, if the file is malformed or its signature does not verify.
    Show {
        /// The map file (`map sign --out`).
        file: PathBuf,
        /// Also require the map to be signed by this admin key, as nodes that pin it do.
        #[arg(long, value_name = "NODEID")]
        admin: Option<NodeId>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Print the fleet bootstrap string of each relay in a map, one a line
    /// (`fleet:<admin>/<relay>@<host:port>`: what a node joins the fleet with, through that
    /// relay). Verifies the map first.
    Bootstrap {
        /// The map file.
        file: PathBuf,
        /// Also require the map to be signed by this admin key, as nodes that pin it do.
        #[arg(long, value_name = "NODEID")]
        admin: Option<NodeId>,
    },
}

/// `map sign`.
#[derive(Args, Debug)]
pub(crate) struct SignArgs {
    /// The network admin's key file (a nullport key file: `nullport-relay init --key FILE`
    /// makes one; keep it off the relays, encrypted).
    #[arg(long)]
    admin_key: PathBuf,
    /// Read the admin key's passphrase from this file (first line). Otherwise from
    /// $NULLPORT_RELAY_PASSPHRASE, or a prompt.
    #[arg(long)]
    passphrase_file: Option<PathBuf>,
    /// The map's version: higher than that of the map in --out (nodes refuse anything not
    /// newer than the map they hold).
    #[arg(long)]
    version: u64,
    /// A relay: `NODEID@HOST:PORT[,HOST:PORT...][#REGION]` (up to 4 addresses, tried in
    /// order; `nullport-relay id --public HOST` prints `NODEID@HOST:PORT`). Repeat for
    /// each relay of the fleet.
    #[arg(
        long = "relay",
        required = true,
        value_name = "NODEID@HOST:PORT[,...][#REGION]"
    )]
    relays: Vec<String>,
    /// Where to write the signed map (JSON; replaced atomically).
    #[arg(long)]
    out: PathBuf,
    /// Write even if --out holds a map with the same or a higher version, another admin,
    /// or one that does not load.
    #[arg(long)]
    force: bool,
}

/// What `run` takes for a fleet.
#[derive(Args, Debug)]
pub(crate) struct FleetArgs {
    /// Serve this signed relay map (`map sign`) to nodes: the relay refuses to start if it
    /// is invalid or does not list this relay, reloads it on SIGHUP and when the file
    /// changes, and pushes each newer version to every node online.
    #[arg(long)]
    map: Option<PathBuf>,
    /// With --map: on SIGTERM or SIGINT, tell the nodes this relay is stopping (they move
    /// to their next relay) and keep serving this many seconds before closing (0: stop at
    /// once). A second signal stops at once.
    #[arg(long, default_value_t = 5, requires = "map")]
    drain_secs: u64,
}

/// Parses one `--relay` value.
fn parse_relay(text: &str) -> anyhow::Result<RelayEntry> {
    let bad = |why: &str| {
        anyhow::anyhow!(
            "--relay {text:?}: {why} (expected NODEID@HOST:PORT[,HOST:PORT...][#REGION])"
        )
    };
    let (rest, region) = match text.split_once('#') {
        Some((rest, region)) => (rest, Some(region.to_owned())),
        None => (text, None),
    };
    let (id, addrs) = rest.split_once('@').ok_or_else(|| bad("no '@'"))?;
    let node_id: NodeId = id.parse().map_err(|e| bad(&format!("{e}")))?;
    let addrs: Vec<String> = addrs.split(',').map(str::to_owned).collect();
    let entry = RelayEntry {
        node_id,
        addrs,
        region,
    };
    // Check this entry alone, to name the --relay at fault.
    let probe = Identity::from_seed([0; 32]);
    RelayMap {
        admin: probe.node_id(),
        version: 0,
        issued: 0,
        relays: vec![entry.clone()],
    }
    .sign(&probe)
    .map_err(|e| bad(&e.to_string()))?;
    Ok(entry)
}

fn sign(args: SignArgs) -> anyhow::Result<()> {
    let relays = args
        .relays
        .iter()
        .map(|r| parse_relay(r))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for (i, r) in relays.iter().enumerate() {
        if relays[..i].iter().any(|o| o.node_id == r.node_id) {
            bail!("relay {} is listed twice", r.node_id);
        }
    }
    let admin = super::load_identity(&super::KeyArgs {
        key: args.admin_key.clone(),
        passphrase_file: args.passphrase_file.clone(),
    })
    .with_context(|| format!("loading the admin key {}", args.admin_key.display()))?;
    if args.out.exists() && !args.force {
        let held = map_file::load(&args.out).with_context(|| {
            format!(
                "{} exists but is not a valid relay map, so its version cannot be checked; \
                 pass --force to replace it",
                args.out.display()
            )
        })?;
        if held.map.admin != admin.node_id() {
            bail!(
                "{} is signed by admin {}, not by this key ({}): nodes that pin {} would refuse \
                 the new map (see docs/fleet.md, rotating the admin key); pass --force to \
                 replace it anyway",
                args.out.display(),
                held.map.admin,
                admin.node_id(),
                held.map.admin
            );
        }
        if args.version <= held.map.version {
            bail!(
                "--version {} is not higher than version {} in {}: nodes refuse a map that is \
                 not newer than the one they hold (no rollback); use --version {} (or --force \
                 to write it anyway)",
                args.version,
                held.map.version,
                args.out.display(),
                held.map.version.saturating_add(1)
            );
        }
    }
    let issued = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let signed = RelayMap {
        admin: admin.node_id(),
        version: args.version,
        issued,
        relays,
    }
    .sign(&admin)?;
    let map = RelayMap::verify_self_signed(&signed)?;
    let count = map.relays.len();
    map_file::save(&args.out, &VerifiedMap { map, signed })?;
    eprintln!(
        "wrote relay map version {} ({count} relays, admin {}) to {}; install it on every \
         relay (`run --map FILE`); `nullport-relay map bootstrap {}` prints what nodes join with",
        args.version,
        admin.node_id(),
        args.out.display(),
        args.out.display()
    );
    Ok(())
}

/// The bootstrap string of `relay` in `map` (through its first address).
fn bootstrap(map: &RelayMap, relay: &RelayEntry) -> Option<FleetBootstrap> {
    Some(FleetBootstrap {
        admin: map.admin,
        relay: relay.node_id,
        addr: relay.addrs.first()?.clone(),
    })
}

/// Loads and verifies a map file, and checks its admin if one is given.
fn load(file: &Path, admin: Option<NodeId>) -> anyhow::Result<RelayMap> {
    let verified = map_file::load(file)?;
    if let Some(admin) = admin {
        RelayMap::verify(&verified.signed, &admin)
            .with_context(|| format!("relay map {}", file.display()))?;
    }
    Ok(verified.map)
}

fn show(file: &Path, admin: Option<NodeId>, json: bool) -> anyhow::Result<()> {
    let map = load(file, admin)?;
    if json {
        let relays: Vec<serde_json::Value> = map
            .relays
            .iter()
            .map(|r| {
                serde_json::json!({
                    "node_id": r.node_id.to_string(),
                    "addrs": r.addrs,
                    "region": r.region,
                    "bootstrap": bootstrap(&map, r).map(|b| b.to_string()),
                })
            })
            .collect();
        let out = serde_json::json!({
            "version": map.version,
            "admin": map.admin.to_string(),
            "issued": map.issued,
            "signature": "valid",
            "relays": relays,
        });
        return print_out(&format!("{}\n", serde_json::to_string_pretty(&out)?));
    }
    use std::fmt::Write as _;
    let issued = nullport_audit::rfc3339(std::time::UNIX_EPOCH + Duration::from_secs(map.issued));
    let mut text = format!(
        "relay map version {} (signature valid)\nadmin   {}\nissued  {issued}\n{} relays:\n",
        map.version,
        map.admin,
        map.relays.len()
    );
    for r in &map.relays {
        let _ = match &r.region {
            Some(region) => writeln!(text, "  {}  region {region}", r.node_id),
            None => writeln!(text, "  {}", r.node_id),
        };
        let _ = writeln!(text, "    addresses  {}", r.addrs.join(", "));
        if let Some(b) = bootstrap(&map, r) {
            let _ = writeln!(text, "    bootstrap  {b}");
        }
    }
    print_out(&text)
}

/// Writes `text` to stdout; a closed pipe (`| head`) ends quietly, as for other commands.
fn print_out(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(141),
        other => Ok(other?),
    }
}

/// Runs a `map` command.
pub(crate) fn run(command: MapCommand) -> anyhow::Result<()> {
    match command {
        MapCommand::Sign(args) => sign(args),
        MapCommand::Show { file, admin, json } => show(&file, admin, json),
        MapCommand::Bootstrap { file, admin } => {
            let map = load(&file, admin)?;
            let text: String = map
                .relays
                .iter()
                .filter_map(|r| bootstrap(&map, r))
                .map(|b| format!("{b}\n"))
                .collect();
            print_out(&text)
        }
    }
}

/// At start, before binding: the map must load and list this relay.
pub(crate) fn check_before_start(args: &FleetArgs, me: &NodeId) -> anyhow::Result<()> {
    let Some(path) = &args.map else {
        return Ok(());
    };
    let map = map_file::load(path)?.map;
    if map.relay(me).is_none() {
        bail!(
            "relay map {} (version {}) does not list this relay ({me}); add it with \
             `nullport-relay map sign ... --relay {me}@HOST:PORT` and a higher --version",
            path.display(),
            map.version
        );
    }
    Ok(())
}

/// Once bound: puts the map in force and returns what follows it.
pub(crate) fn start(
    args: &FleetArgs,
    relay: &RelayHandle,
    me: &NodeId,
    port: u16,
) -> anyhow::Result<Option<MapWatcher>> {
    let Some(path) = &args.map else {
        return Ok(None);
    };
    let (watcher, map) = MapWatcher::start(path, relay)?;
    let listed = map.relay(me).map(|r| r.addrs.clone()).unwrap_or_default();
    if !listed.iter().any(|a| a.ends_with(&format!(":{port}"))) {
        tracing::warn!(
            "the relay map lists this relay at {} but it listens on port {port}",
            listed.join(", ")
        );
    }
    super::say!(
        "relay map {} version {} in force ({} relays); nodes join with: {}",
        path.display(),
        map.version,
        map.relays.len(),
        map.relay(me)
            .and_then(|r| bootstrap(&map, r))
            .map(|b| b.to_string())
            .unwrap_or_default()
    );
    Ok(Some(watcher))
}

/// One look at the map file (from the reload loop).
pub(crate) fn follow(watcher: &mut MapWatcher, relay: &RelayHandle, forced: bool) {
    match watcher.check(relay, forced) {
        Ok(Some(map)) => tracing::info!(
            version = map.version,
            relays = map.relays.len(),
            "relay map {} reloaded: version {} in force, pushed to every node",
            watcher.path().display(),
            map.version
        ),
        Ok(None) => {}
        Err(e) => tracing::error!("relay map not reloaded: {e}"),
    }
}

/// A planned stop with a map: tell the nodes, then keep serving up to `--drain-secs` (less
/// if every node has gone, or a second signal comes).
pub(crate) async fn drain(
    args: &FleetArgs,
    relay: &RelayHandle,
    stop: &mut super::stop::StopSignals,
) {
    if args.map.is_none() || args.drain_secs == 0 {
        return;
    }
    let within = Duration::from_secs(args.drain_secs);
    relay.announce_drain(within);
    super::say!(
        "draining: told {} nodes to move to their next relay; stopping within {}s (signal again to stop now)",
        relay.online().len(),
        args.drain_secs
    );
    let gone = async {
        // Give the announcement a moment to go out before counting who is left.
        tokio::time::sleep(Duration::from_millis(200)).await;
        while !relay.online().is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        _ = tokio::time::sleep(within) => {}
        _ = gone => super::say!("drained: no node is linked any more"),
        () = stop.next() => super::say!("second signal: stopping now"),
    }
}
