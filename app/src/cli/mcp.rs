//! `mcp`, `approve`, `deny ID`, `approvals`: MCP bridge and rules, human approvals.

use super::*;

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

pub(crate) async fn answer(home: &Home, id: &str, approve: bool) -> anyhow::Result<()> {
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

pub(crate) async fn approvals(home: &Home, json: bool) -> anyhow::Result<()> {
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

pub(crate) async fn mcp(home: &Home, cmd: McpCommand) -> anyhow::Result<()> {
    match cmd {
        McpCommand::Bridge { target, token } => {
            super::services::pipe(home, &target, true, token).await
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
