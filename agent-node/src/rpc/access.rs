//! Who may call what: the callee's [`Access`] decides once per channel (may this caller open
//! the service at all) and again for every call (which grant applies now), so a policy reload
//! or an expired token takes effect on live channels at the next call.
//!
//! [`PolicyAccess`] reads the node's policy file (`[rpc.NAME]` rules, `[tokens.NAME]`
//! issuers) and trust store, the files the daemon uses, and reloads them when they change.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nullport_keyring::token::Token;
use nullport_keyring::{CallGrant, Policy, TrustStore};
use nullport_protocol::{DenyReason, NodeId};

/// A caller let in to a service: who it is and what it presented.
#[derive(Debug, Clone)]
pub struct Admission {
    /// The caller, as the handshake proved it.
    pub peer: NodeId,
    /// Its alias in this node's trust store, if any.
    pub alias: Option<String>,
    /// The service.
    pub service: String,
    /// The capability token it presented, verified (none: it came in by the policy).
    pub token: Option<Arc<Token>>,
    /// The rule that let it in, for logs and the audit.
    pub rule: String,
}

/// The callee's decisions. Implement it to plug in another source of truth; [`PolicyAccess`]
/// is the policy file's.
pub trait Access: Send + Sync + 'static {
    /// Whether `peer` may open `service`, presenting `blob` (capability tokens, or empty).
    /// A refusal names the reason the caller is told and the reason that is logged.
    fn admit(&self, peer: NodeId, service: &str, blob: &[u8]) -> Result<Admission, Refused>;

    /// The grant that applies to `admission`'s calls now, or why it no longer has any.
    fn grant(&self, admission: &Admission) -> Result<CallGrant, String>;
}

/// A channel-level refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// What the caller is told.
    pub reason: DenyReason,
    /// What is logged and audited.
    pub why: String,
}

/// What a person is asked before a method marked `approve` runs.
#[derive(Debug, Clone)]
pub struct ApprovalRequest {
    /// The caller.
    pub peer: NodeId,
    /// Its alias here, if any.
    pub alias: Option<String>,
    /// The service.
    pub service: String,
    /// The method.
    pub method: String,
    /// The rule the call came in under.
    pub rule: String,
}

/// Asks a human. Without one, methods marked `approve` are refused (fail closed).
pub trait Approver: Send + Sync + 'static {
    /// Resolves to whether the call may run.
    fn approve(&self, request: ApprovalRequest) -> Pin<Box<dyn Future<Output = bool> + Send>>;
}

/// How often the policy and trust files are checked for changes.
const RELOAD_CHECK: Duration = Duration::from_millis(500);

struct Loaded {
    policy: Policy,
    trust: TrustStore,
    stamps: (Stamp, Stamp),
    checked: Instant,
    /// Bumped at every reload: cached grants of an older generation are stale.
    generation: u64,
}

/// A grant worked out for one (caller, service, token), valid for one policy generation
/// and, for a token, until its earliest link expires.
struct Cached {
    generation: u64,
    until: Option<u64>,
    grant: CallGrant,
}

type CacheKey = (NodeId, String, Option<[u8; 16]>);

/// Grants kept at most (one per caller, service and token); past it the cache starts over.
const MAX_CACHED: usize = 16_384;

/// The policy file's decisions, reloaded when the policy or trust file changes.
pub struct PolicyAccess {
    callee: NodeId,
    policy_path: PathBuf,
    trust_path: PathBuf,
    skew_secs: u64,
    loaded: Mutex<Loaded>,
    cache: Mutex<std::collections::HashMap<CacheKey, Cached>>,
}

impl std::fmt::Debug for PolicyAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyAccess")
            .field("callee", &self.callee)
            .field("policy", &self.policy_path)
            .finish_non_exhaustive()
    }
}

