//! An MCP server living in an embedding program (a Python agent's own tool server, say),
//! served by the program's embedded [`nullport_node::Node`] exactly as `nullport expose mcp`
//! serves a stdio server: the same access decision ([`Access::decide`], with the same caps,
//! refusals and deny reasons), the same JSON-RPC firewall, policy file, receipts and audit
//! events, and the same re-check of live sessions when access is taken away.
//!
//! What differs from the daemon is only where things come from: the policy and trust store
//! are a home's files, read at [`EmbeddedMcp::new`] and again at each
//! [`EmbeddedMcp::reload`] (there is no daemon to tell); the incoming channels are whatever
//! the embedder routes to [`EmbeddedMcp::run`]; and the upstream is an
//! [`UpstreamSpec::Embedded`] factory (or any other upstream).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use nullport_audit::ChannelOutcome;
use nullport_keyring::revocation::RevocationSet;
use nullport_keyring::{Policy, TrustStore};
use nullport_node::IncomingChannel;
use nullport_protocol::Identity;
use tokio::sync::{mpsc, watch};

use crate::access::{Access, AccessSettings};
use crate::audit::Audit;
use crate::config_file::{ConfigError, NodeFile, Service, ServiceSpec};
use crate::daemon::channels::Table;
use crate::daemon::incoming::{admit, serve};
use crate::home::Home;
use crate::mcp::UpstreamSpec;
use crate::mcp::approvals::Approvals;
use crate::mcp::pins::Pins;
use crate::services::Caller;
use crate::services::mcp::Mcp;
use crate::tokens::unix_now;

/// Why an embedded MCP service could not start or reload (the files in force stay then).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbedError {
    /// The policy, trust store or revocation lists could not be read.
    #[error(transparent)]
    Keyring(#[from] nullport_keyring::Error),
    /// The config file or pins could not be read.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// One MCP service of an embedded node, behind the firewall (cheap to clone).
#[derive(Clone)]
pub struct EmbeddedMcp {
    inner: Arc<Inner>,
}

struct Inner {
    service: String,
    home: Home,
    identity: Arc<Identity>,
    upstream: UpstreamSpec,
    access: watch::Sender<Arc<Access>>,
    audit: Audit,
    approvals: Arc<Approvals>,
    pins: Arc<Pins>,
    channels: Table,
}

impl std::fmt::Debug for EmbeddedMcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedMcp")
            .field("service", &self.inner.service)
            .field("home", &self.inner.home.dir())
            .finish()
    }
}

impl EmbeddedMcp {
    /// The MCP service `service` of the node whose key is `identity`, decided by `home`'s
    /// policy, trust store, revocation lists and followed rotations (and its config's
    /// `[access]` and `[approvals]` settings, if it has a config), audited to `audit`
    /// (`Audit::open` on the home's audit log, or `Audit::disabled()`); each caller session
    /// goes to `upstream`.
    pub fn new(
        identity: Arc<Identity>,
        service: &str,
        upstream: UpstreamSpec,
        home: &Home,
        audit: Audit,
    ) -> Result<Self, EmbedError> {
        let config = NodeFile::load(&home.config())?;
        let pins = Arc::new(Pins::load(home.pins(), audit.clone())?);
        let approvals = Arc::new(Approvals::new(config.approvals.timeout(), audit.clone()));
        let access = snapshot(&identity, service, &upstream, home)?;
        Ok(Self {
            inner: Arc::new(Inner {
                service: service.to_owned(),
                home: home.clone(),
                identity,
                upstream,
                access: watch::Sender::new(Arc::new(access)),
                audit,
                approvals,
                pins,
                channels: Table::default(),
            }),
        })
    }

    /// The service's name.
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// Re-reads the home's files. Live sessions are re-checked against them at once by
    /// [`EmbeddedMcp::run`]: a caller whose rule is gone has its channel aborted with the
    /// refusal's reason, and every later message is decided on the new rules. If a file
    /// cannot be read, the rules in force stay.
    pub fn reload(&self) -> Result<(), EmbedError> {
        let i = &self.inner;
        let access = snapshot(&i.identity, &i.service, &i.upstream, &i.home)?;
        i.access.send_replace(Arc::new(access));
        Ok(())
    }

    /// The access snapshot in force.
    pub fn access(&self) -> Arc<Access> {
        self.inner.access.borrow().clone()
    }

