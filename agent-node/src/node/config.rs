//! What a node needs to start ([`NodeConfig`]), its bounds ([`NodeLimits`]), and the state
//! of its relay link ([`LinkState`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use nullport_protocol::relay_link::SignedRelayMap;
use nullport_protocol::{Identity, Limits, NodeId};

use crate::error::{Error, Refusal};
use crate::relay_addr::RelayAddr;

/// The state of the relay link, as a program matches on it and a person reads it
/// (`Display` gives one line: cause, and what the node does next).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum LinkState {
    /// Not (yet, or no longer) connected; retrying with backoff.
    Connecting {
        /// Attempts since the last success.
        attempt: u32,
        /// Why the last attempt or connection failed.
        last_error: Option<Error>,
    },
    /// Connected and admitted.
    Online,
    /// The relay refused this node (or the relay key did not match); still retrying, slowly.
    Refused {
        /// Why.
        refusal: Refusal,
        /// When the node tries again.
        retry_in: Duration,
    },
}

impl LinkState {
    /// Whether the link is up and admitted.
    pub fn is_online(&self) -> bool {
        matches!(self, LinkState::Online)
    }

    /// The refusal, when the relay refused this node.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            LinkState::Refused { refusal, .. } => Some(refusal),
            _ => None,
        }
    }
}

impl std::fmt::Display for LinkState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkState::Online => f.write_str("online"),
            LinkState::Connecting {
                attempt,
                last_error: Some(e),
            } => write!(f, "connecting (attempt {attempt}; last error: {e})"),
            LinkState::Connecting { .. } => f.write_str("connecting"),
            LinkState::Refused { refusal, retry_in } => {
                // Whole seconds, rounded up: "retrying in 0s" would read as a busy loop.
                let secs = retry_in.as_millis().div_ceil(1000);
                write!(f, "refused: {refusal}; retrying in {secs}s")?;
                if *refusal == Refusal::Superseded {
                    f.write_str(" (is this node's home copied to another machine?)")?;
                }
                Ok(())
            }
        }
    }
}

/// Bounds and timings of a node. `Default` gives safe values.
#[derive(Debug, Clone)]
pub struct NodeLimits {
    /// End-to-end handshake limits (deadline, rekey interval).
    pub handshake: Limits,
    /// Time to connect to the relay and be admitted.
    pub connect_timeout: Duration,
    /// Total time a dial may take, including waiting for the relay link.
    pub dial_timeout: Duration,
    /// Incoming handshakes in progress at once.
    pub max_pending_handshakes: usize,
    /// Incoming handshakes in progress at once from one caller.
    pub max_pending_per_peer: usize,
    /// Authenticated channels waiting for [`Node::accept`](crate::Node::accept); over it, callers are denied
    /// with "unavailable".
    pub accept_queue: usize,
    /// Reconnect backoff: first wait.
    pub backoff_min: Duration,
    /// Reconnect backoff: longest wait.
    pub backoff_max: Duration,
    /// Reconnect backoff after the relay refused this node.
    pub refused_backoff_max: Duration,
    /// QUIC keep-alive interval towards the relay.
    pub keep_alive: Duration,
    /// Relay link considered dead after this much silence.
    pub idle_timeout: Duration,
    /// Streams the relay may open to this node at once (incoming dials).
    pub max_incoming_streams: u32,
    /// Time a control request to the relay (presence, witness, publish, catch-up) may take.
    pub control_timeout: Duration,
    /// Reconnect backoff after another connection with this identity superseded this one.
    pub superseded_backoff: Duration,
    /// Fleet nodes: how long a relay earlier in the node's order must stay linked before it
    /// becomes home again (hysteresis: a relay that comes and goes does not move the node).
    pub home_settle: Duration,
    /// Fleet nodes: an extra link (to reach callees homed elsewhere, or a former home) closes
    /// once no channel uses it and it has been idle this long.
    pub extra_link_idle: Duration,
    /// Fleet nodes: time a relay has to answer a dial before the next relay is tried.
    pub relay_answer_timeout: Duration,
    /// Fleet nodes: how often the node asks a relay other than its home for the newest map
    /// (so a relay removed from the map cannot keep it on the old one).
    pub map_refresh: Duration,
}

