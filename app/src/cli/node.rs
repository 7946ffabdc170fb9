//! `init`, `id`, `join`, `up`, `status`, `reload`, `rotate`: this node and its daemon.

use super::*;

#[derive(Args, Debug)]
pub(crate) struct InitArgs {
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
pub(crate) struct UpArgs {
    /// The relay, `<relay NodeId>@host:port` (saved to the config for next time).
    #[arg(long)]
    relay: Option<String>,
    /// Read the key passphrase from this file (otherwise $NULLPORT_PASSPHRASE, the systemd
    /// credential nullport-passphrase, or a prompt if there is a terminal).
    #[arg(long)]
    passphrase_file: Option<PathBuf>,
    /// Serve Prometheus metrics on this loopback address (e.g. 127.0.0.1:9478): the relay
    /// link, channels, bytes, refusals, MCP decisions.
    #[arg(long)]
    metrics: Option<SocketAddr>,
}

pub(crate) async fn join(
    home: &Home,
    invite: &str,
    relay: &str,
    passphrase_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    let bytes = nullport_keyring::invite::Invite::from_text(invite)
        .map_err(|e| anyhow!("{e}: an invite looks like npi1..."))?;
    let relay_addr: RelaySpec = relay.parse()?;
    let identity = Arc::new(load_identity(home, passphrase_file)?);
    let mut config = nullport_node::NodeConfig::for_relay(identity.clone(), &relay_addr)?;
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

pub(crate) async fn rotate(home: &Home, passphrase_file: Option<PathBuf>) -> anyhow::Result<()> {
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

pub(crate) fn init(home: &Home, args: InitArgs) -> anyhow::Result<()> {
    home.create()
        .with_context(|| format!("creating {}", home.dir().display()))?;
    let identity = Identity::generate().map_err(|e| anyhow!("randomness: {e}"))?;
    let protection = if args.insecure_plaintext_key {
        Protection::InsecurePlaintext
    } else {
        let pass = PassphraseSource::choose(
            args.passphrase_file,
            "NULLPORT_PASSPHRASE",
            PASSPHRASE_CREDENTIAL,
        )
        .read_new("new identity key", |p: &str| rpassword::prompt_password(p))?;
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

pub(crate) async fn status(home: &Home, json: bool) -> anyhow::Result<()> {
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
    if let Some(fleet) = &status.fleet {
        let map = fleet
            .map_version
            .map_or_else(|| "none yet".to_owned(), |v| format!("version {v}"));
        println!(
            "home     {} (relay map {map})",
            fleet.home.as_deref().unwrap_or("none (no relay link up)")
        );
        for (relay, up) in &fleet.links {
            println!("  link   {relay} {}", if *up { "up" } else { "connecting" });
        }
    }
    if let Some(note) = &status.restart_needed {
        println!("config   {note}");
    }
    if let Some(e) = &status.config_error {
        println!("config   NOT IN FORCE: {e}");
        println!(
            "         (the daemon runs with the configuration it last loaded; fix the file, then `nullport reload`)"
        );
    }
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
        if let Some(sandbox) = &s.sandbox {
            println!("  {:<16} {sandbox}", "");
        }
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

pub(crate) async fn up(home: &Home, args: UpArgs) -> anyhow::Result<()> {
    raise_file_limit();
    // SIGHUP from the first moment: a reload asked while starting waits for the daemon
    // instead of killing it.
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| anyhow!("cannot handle SIGHUP: {e}"))?;
    let signal = shutdown_signal();
    tokio::pin!(signal);
    let mut file = load_config(home)?;
    let relay_text = match (&args.relay, &file.relay) {
        (Some(r), _) => r.clone(),
        (None, Some(r)) => r.clone(),
        (None, None) => {
            bail!(
                "no relay: pass --relay <relay NodeId>@host:port, or a fleet's \
                 fleet:<admin NodeId>/<relay NodeId>@host:port (it is saved for next time)"
            )
        }
    };
    let relay: RelaySpec = relay_text.parse()?;
    // A passphrase in the environment would stay readable in /proc/PID/environ for the
    // daemon's lifetime: hand it over through a pipe and start again without it.
    if args.passphrase_file.is_none() && std::env::var_os("NULLPORT_PASSPHRASE").is_some() {
        return Err(reexec_without_passphrase_in_env());
    }
    // Everything that can fail is checked before the daemon starts.
    let metrics = match args.metrics {
        Some(addr) => Some(Daemon::bind_metrics(addr).await?),
        None => None,
    };
    let identity = Arc::new(load_identity(home, args.passphrase_file)?);
    if args.relay.is_some() && file.relay.as_deref() != Some(relay_text.as_str()) {
        file.relay = Some(relay_text);
        file.save(&home.config())?;
    }
    let mut daemon = Daemon::start(
        home.clone(),
        identity.clone(),
        relay.clone(),
        file.link.limits(relay.admin().is_some()),
    )
    .await?;
    if let Some(listener) = metrics {
        let bound = daemon.serve_metrics(listener);
        say(&format!("metrics on http://{bound}/metrics"));
    }
    say(&format!(
        "nullport {} up; relay {relay}; control socket {}",
        identity.node_id(),
        home.socket().display()
    ));
    say("no inbound port is open: this node only dials out to the relay");
    // The relay link's changes are logged by the node (one line each, with a timestamp).
    loop {
        tokio::select! {
            _ = &mut signal => break,
            _ = daemon.stop_requested() => break,
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: reloading config, policy and trust store");
                // On failure the daemon logs why and keeps the configuration in force.
                let _ = daemon.reload();
            }
        }
    }
    say("shutting down: closing channels");
    daemon.shutdown().await;
    Ok(())
}

pub(crate) async fn shutdown_signal() {
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

pub(crate) fn id(home: &Home, json: bool) -> anyhow::Result<()> {
    let id = node_id(home)?;
    if json {
        println!("{}", serde_json::json!({ "node_id": id.to_string() }));
    } else {
        println!("{id}");
    }
    Ok(())
}

pub(crate) async fn reload_now(home: &Home) -> anyhow::Result<()> {
    let (response, _) = control(home, &ControlRequest::Reload).await?;
    if !response.ok {
        bail!(
            "the daemon kept its previous configuration: {}",
            response.error.unwrap_or_default()
        );
    }
    println!("reloaded");
    Ok(())
}

/// `nullport down`: asks the daemon to stop and waits until it has (its control connection
/// ends when the daemon's shutdown does).
pub(crate) async fn down(home: &Home) -> anyhow::Result<()> {
    let (response, mut stream) = control(home, &ControlRequest::Stop).await?;
    if !response.ok {
        bail!(
            "the daemon refused to stop: {}",
            response.error.unwrap_or_default()
        );
    }
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(
        std::time::Duration::from_secs(15),
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut rest),
    )
    .await;
    if ended.is_err() {
        bail!(
            "the daemon for {} was asked to stop but is still running after 15 s",
            home.dir().display()
        );
    }
    println!("stopped the nullport daemon for {}", home.dir().display());
    Ok(())
}

/// Runs this same `up` again (same PID, same arguments) with `NULLPORT_PASSPHRASE` removed
/// from the environment and the passphrase readable once from a pipe instead
/// (`--passphrase-file /proc/self/fd/N`: a pipe is private to this user). Returns only if
/// that fails.
fn reexec_without_passphrase_in_env() -> anyhow::Error {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let attempt = || -> anyhow::Result<std::convert::Infallible> {
        let pass = std::env::var("NULLPORT_PASSPHRASE")
            .map_err(|_| anyhow!("$NULLPORT_PASSPHRASE is not valid UTF-8"))?;
        let (reader, mut writer) = std::io::pipe()?;
        writer.write_all(pass.as_bytes())?;
        writer.write_all(b"\n")?;
        drop(writer);
        // The read end survives exec; everything else stays close-on-exec.
        rustix::io::fcntl_setfd(&reader, rustix::io::FdFlags::empty())?;
        let exe = std::env::current_exe()?;
        let mut args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
        args.push("--passphrase-file".into());
        args.push(format!("/proc/self/fd/{}", reader.as_raw_fd()).into());
        let error = std::process::Command::new(exe)
            .args(args)
            .env_remove("NULLPORT_PASSPHRASE")
            .exec();
        Err(anyhow!(
            "cannot restart without the passphrase in the environment: {error}"
        ))
    };
    match attempt() {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

/// Raises the soft limit on open files to the hard one (a daemon serves many channels, and a
/// local console must not be able to starve it); quietly leaves it if it cannot.
fn raise_file_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
}