/// What tells a file changed: its modification time, size and inode (a file replaced with
/// its old time kept, as `cp -p`, `rsync -t` or `tar x` do, still differs in inode or size).
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len(), meta.ino()))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl PolicyAccess {
    /// Loads the policy at `policy` and the trust store at `trust` for the node `callee`
    /// (missing files: the empty, deny-all policy and no aliases).
    pub fn load(
        callee: NodeId,
        policy: &Path,
        trust: &Path,
    ) -> Result<Self, nullport_keyring::Error> {
        let loaded = Loaded {
            stamps: (stamp(policy), stamp(trust)),
            policy: Policy::load(policy)?,
            trust: TrustStore::load(trust)?,
            checked: Instant::now(),
            generation: 0,
        };
        Ok(Self {
            callee,
            policy_path: policy.to_owned(),
            trust_path: trust.to_owned(),
            skew_secs: 60,
            loaded: Mutex::new(loaded),
            cache: Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// The files of a nullport home (`policy.toml`, `trust.toml`).
    pub fn from_home(callee: NodeId, home: &Path) -> Result<Self, nullport_keyring::Error> {
        Self::load(callee, &home.join("policy.toml"), &home.join("trust.toml"))
    }

    /// Tolerated clock difference for token times, in seconds (default 60).
    pub fn with_token_skew(mut self, secs: u64) -> Self {
        self.skew_secs = secs;
        self
    }

    /// Re-reads the files now if they changed. A file that fails to load keeps the last
    /// good policy in force, and the error is returned.
    pub fn reload(&self) -> Result<(), nullport_keyring::Error> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        self.refresh(&mut loaded, true)
    }

    fn refresh(&self, loaded: &mut Loaded, force: bool) -> Result<(), nullport_keyring::Error> {
        if !force && loaded.checked.elapsed() < RELOAD_CHECK {
            return Ok(());
        }
        loaded.checked = Instant::now();
        let stamps = (stamp(&self.policy_path), stamp(&self.trust_path));
        if stamps == loaded.stamps {
            return Ok(());
        }
        let policy = Policy::load(&self.policy_path)?;
        let trust = TrustStore::load(&self.trust_path)?;
        *loaded = Loaded {
            policy,
            trust,
            stamps,
            checked: loaded.checked,
            generation: loaded.generation + 1,
        };
        tracing::info!(policy = %self.policy_path.display(), "rpc policy reloaded");
        Ok(())
    }

    fn with<R>(&self, f: impl FnOnce(&Policy, &TrustStore, u64) -> R) -> R {
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = self.refresh(&mut loaded, false) {
            tracing::warn!("policy not reloaded, the last good one stays in force: {e}");
        }
        f(&loaded.policy, &loaded.trust, loaded.generation)
    }

    fn token_grant(
        &self,
        token: &Token,
        admission_peer: NodeId,
        service: &str,
        policy: &Policy,
        trust: &TrustStore,
    ) -> Result<CallGrant, String> {
        let issuers = policy.token_issuers(service, trust);
        let scope = token
            .verify(
                &admission_peer,
                &self.callee,
                service,
                &issuers,
                unix_now(),
                self.skew_secs,
            )
            .map_err(|e| format!("token refused: {e}"))?;
        let issuer = token.links[0].body.issuer;
        let rule = format!(
            "token from {}",
            trust
                .alias_of(&issuer)
                .map(str::to_owned)
                .unwrap_or_else(|| issuer.to_string())
        );
        policy
            .rpc_grant_for_token(&issuer, scope.methods.as_deref(), rule, service, trust)
            .ok_or_else(|| format!("the token's issuer has no rpc rules for {service:?} here"))
    }
}

impl Access for PolicyAccess {
    fn admit(&self, peer: NodeId, service: &str, blob: &[u8]) -> Result<Admission, Refused> {
        self.with(|policy, trust, _| {
            let alias = trust.alias_of(&peer).map(str::to_owned);
            if blob.is_empty() {
                return match policy.rpc_grant(&peer, service, trust) {
                    Some(grant) => Ok(Admission {
                        peer,
                        alias,
                        service: service.to_owned(),
                        token: None,
                        rule: grant.rule,
                    }),
                    None => Err(Refused {
                        reason: DenyReason::NotAllowed,
                        why: format!("no rpc rule for this caller on {service:?}"),
                    }),
                };
            }
            let token = Token::from_bytes(blob).map_err(|e| Refused {
                reason: DenyReason::NotAllowed,
                why: format!("token refused: {e}"),
            })?;
            let grant = self
                .token_grant(&token, peer, service, policy, trust)
                .map_err(|why| Refused {
                    reason: DenyReason::NotAllowed,
                    why,
                })?;
            Ok(Admission {
                peer,
                alias,
                service: service.to_owned(),
                token: Some(Arc::new(token)),
                rule: grant.rule,
            })
        })
    }

    fn grant(&self, admission: &Admission) -> Result<CallGrant, String> {
        let token_id = admission.token.as_ref().map(|t| t.last().body.id);
        let key: CacheKey = (admission.peer, admission.service.clone(), token_id);
        self.with(|policy, trust, generation| {
            let now = unix_now();
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(hit) = cache.get(&key)
                && hit.generation == generation
                && hit.until.is_none_or(|until| now <= until)
            {
                return Ok(hit.grant.clone());
            }
            let (grant, until) = match &admission.token {
                // The token is verified again whenever the cache cannot vouch for it: a new
                // policy (issuer trust, rules), or its earliest link's expiry passed.
                Some(token) => {
                    let grant =
                        self.token_grant(token, admission.peer, &admission.service, policy, trust);
                    let expires = token.links.iter().map(|l| l.body.expires).min();
                    (grant, expires.map(|e| e.saturating_add(self.skew_secs)))
                }
                None => (
                    policy
                        .rpc_grant(&admission.peer, &admission.service, trust)
                        .ok_or_else(|| "the caller's rpc rule was removed".to_owned()),
                    None,
                ),
            };
            match &grant {
                Ok(grant) => {
                    if cache.len() >= MAX_CACHED {
                        cache.clear();
                    }
                    cache.insert(
                        key,
                        Cached {
                            generation,
                            until,
                            grant: grant.clone(),
                        },
                    );
                }
                Err(_) => {
                    cache.remove(&key);
                }
            }
            grant
        })
    }
}
