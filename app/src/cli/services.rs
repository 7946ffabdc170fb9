//! `expose`, `unexpose`, `allow`, `deny`, `connect`, `pipe`: services offered and used.

use super::listen::{RETRY, listen_through_daemon};
use super::*;
use nullport::control::Local;
use nullport::sandbox::{Level as SandboxLevel, Sandbox};

/// `expose`: what to offer, and whether it may replace a service of the same name.
#[derive(Args, Debug)]
pub(crate) struct ExposeArgs {
    /// Replace a service already exposed under this name (as `trust add --replace` does
    /// for an alias); without it, a different service of the same name is an error.
    #[arg(long, global = true)]
    replace: bool,
    #[command(subcommand)]
    kind: ExposeCommand,
}

#[derive(Subcommand, Debug)]
pub(crate) enum ExposeCommand {
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
        /// Speak HTTP/1.1 on each channel and relay it request by request, naming the
        /// caller in an `X-Nullport-Peer` header (its NodeId) and `X-Nullport-Peer-Alias`
        /// (its alias here); the same headers sent by the caller are removed. For HTTP
        /// backends that only nullport can reach (bound to 127.0.0.1).
        #[arg(long)]
        http_peer_header: bool,
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
        #[command(flatten)]
        sandbox: SandboxArgs,
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
        #[command(flatten)]
        sandbox: SandboxArgs,
        /// The command and its arguments (after `--`).
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

/// `--sandbox` and its options (exec and MCP commands).
#[derive(Args, Debug)]
pub(crate) struct SandboxArgs {
    /// Run each process in a sandbox: own mount, PID, IPC, UTS and network namespaces
    /// (bubblewrap), a read-only view of /usr and a few files of /etc, private /tmp and home,
    /// only the paths listed with --ro/--rw, seccomp (no network sockets without --net),
    /// resource limits, Landlock, and `nobody` instead of root. Checked by starting a
    /// sandboxed `true` first; a sandbox this machine cannot make is an error.
    #[arg(long)]
    sandbox: bool,
    /// With --sandbox: let the process read (and execute) this path; repeatable. The
    /// program's own directory must be listed unless it is under /usr.
    #[arg(long, value_name = "PATH", requires = "sandbox")]
    ro: Vec<PathBuf>,
    /// With --sandbox: let the process read and write this path; repeatable.
    #[arg(long, value_name = "PATH", requires = "sandbox")]
    rw: Vec<PathBuf>,
    /// With --sandbox: share the host's network (default: none at all).
    #[arg(long, requires = "sandbox")]
    net: bool,
    /// With --sandbox: accept a weaker sandbox by name: `no-landlock` runs without Landlock
    /// on kernels that lack it (default `full`: all of it, or no start).
    #[arg(long, value_name = "LEVEL", requires = "sandbox", value_parser = ["full", "no-landlock"])]
    sandbox_level: Option<String>,
    /// With --sandbox: largest heap of one process, MiB.
    #[arg(long, value_name = "MIB", requires = "sandbox")]
    memory_mib: Option<u64>,
    /// With --sandbox: most processes and threads.
    #[arg(long, value_name = "N", requires = "sandbox")]
    processes: Option<u64>,
    /// With --sandbox: most CPU seconds one process may use.
    #[arg(long, value_name = "SECONDS", requires = "sandbox")]
    cpu_secs: Option<u64>,
}

impl SandboxArgs {
    /// The sandbox asked for, checked against this machine and probed (a sandboxed `true`).
    async fn build(self, command: &[String]) -> anyhow::Result<Option<Sandbox>> {
        if !self.sandbox {
            return Ok(None);
        }
        let defaults = Sandbox::default();
        let sandbox = Sandbox {
            ro: self.ro,
            rw: self.rw,
            net: self.net,
            memory_mib: self.memory_mib.unwrap_or(defaults.memory_mib),
            processes: self.processes.unwrap_or(defaults.processes),
            cpu_secs: self.cpu_secs.unwrap_or(defaults.cpu_secs),
            level: self
                .sandbox_level
                .as_deref()
                .and_then(SandboxLevel::parse)
                .unwrap_or_default(),
        };
        let path = std::env::var("PATH").ok();
        let program = command.first().map(String::as_str).unwrap_or_default();
        sandbox.check(program, path.as_deref())?;
        sandbox.probe(path.as_deref()).await?;
        Ok(Some(sandbox))
    }
}

pub(crate) async fn expose(home: &Home, args: ExposeArgs) -> anyhow::Result<()> {
    let (name, service) = match args.kind {
        ExposeCommand::Tcp {
            name,
            target,
            proxy_protocol,
            http_peer_header,
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
            service.http_peer_header = http_peer_header;
            (name, service)
        }
        ExposeCommand::Exec {
            name,
            env,
            sandbox,
            command,
        } => {
            let sandbox = sandbox.build(&command).await?;
            let mut service = Service::new(ServiceSpec::Exec(command));
            service.env = env;
            service.sandbox = sandbox;
            (name, service)
        }
        ExposeCommand::Mcp {
            name,
            url: Some(url),
            env,
            sandbox,
            ..
        } => {
            if !env.is_empty() {
                bail!("--env is for MCP servers started as commands, not for --url");
            }
            if sandbox.sandbox {
                bail!(
                    "--sandbox is for MCP servers started as commands; a --url server runs on its own"
                );
            }
            nullport::mcp::http::HttpTarget::parse(&url).map_err(|e| anyhow!("{url}: {e}"))?;
            (name, Service::new(ServiceSpec::McpUrl(url)))
        }
        ExposeCommand::Mcp {
            name,
            url: None,
            env,
            sandbox,
            command,
        } => {
            let sandbox = sandbox.build(&command).await?;
            let mut service = Service::new(ServiceSpec::Mcp(command));
            service.env = env;
            service.sandbox = sandbox;
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
    match file.services.get(&name) {
        Some(old) if *old == service => {
            println!("{name} is already exposed: {service}");
            return Ok(());
        }
        Some(old) if !args.replace => bail!(
            "a service named {name:?} is already exposed ({old}); pass --replace to make it {service}"
        ),
        _ => {}
    }
    file.services.insert(name.clone(), service.clone());
    let path_var = std::env::var("PATH").ok();
    nullport::sandbox::check_all(file.sandboxes(), home.dir(), path_var.as_deref())
        .map_err(|(service, e)| anyhow!("service {service:?}: {e}"))?;
    file.save(&home.config())?;
    println!(
        "exposed {name}: {service} (default deny: `nullport allow <peer> {name}`){}",
        reload(home).await?
    );
    Ok(())
}

pub(crate) async fn open_pipe(
    home: &Home,
    peer: &str,
    service: &str,
    mcp: Mcp,
    token: Option<String>,
) -> anyhow::Result<(BufReader<UnixStream>, Option<u64>)> {
    let (response, stream) = control(
        home,
        &ControlRequest::Pipe {
            peer: peer.to_owned(),
            service: service.to_owned(),
            mcp: mcp != Mcp::No,
            pin: mcp == Mcp::Pinned,
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
    Ok((stream, response.pipe))
}

/// Whether a pipe is an MCP session, and whether this side pins its tool manifests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mcp {
    /// A plain byte pipe.
    No,
    /// An MCP session (signed calls, checked receipts).
    Session,
    /// An MCP session whose tool manifests this side pins too.
    Pinned,
}

pub(crate) async fn pipe(
    home: &Home,
    target: &str,
    mcp: Mcp,
    token: Option<String>,
) -> anyhow::Result<()> {
    let (peer, service) = split_target(target)?;
    let token = read_token(token)?;
    // Standard input and output go to the daemon, which splices them to the channel itself;
    // this process only waits for the outcome. They are copied through this process instead
    // when they cannot be handed over (a pipe or terminal this user cannot reopen) or the
    // daemon is older than this command (it does not know `attach`).
    let handed = (|| -> std::io::Result<_> {
        use std::os::fd::AsFd;
        let input = nullport::fdpass::reopen_for_daemon(std::io::stdin().as_fd(), false)?;
        let output = nullport::fdpass::reopen_for_daemon(std::io::stdout().as_fd(), true)?;
        Ok((input, output))
    })();
    match handed {
        Ok((input, output)) => {
            use std::os::fd::AsFd;
            let request = ControlRequest::Attach {
                peer: peer.to_owned(),
                service: service.to_owned(),
                local: Local::Stdio,
                mcp: mcp != Mcp::No,
                pin: mcp == Mcp::Pinned,
                token: token.clone(),
            };
            let (response, mut stream) =
                control_with_fds(home, &request, &[input.as_fd(), output.as_fd()]).await?;
            // The daemon holds its own copies now.
            drop((input, output));
            if !attach_unknown(&response) {
                if !response.ok {
                    bail!(
                        "{}",
                        response.error.unwrap_or_else(|| "channel refused".into())
                    );
                }
                return match nullport::control::read_response(&mut stream).await {
                    Ok(ended) if ended.ok => Ok(()),
                    Ok(ended) => bail!(
                        "{target}: {}",
                        ended
                            .note
                            .or(ended.error)
                            .unwrap_or_else(|| "the pipe failed".into())
                    ),
                    Err(e) => bail!("{target}: the daemon went away before the pipe ended ({e})"),
                };
            }
        }
        Err(e) => tracing::debug!("standard streams not handed to the daemon ({e}): copying"),
    }
    copy_pipe(home, target, (peer, service), mcp, token).await
}

/// Whether the daemon refused an `attach` request for not knowing it (it is older than this
/// command): the caller copies the bytes through itself instead, as before `attach`.
fn attach_unknown(response: &ControlResponse) -> bool {
    !response.ok
        && response
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("bad request: unknown variant `attach`"))
}

/// `pipe` through this process: standard input and output copied to and from the control
/// connection, which the daemon splices to the channel.
async fn copy_pipe(
    home: &Home,
    target: &str,
    (peer, service): (&str, &str),
    mcp: Mcp,
    token: Option<String>,
) -> anyhow::Result<()> {
    let (stream, pipe_id) = open_pipe(home, peer, service, mcp, token).await?;
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
            r = &mut download => { r?; break; }
        }
    }
    // The daemon knows whether the channel ended cleanly or why it did not.
    if let Some(id) = pipe_id
        && let Ok((r, _)) = control(home, &ControlRequest::PipeEnded { id }).await
        && let Some(reason) = r.note
    {
        bail!("{target}: {reason}");
    }
    Ok(())
}

/// Hands one accepted local connection to the daemon, which dials `peer`/`service` and
/// splices the two itself (this process's copy closes on return). A daemon older than this
/// command gets the bytes copied through this process instead.
async fn hand_over<S>(
    home: &Home,
    peer: &str,
    service: &str,
    token: Option<String>,
    mut local: S,
) -> anyhow::Result<()>
where
    S: std::os::fd::AsFd + tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let request = ControlRequest::Attach {
        peer: peer.to_owned(),
        service: service.to_owned(),
        local: Local::Socket,
        mcp: false,
        pin: false,
        token: token.clone(),
    };
    let (response, _) = control_with_fds(home, &request, &[local.as_fd()]).await?;
    if attach_unknown(&response) {
        let (mut stream, _) = open_pipe(home, peer, service, Mcp::No, token).await?;
        let _ = tokio::io::copy_bidirectional(&mut local, &mut stream).await;
        return Ok(());
    }
    if !response.ok {
        bail!(
            "{}",
            response.error.unwrap_or_else(|| "channel refused".into())
        );
    }
    Ok(())
}