    /// Puts in force the snapshot in force changed by `change` (live sessions are re-checked
    /// against it by [`EmbeddedMcp::run`]).
    pub(crate) fn update_access(&self, change: impl FnOnce(&mut Access)) {
        let mut access = Access::clone(&self.access());
        change(&mut access);
        self.inner.access.send_replace(Arc::new(access));
    }

    /// The home whose files decide.
    pub fn home(&self) -> &Home {
        &self.inner.home
    }

    /// The audit log.
    pub(crate) fn audit(&self) -> &Audit {
        &self.inner.audit
    }

    /// Incoming channels of this service open now.
    pub fn open_sessions(&self) -> usize {
        self.inner.channels.totals().0.0
    }

    /// Serves the channels `incoming` yields until it closes (each on its own task, decided
    /// and served like the daemon's), re-checking live ones whenever [`EmbeddedMcp::reload`]
    /// changes the rules and each second for token expiry. The sessions still open end
    /// when this returns or is dropped.
    pub async fn run(&self, mut incoming: mpsc::Receiver<IncomingChannel>) {
        let mut sessions = tokio::task::JoinSet::new();
        let mut snapshots = self.inner.access.subscribe();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let full = tokio::select! {
                next = incoming.recv() => {
                    let Some(next) = next else { break };
                    let this = self.clone();
                    sessions.spawn(async move { this.serve_one(next).await });
                    continue;
                }
                Some(_) = sessions.join_next(), if !sessions.is_empty() => continue,
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    true
                }
                _ = tick.tick() => false,
            };
            let access = snapshots.borrow_and_update().clone();
            self.sweep(&access, full);
        }
    }

    /// Decides one incoming channel and, if it is granted, serves it until it ends.
    pub async fn serve_one(&self, incoming: IncomingChannel) {
        let i = &self.inner;
        let access = self.access();
        let Some((incoming, grant, registered)) =
            admit(&i.channels, &i.audit, &access, incoming).await
        else {
            return;
        };
        let (peer, blob) = (incoming.peer(), incoming.blob().to_vec());
        let alias = access.trust.alias_of(&peer).map(str::to_owned);
        let caller = Caller {
            peer,
            alias: alias.as_deref(),
            service: &i.service,
            blob: &blob,
        };
        let kind = Mcp {
            upstream: i.upstream.clone(),
            access: i.access.subscribe(),
            identity: i.identity.clone(),
            approvals: i.approvals.clone(),
            audit: i.audit.clone(),
            pins: i.pins.clone(),
        };
        tracing::debug!(rule = %grant.rule, "embedded MCP session");
        serve(&kind, incoming, &registered, &caller).await;
    }

    /// Ends the sessions that no longer pass (`full`: against `access` in full, else their
    /// tokens' expiry only), and audits why.
    fn sweep(&self, access: &Access, full: bool) {
        let i = &self.inner;
        for (peer, service, why) in i.channels.sweep(access, full, None, unix_now()) {
            tracing::info!(peer = %peer.fmt_short(), %service, "channel closed: {why}");
            i.audit
                .channel(&peer, &service, ChannelOutcome::Closed, &why);
        }
    }
}

/// The access snapshot for `service` from `home`'s files now.
fn snapshot(
    identity: &Identity,
    service: &str,
    upstream: &UpstreamSpec,
    home: &Home,
) -> Result<Access, EmbedError> {
    let config = NodeFile::load(&home.config())?;
    let shown = match upstream {
        UpstreamSpec::Stdio { command, .. } => ServiceSpec::Mcp(command.clone()),
        UpstreamSpec::Http(target) => ServiceSpec::McpUrl(format!("{target:?}")),
        UpstreamSpec::Embedded(_) => ServiceSpec::Mcp(vec!["(in this process)".into()]),
    };
    let mut services = BTreeMap::new();
    services.insert(service.to_owned(), Service::new(shown));
    Ok(Access {
        me: identity.node_id(),
        services,
        policy: Policy::load(&home.policy())?,
        trust: TrustStore::load(&home.trust())?,
        revocations: RevocationSet::load(&home.revocations())?,
        rotations: crate::daemon::lists::load_rotations(home),
        settings: AccessSettings::from(&config.access),
    })
}

#[cfg(test)]
#[path = "embed_tests.rs"]
mod tests;
