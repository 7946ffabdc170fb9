//! `mcp`, `approve`, `deny ID`, `approvals`: MCP bridge and rules, human approvals.

use super::*;

/// `println!` of text that holds names a caller chose (tools, services): made [`printable`].
macro_rules! out {
    ($($arg:tt)*) => {
        println!("{}", printable(&format!($($arg)*)))
    };
}

#[derive(Subcommand, Debug)]
pub(crate) enum McpCommand {
    /// A stdio MCP server for any MCP client: carries JSON-RPC to <peer>/<service>.
    /// Client config: command "nullport", args ["mcp", "bridge", "files-server/files"].
    Bridge {
        /// `<peer>/<service>`.
        target: String,
        /// Present a capability token (its text, or @FILE).
        #[arg(long)]
        token: Option<String>,
        /// Pin the tool manifests on this side too: the first tools/list pins each tool; a
        /// tool the tool host later changes or adds is hidden and its calls refused here
        /// until accepted (`nullport mcp pins`, `nullport mcp pin PEER/SERVICE TOOL --accept`).
        #[arg(long)]
        pin: bool,
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
        /// A rule on a tool's arguments (repeatable): TOOL:/POINTER=GLOB (a path, e.g.
        /// 'read_text_file:/path=/srv/docs/**'), TOOL:/POINTER in A,B, TOOL:/POINTER ~ REGEX,
        /// TOOL:/POINTER MIN..MAX, TOOL:/POINTER <= LEN, TOOL:/POINTER absent. `*` in a
        /// pointer stands for every array element ('edit_file:/edits/*/path=...').
        #[arg(long = "arg", value_name = "RULE")]
        args: Vec<String>,
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
    /// Pinned tool manifests: what each tool said when first listed, and the tools held
    /// because the server now presents them differently (or they are new).
    Pins {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Accept a held tool as the server presents it now (it is pinned again and callable).
    Pin {
        /// The service (or `peer/service` for pins kept on the caller's side).
        scope: String,
        /// The tool.
        tool: String,
        /// Accept the presented version (required: read `nullport mcp pins` first).
        #[arg(long, required = true)]
        accept: bool,
    },
    /// Make every call of a tool wait for a human (`nullport approve <id>`).
    RequireApproval {
        /// The MCP service.
        service: String,
        /// Tool name or glob.
        tool: String,
    },
}

/// `approve`: the call, and how far the approval reaches.
#[derive(Args, Debug)]
pub(crate) struct ApproveArgs {
    /// The approval id (from `nullport approvals`).
    id: String,
    /// Why (recorded in the audit log).
    #[arg(long)]
    reason: Option<String>,
    /// Also approve this tool's later calls in the same MCP session of this caller.
    #[arg(long, conflicts_with_all = ["for_time", "args_match"])]
    for_session: bool,
    /// Also approve this tool's calls by this caller for this long (e.g. 10m, 1h; at most 1d).
    #[arg(long = "for", value_name = "DURATION")]
    for_time: Option<String>,
    /// Also approve calls whose argument NAME is a string matching GLOB (with --for, else
    /// for 1h), e.g. --args-match 'path=/srv/docs/*'.
    #[arg(long, value_name = "NAME=GLOB")]
    args_match: Option<String>,
}

/// `approvals show ID`, `approvals grants`, `approvals revoke ID`.
#[derive(Subcommand, Debug)]
pub(crate) enum ApprovalsCommand {
    /// Print every argument of a waiting call (the list shortens long or many arguments).
    Show {
        /// The approval id.
        id: String,
    },
    /// List the standing grants (what they cover, until when, who made them).
    Grants {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// End a standing grant now (later calls wait for a person again).
    Revoke {
        /// The grant id.
        id: String,
    },
}

fn grant_scope(args: &ApproveArgs) -> anyhow::Result<Option<nullport::mcp::approvals::GrantScope>> {
    use nullport::mcp::approvals::GrantScope;
    let minutes = |ttl: &str| -> anyhow::Result<u32> {
        let secs = parse_ttl(ttl)?;
        if secs > 86_400 {
            bail!("--for {ttl}: at most 1d");
        }
        Ok(u32::try_from(secs.div_ceil(60)).unwrap_or(u32::MAX).max(1))
    };
    Ok(match (&args.args_match, &args.for_time, args.for_session) {
        (_, _, true) => Some(GrantScope::Session),
        (Some(m), ttl, false) => {
            let (name, pattern) = m
                .split_once('=')
                .filter(|(n, p)| !n.is_empty() && !p.is_empty())
                .ok_or_else(|| {
                    anyhow!("--args-match {m:?}: use NAME=GLOB, e.g. 'path=/srv/docs/*'")
                })?;
            Some(GrantScope::ArgsMatch {
                name: name.to_owned(),
                pattern: pattern.to_owned(),
                minutes: minutes(ttl.as_deref().unwrap_or("1h"))?,
            })
        }
        (None, Some(ttl), false) => Some(GrantScope::Minutes(minutes(ttl)?)),
        (None, None, false) => None,
    })
}

pub(crate) async fn approve(home: &Home, args: ApproveArgs) -> anyhow::Result<()> {
    let grant = grant_scope(&args)?;
    answer(home, &args.id, true, args.reason, grant).await
}

pub(crate) async fn deny_call(home: &Home, id: &str, reason: Option<String>) -> anyhow::Result<()> {
    answer(home, id, false, reason, None).await
}

async fn answer(
    home: &Home,
    id: &str,
    approve: bool,
    reason: Option<String>,
    grant: Option<nullport::mcp::approvals::GrantScope>,
) -> anyhow::Result<()> {
    let granted = grant.is_some();
    let (response, _) = control(
        home,
        &ControlRequest::Answer {
            id: id.to_owned(),
            approve,
            reason,
            grant,
        },
    )
    .await?;
    if !response.ok {
        bail!("{}", response.error.unwrap_or_default());
    }
    let what = response.approvals.and_then(|v| v.into_iter().next());
    match what {
        Some(a) => out!(
            "{} {} call of {} by {}{}",
            if approve { "approved" } else { "denied" },
            a.service,
            a.tool,
            a.caller_alias.unwrap_or(a.caller),
            if granted {
                " (and a standing grant: `nullport approvals grants`)"
            } else {
                ""
            }
        ),
        None => println!("{}", if approve { "approved" } else { "denied" }),
    }
    Ok(())
}

fn print_pending(a: &nullport::mcp::approvals::PendingApproval) {
    let who = match &a.caller_alias {
        Some(alias) => format!("{alias} ({})", a.caller),
        None => a.caller.clone(),
    };
    println!(
        "{}  {}/{}  from {who}  waiting {} s, denied in {} s unless answered",
        printable(&a.id),
        printable(&a.service),
        printable(&a.tool),
        a.waiting_secs,
        a.expires_in_secs
    );
    println!("  arguments (sha256 {}):", a.args_digest);
    for line in a.args.lines() {
        println!("    {}", printable(line));
    }
    if !a.shown_in_full {
        println!(
            "  (shortened: `nullport approvals show {}` prints every argument)",
            printable(&a.id)
        );
    }
    println!(
        "  nullport approve {0}  |  nullport deny {0}",
        printable(&a.id)
    );
}

pub(crate) async fn approvals(
    home: &Home,
    json: bool,
    watch: bool,
    command: Option<ApprovalsCommand>,
) -> anyhow::Result<()> {
    match command {
        Some(ApprovalsCommand::Show { id }) => {
            let (response, _) = control(home, &ControlRequest::Approvals).await?;
            let a = response
                .approvals
                .unwrap_or_default()
                .into_iter()
                .find(|a| a.id == id)
                .ok_or_else(|| anyhow!("no pending approval with id {id:?} (it may have been answered or timed out)"))?;
            out!(
                "{}/{} from {} (arguments sha256 {}):",
                a.service,
                a.tool,
                a.caller,
                a.args_digest
            );
            for line in a.args_full.lines() {
                out!("  {line}");
            }
            return Ok(());
        }
        Some(ApprovalsCommand::Grants { json }) => {
            let (response, _) = control(home, &ControlRequest::Approvals).await?;
            let grants = response.grants.unwrap_or_default();
            if json {
                println!("{}", serde_json::to_string_pretty(&grants)?);
            } else if grants.is_empty() {
                println!("no standing grants");
            }
            if !json {
                for g in grants {
                    out!(
                        "{}  {}/{}  for {}  covers {}  (made by {}{})",
                        g.id,
                        g.service,
                        g.tool,
                        g.caller,
                        g.describe(),
                        g.made_by,
                        g.reason.map(|r| format!(": {r}")).unwrap_or_default()
                    );
                }
            }
            return Ok(());
        }
        Some(ApprovalsCommand::Revoke { id }) => {
            let (response, _) = control(home, &ControlRequest::RevokeGrant { id }).await?;
            if !response.ok {
                bail!("{}", response.error.unwrap_or_default());
            }
            if let Some(g) = response.grants.and_then(|g| g.into_iter().next()) {
                out!(
                    "revoked grant {}: {}/{} for {} (later calls wait for a person again)",
                    g.id,
                    g.service,
                    g.tool,
                    g.caller
                );
            }
            return Ok(());
        }
        None => {}
    }
    if watch {
        let (response, stream) = control(home, &ControlRequest::WatchApprovals).await?;
        if !response.ok {
            bail!("{}", response.error.unwrap_or_default());
        }
        return watch_approvals(stream, json).await;
    }
    let (response, _) = control(home, &ControlRequest::Approvals).await?;
    let list = response.approvals.unwrap_or_default();
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else if list.is_empty() {
        println!("no tool calls are waiting for approval");
    } else {
        for a in &list {
            print_pending(a);
        }
    }
    Ok(())
}

/// Prints approval events as the daemon streams them, until it stops.
async fn watch_approvals(
    mut stream: tokio::io::BufReader<tokio::net::UnixStream>,
    json: bool,
) -> anyhow::Result<()> {
    use nullport::mcp::approvals::ApprovalEvent;
    use tokio::io::AsyncBufReadExt;
    if !json {
        eprintln!("watching approvals (Ctrl-C to stop)");
    }
    let mut line = String::new();
    loop {
        line.clear();
        if stream.read_line(&mut line).await? == 0 {
            bail!("the daemon stopped");
        }
        if json {
            print!("{line}");
            continue;
        }
        match serde_json::from_str::<ApprovalEvent>(&line) {
            Ok(ApprovalEvent::Pending { approval }) => print_pending(&approval),
            Ok(ApprovalEvent::Decided {
                id,
                service,
                tool,
                resolution,
                ..
            }) => out!(
                "{id}  {service}/{tool}  {} by {}{}",
                resolution.outcome,
                resolution.by,
                resolution
                    .reason
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ),
            Ok(ApprovalEvent::GrantMade { grant }) => out!(
                "grant {} made: {}/{} for {} covers {}",
                grant.id,
                grant.service,
                grant.tool,
                grant.caller,
                grant.describe()
            ),
            Ok(ApprovalEvent::GrantEnded { grant, how }) => {
                out!("grant {} {how}", grant.id)
            }
            Err(_) => {}
        }
    }
}

pub(crate) async fn mcp(home: &Home, cmd: McpCommand) -> anyhow::Result<()> {
    match cmd {
        McpCommand::Bridge { target, token, pin } => {
            let mcp = if pin {
                super::services::Mcp::Pinned
            } else {
                super::services::Mcp::Session
            };
            super::services::pipe(home, &target, mcp, token).await
        }
        McpCommand::Allow {
            peer,
            service,
            tools,
            resources,
            prompts,
            methods,
            calls_per_minute,
            max_concurrent,
            args,
        } => {
            TrustStore::load(&home.trust())?.resolve(&peer)?;
            let args = args
                .iter()
                .map(|a| nullport_keyring::args::ArgRule::parse(a))
                .collect::<Result<Vec<_>, _>>()?;
            let mut policy = Policy::load(&home.policy())?;
            let rules = nullport_keyring::McpRules {
                tools,
                resources,
                prompts,
                methods,
                calls_per_minute,
                max_concurrent,
                args,
            };
            warn_unlisted_tools(home, &service, &rules.tools).await;
            policy.set_mcp_rules(&peer, &service, rules.clone());
            policy.save()?;
            println!(
                "{peer} on {service}: tools {:?}, resources {:?}, prompts {:?}{}",
                rules.tools,
                rules.resources,
                rules.prompts,
                reload(home).await?
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
                reload(home).await?
            );
            Ok(())
        }
        McpCommand::Show { service, json } => {
            let policy = Policy::load(&home.policy())?;
            let services: Vec<_> = policy
                .mcp_services()
                .into_iter()
                .filter(|m| service.as_ref().is_none_or(|s| *s == m.service))
                .collect();
            if json {
                let out: Vec<serde_json::Value> = services
                    .iter()
                    .map(|m| {
                        let (name, callers, approve) = (&m.service, &m.callers, &m.approve);
                        serde_json::json!({
                            "service": name,
                            "approve": approve,
                            "callers": callers.iter().map(|(peer, r)| serde_json::json!({
                                "peer": peer, "tools": r.tools, "resources": r.resources,
                                "prompts": r.prompts, "methods": r.methods,
                                "calls_per_minute": r.calls_per_minute,
                                "max_concurrent": r.max_concurrent,
                                "args": r.args.iter().map(|a| a.describe()).collect::<Vec<_>>(),
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
            for m in services {
                let (name, callers, approve) = (m.service, m.callers, m.approve);
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
                    for rule in &r.args {
                        println!("    argument   {}", rule.describe());
                    }
                }
            }
            Ok(())
        }
        McpCommand::Pins { json } => super::pins::show(home, json),
        McpCommand::Pin {
            scope,
            tool,
            accept: _,
        } => super::pins::accept(home, scope, tool).await,
        McpCommand::RequireApproval { service, tool } => {
            let mut policy = Policy::load(&home.policy())?;
            policy.require_approval(&service, &tool);
            policy.save()?;
            println!(
                "calls of {service}/{tool} now wait for `nullport approve <id>`{}",
                reload(home).await?
            );
            Ok(())
        }
    }
}

/// Warns (on stderr) about tool names or globs that match no tool the service's server lists,
/// when the service is a stdio server this machine can start; the rule is saved anyway (the
/// server may add the tool later).
async fn warn_unlisted_tools(home: &Home, service: &str, tools: &[String]) {
    if tools.is_empty() {
        return;
    }
    let Ok(file) = load_config(home) else { return };
    let Some(svc) = file.services.get(service) else {
        eprintln!(
            "warning: no service named {service:?} is exposed here yet (`nullport expose mcp {service} -- ...`)"
        );
        return;
    };
    let ServiceSpec::Mcp(command) = &svc.spec else {
        if matches!(svc.spec, ServiceSpec::McpUrl(_)) {
            eprintln!("note: {service} is an HTTP MCP server: tool names not checked");
        }
        return;
    };
    let env = svc.child_env(service, "", None, |name| std::env::var(name).ok());
    match nullport::mcp::probe::list_tools(command, &env).await {
        Ok(listed) => {
            for missing in nullport::mcp::probe::unmatched(tools, &listed) {
                eprintln!(
                    "warning: {service} lists no tool matching {missing:?} (it lists: {}); saved anyway",
                    listed.join(", ")
                );
            }
        }
        Err(e) => eprintln!("note: tool names not checked: {e}"),
    }
}
