//! `trust`, `token`, `revoke`, `revocations`: aliases, capability tokens, revocation.

use super::*;

#[derive(Subcommand, Debug)]
pub(crate) enum TrustCommand {
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
pub(crate) struct ScopeArgs {
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
    /// A rule on a tool's arguments (repeatable; as for `mcp allow --arg`); a delegation
    /// keeps its parent's rules and may add more.
    #[arg(long = "arg", value_name = "RULE")]
    args: Vec<String>,
    /// The callee it is for (alias or NodeId); omitted: any (or the parent's).
    #[arg(long)]
    audience: Option<String>,
    /// How long it is valid: 30s, 10m, 2h, 1d.
    #[arg(long, default_value = "10m")]
    ttl: String,
}

#[derive(Subcommand, Debug)]
pub(crate) enum TokenCommand {
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
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
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
pub(crate) enum RevocationsCommand {
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

pub(crate) async fn revoke(
    home: &Home,
    what: &str,
    passphrase_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    use nullport_keyring::revocation::RevocationList;
    let identity = load_identity(home, passphrase_file)?;
    let trust = TrustStore::load(&home.trust())?;
    let path = home.revocations_issued();
    // One `revoke` at a time: two at once must not both write version N+1.
    let _lock = nullport_keyring::fs::lock(&path)?;
    let mut list = RevocationList::load_own(&path, identity.node_id())?;
    let described = if what.starts_with("npt1") || what.starts_with('@') {
        let text = read_token(Some(what.to_owned()))?.unwrap_or_default();
        let token = nullport_keyring::token::Token::from_text(&text)?;
        list.revoke_token(token.last().body.id);
        format!("token {}", token.ids().last().cloned().unwrap_or_default())
    } else {
        let key = trust.resolve(what)?;
        list.revoke_key(key);
        format!("key {key}")
    };
    let signed = list.next(nullport::tokens::unix_now(), &identity);
    let (response, _) = control(home, &ControlRequest::PublishRevocations { list: signed }).await?;
    if !response.ok {
        bail!(
            "the list was not applied: {}",
            response.error.unwrap_or_default()
        );
    }
    list.save_own(&path)?;
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

pub(crate) fn scope_of(args: &ScopeArgs) -> anyhow::Result<nullport_keyring::token::Scope> {
    Ok(nullport_keyring::token::Scope {
        tools: args.tools.clone(),
        resources: args.resources.clone(),
        prompts: args.prompts.clone(),
        methods: args.methods.clone(),
        args: args
            .args
            .iter()
            .map(|a| nullport_keyring::args::ArgRule::parse(a))
            .collect::<Result<Vec<_>, _>>()?,
    })
}

/// The `--audience` of a token command, resolved through the trust store.
pub(crate) fn audience_of(
    args: &ScopeArgs,
    trust: &TrustStore,
) -> anyhow::Result<Option<nullport_protocol::NodeId>> {
    Ok(args
        .audience
        .as_deref()
        .map(|a| trust.resolve(a))
        .transpose()?)
}

pub(crate) async fn token(home: &Home, cmd: TokenCommand) -> anyhow::Result<()> {
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
                scope_of(&scope)?,
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
                scope_of(&scope)?,
                now,
                now + parse_ttl(&scope.ttl)?,
            )?;
            println!("{}", t.to_text());
        }
        TokenCommand::Inspect { token, json } => {
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
            if json {
                println!("{}", serde_json::to_string_pretty(&links)?);
                return Ok(());
            }
            for (i, l) in links.iter().enumerate() {
                let list = |k: &str| match &l["scope"][k] {
                    serde_json::Value::Array(a) => a
                        .iter()
                        .filter_map(|v| v.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                    _ => "(as the parent)".to_owned(),
                };
                println!(
                    "link {i}: {} -> {} for service {} (audience {})",
                    l["issuer"].as_str().unwrap_or_default(),
                    l["holder"].as_str().unwrap_or_default(),
                    l["service"].as_str().unwrap_or_default(),
                    l["audience"].as_str().unwrap_or("any")
                );
                println!(
                    "  tools {}; resources {}; prompts {}; methods {}",
                    list("tools"),
                    list("resources"),
                    list("prompts"),
                    list("methods")
                );
                println!(
                    "  valid {} .. {}{}",
                    l["not_before"].as_str().unwrap_or_default(),
                    l["expires"].as_str().unwrap_or_default(),
                    if l["expired"] == true {
                        " (EXPIRED)"
                    } else {
                        ""
                    }
                );
            }
        }
        TokenCommand::TrustIssuer { issuer, service } => {
            trust.resolve(&issuer)?;
            let mut policy = Policy::load(&home.policy())?;
            let added = policy.trust_issuer(&issuer, &service);
            policy.save()?;
            println!(
                "tokens from {issuer} {} open {service}{}",
                if added { "now" } else { "already" },
                reload(home).await?
            );
        }
    }
    Ok(())
}

pub(crate) async fn trust(home: &Home, cmd: TrustCommand) -> anyhow::Result<()> {
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
            println!("{alias} = {id}{}", reload(home).await?);
        }
        TrustCommand::Remove { alias } => {
            if store.remove(&alias).is_none() {
                bail!("no alias {alias:?}");
            }
            store.save()?;
            println!("removed {alias}{}", reload(home).await?);
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

pub(crate) async fn revocations(home: &Home, cmd: RevocationsCommand) -> anyhow::Result<()> {
    match cmd {
        RevocationsCommand::Show { json } => {
            let (response, _) = control(home, &ControlRequest::Status).await?;
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
        RevocationsCommand::Trust { signer } => {
            let trust = TrustStore::load(&home.trust())?;
            let id = trust.resolve(&signer)?;
            let mut policy = Policy::load(&home.policy())?;
            let added = policy.trust_revocation_signer(&signer);
            policy.save()?;
            println!(
                "{signer} ({id}) {} revoke keys and tokens on this node{}",
                if added { "may now" } else { "could already" },
                reload(home).await?
            );
            Ok(())
        }
    }
}