impl Default for NodeLimits {
    fn default() -> Self {
        Self {
            handshake: Limits::default(),
            connect_timeout: Duration::from_secs(5),
            dial_timeout: Duration::from_secs(15),
            max_pending_handshakes: 256,
            max_pending_per_peer: 32,
            accept_queue: 64,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            refused_backoff_max: Duration::from_secs(30),
            keep_alive: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_incoming_streams: 256,
            control_timeout: Duration::from_secs(10),
            superseded_backoff: Duration::from_secs(30),
            home_settle: Duration::from_secs(5),
            extra_link_idle: Duration::from_secs(60),
            relay_answer_timeout: Duration::from_secs(3),
            map_refresh: Duration::from_secs(300),
        }
    }
}

impl NodeLimits {
    /// The defaults of a fleet node: a relay that dies without a word is noticed sooner
    /// (keep-alive 3 s, idle timeout 9 s: lost within 12 s at most, since the idle timer
    /// restarts with the first keep-alive sent into the silence), since a fleet node has
    /// somewhere to go; a lone relay's nodes keep 10 s and 30 s.
    pub fn fleet() -> Self {
        Self {
            keep_alive: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(9),
            ..Self::default()
        }
    }
}

/// What a node needs to start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The node's identity.
    pub identity: Arc<Identity>,
    /// The relay to dial out to.
    pub relay: RelayAddr,
    /// Bounds and timings.
    pub limits: NodeLimits,
    /// Local UDP address for the client socket (default: any address, ephemeral port). This
    /// is a source address, never a listener.
    pub bind: Option<SocketAddr>,
    /// An enrollment invite to present instead of `Hello` on the first admission (a relay in
    /// allowlist mode then adds this node).
    pub join: Option<Vec<u8>>,
    /// A fleet node: the network admin key it pins. `relay` is then only the relay to ask
    /// for the relay map first; from the map on, the node uses the relays it lists (and no
    /// other) by rendezvous hashing. None: a lone relay, `relay`, pinned by its own key.
    pub admin: Option<NodeId>,
    /// A fleet node: the relay map it held before (from [`Node::relay_map`]), so a restart
    /// neither waits for the bootstrap relay nor accepts an older map.
    ///
    /// [`Node::relay_map`]: crate::Node::relay_map
    pub relay_map: Option<SignedRelayMap>,
}

impl NodeConfig {
    /// A config with default limits.
    pub fn new(identity: Arc<Identity>, relay: RelayAddr) -> Self {
        Self {
            identity,
            relay,
            limits: NodeLimits::default(),
            bind: None,
            join: None,
            admin: None,
            relay_map: None,
        }
    }

    /// The config for `spec`: a lone relay ([`NodeConfig::new`]) or a fleet
    /// ([`NodeConfig::fleet`]).
    pub fn for_relay(identity: Arc<Identity>, spec: &crate::RelaySpec) -> Result<Self, Error> {
        match spec {
            crate::RelaySpec::Single(addr) => Ok(Self::new(identity, addr.clone())),
            crate::RelaySpec::Fleet(bootstrap) => Self::fleet(identity, bootstrap),
        }
    }

    /// A fleet node's config from its bootstrap (`fleet:<admin>/<relay>@<host>:<port>`):
    /// the admin key pinned, the named relay asked for the map first.
    pub fn fleet(
        identity: Arc<Identity>,
        bootstrap: &nullport_keyring::relay_map::FleetBootstrap,
    ) -> Result<Self, Error> {
        let relay: RelayAddr = format!("{}@{}", bootstrap.relay, bootstrap.addr).parse()?;
        let mut config = Self::new(identity, relay);
        config.admin = Some(bootstrap.admin);
        config.limits = NodeLimits::fleet();
        Ok(config)
    }
}