pub(crate) async fn connect(
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
    // The daemon accepts on the socket itself; without it (a daemon that predates that),
    // each local connection is handed to the daemon by a task of this set.
    while let Some(e) = listen_through_daemon(home, (peer, service), &token, &listener).await {
        // The daemon is unreachable: connections meanwhile are told so and closed; it is
        // asked again every second.
        if let Ok(accepted) = tokio::time::timeout(RETRY, listener.accept()).await {
            let (tcp, from) = accepted?;
            drop(tcp);
            eprintln!("{from}: {e:#}");
        }
    }
    let mut pipes = tokio::task::JoinSet::new();
    loop {
        let (tcp, from) = tokio::select! {
            accepted = listener.accept() => accepted?,
            Some(_) = pipes.join_next() => continue,
        };
        let home = home.clone();
        let (peer, service, token) = (peer.to_owned(), service.to_owned(), token.clone());
        pipes.spawn(async move {
            let _ = tcp.set_nodelay(true);
            if let Err(e) = hand_over(&home, &peer, &service, token, tcp).await {
                eprintln!("{from}: {e:#}");
            }
        });
    }
}

/// `connect --listen unix:PATH`: a Unix socket created under a 0077 umask (mode 0600), so
/// only this user can use the channel behind it.
pub(crate) async fn connect_unix(
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
        while let Some(e) = listen_through_daemon(home, (peer, service), &token, &listener).await {
            if let Ok(accepted) = tokio::time::timeout(RETRY, listener.accept()).await {
                drop(accepted?);
                eprintln!("unix:{}: {e:#}", path.display());
            }
        }
        let mut pipes = tokio::task::JoinSet::new();
        loop {
            let (local, _) = tokio::select! {
                accepted = listener.accept() => accepted?,
                Some(_) = pipes.join_next() => continue,
            };
            let home = home.clone();
            let (peer, service, token) = (peer.to_owned(), service.to_owned(), token.clone());
            pipes.spawn(async move {
                if let Err(e) = hand_over(&home, &peer, &service, token, local).await {
                    eprintln!("unix:{e:#}");
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

pub(crate) async fn unexpose(home: &Home, name: &str) -> anyhow::Result<()> {
    let mut file = load_config(home)?;
    if file.services.remove(name).is_none() {
        bail!("no service named {name:?} is exposed");
    }
    file.save(&home.config())?;
    println!("{name} is no longer exposed{}", reload(home).await?);
    Ok(())
}

pub(crate) async fn allow(home: &Home, peer: &str, service: &str) -> anyhow::Result<()> {
    let (id, added) = nullport::edit::allow(home, peer, service)?;
    let exposed = load_config(home)?.services.contains_key(service);
    println!(
        "{peer} ({}) {} use {service}{}{}",
        id.fmt_short(),
        if added { "may now" } else { "could already" },
        if exposed {
            ""
        } else {
            " (note: no service of that name is exposed yet)"
        },
        reload(home).await?
    );
    Ok(())
}

pub(crate) async fn deny(home: &Home, peer: &str, service: &str) -> anyhow::Result<()> {
    let removed = nullport::edit::deny(home, peer, service)?;
    println!(
        "{peer} may no longer use {service} (removed: {}); its open channels to {service} are closed{}",
        removed.join(", "),
        reload(home).await?
    );
    Ok(())
}
