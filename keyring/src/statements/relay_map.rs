//! The relay map of a fleet: which relays a network has, signed by the network admin key.
//!
//! Nodes pin the admin key instead of one relay key. A map is versioned: a node accepts only
//! a map newer than the one it holds (no rollback), learns new maps from any relay it is
//! linked to, and never dials (never sends a byte to) a relay that is not in its map. Each
//! node's home relay, and the order in which a caller tries a callee's relays, comes from
//! rendezvous (highest-random-weight) hashing over the map: [`rendezvous_order`].
//!
//! The bootstrap is one pasteable string, [`FleetBootstrap`]:
//! `fleet:<admin NodeId>/<relay NodeId>@<host>:<port>`: the admin key to pin and one relay to
//! ask for the map (its key pinned too, so a node presents its TLS identity to nobody else).

use std::fmt;
use std::str::FromStr;

use nullport_protocol::relay_link::SignedRelayMap;
use nullport_protocol::{Identity, NodeId, Signature, domain, identity::verify};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Largest encoded map body accepted (64 relays with four long addresses each fit).
pub const MAX_MAP_BYTES: usize = 64 * 1024;
/// Most relays in one map.
pub const MAX_RELAYS: usize = 64;
/// Most addresses per relay.
pub const MAX_ADDRS: usize = 4;
/// Longest address (`host:port`) or region name, in bytes.
pub const MAX_NAME: usize = 255;

/// The prefix of a fleet bootstrap string.
pub const BOOTSTRAP_PREFIX: &str = "fleet:";

/// One relay of the fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayEntry {
    /// The relay's key (its TLS identity, pinned by nodes).
    pub node_id: NodeId,
    /// Where it listens: `host:port` (IPv6 hosts in brackets), tried in order.
    pub addrs: Vec<String>,
    /// A region name, for operators (not used to route).
    pub region: Option<String>,
}

/// What a relay map says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayMap {
    /// The network admin key that signs it.
    pub admin: NodeId,
    /// Monotonic version: a node accepts only a higher one than it holds.
    pub version: u64,
    /// When it was signed (Unix seconds).
    pub issued: u64,
    /// The relays, sorted by NodeId, each once.
    pub relays: Vec<RelayEntry>,
}

/// Why a relay map (or a bootstrap string) is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RelayMapError {
    /// Not a map, too large, or not in its one canonical form.
    #[error("malformed relay map: {0}")]
    Malformed(&'static str),
    /// Signed by another key than the pinned admin key.
    #[error("relay map signed by {got}, not by the network admin {admin}")]
    WrongAdmin {
        /// The key the map names.
        got: NodeId,
        /// The pinned admin key.
        admin: NodeId,
    },
    /// The signature does not verify.
    #[error("relay map signature invalid")]
    BadSignature,
    /// Not newer than the map held (a rollback, or the same version with other content).
    #[error("relay map version {got} refused: holding version {held}")]
    Stale {
        /// Version offered.
        got: u64,
        /// Version held.
        held: u64,
    },
    /// A bootstrap string that does not parse.
    #[error(
        "invalid fleet bootstrap {text:?}: expected fleet:<admin NodeId>/<relay NodeId>@<host>:<port> ({problem})"
    )]
    Bootstrap {
        /// The text given.
        text: String,
        /// What is wrong with it.
        problem: String,
    },
}

impl RelayMap {
    /// Signs this map with the admin key (which must be the map's `admin`), after putting its
    /// relays in canonical order and checking its bounds.
    pub fn sign(mut self, admin: &Identity) -> Result<SignedRelayMap, RelayMapError> {
        if admin.node_id() != self.admin {
            return Err(RelayMapError::WrongAdmin {
                got: admin.node_id(),
                admin: self.admin,
            });
        }
        self.relays
            .sort_by(|a, b| a.node_id.as_bytes().cmp(b.node_id.as_bytes()));
        self.check()?;
        let body = postcard::to_stdvec(&self).map_err(|_| RelayMapError::Malformed("encode"))?;
        if body.len() > MAX_MAP_BYTES {
            return Err(RelayMapError::Malformed("larger than 64 KiB"));
        }
        let sig = Signature(admin.sign(domain::RELAY_MAP_V1, &body));
        Ok(SignedRelayMap { body, sig })
    }

    /// Checks a signed map against the pinned admin key: size, exact decoding, canonical
    /// form, bounds, then the signature.
    pub fn verify(signed: &SignedRelayMap, admin: &NodeId) -> Result<RelayMap, RelayMapError> {
        if signed.body.len() > MAX_MAP_BYTES {
            return Err(RelayMapError::Malformed("larger than 64 KiB"));
        }
        let (map, rest): (RelayMap, &[u8]) = postcard::take_from_bytes(&signed.body)
            .map_err(|_| RelayMapError::Malformed("not a relay map"))?;
        if !rest.is_empty() {
            return Err(RelayMapError::Malformed("trailing bytes"));
        }
        if map.admin != *admin {
            return Err(RelayMapError::WrongAdmin {
                got: map.admin,
                admin: *admin,
            });
        }
        // One encoding per map: the body must be exactly what `sign` would produce.
        let canonical =
            postcard::to_stdvec(&map).map_err(|_| RelayMapError::Malformed("encode"))?;
        if canonical != signed.body {
            return Err(RelayMapError::Malformed("not canonical"));
        }
        map.check()?;
        verify(admin, domain::RELAY_MAP_V1, &signed.body, &signed.sig.0)
            .map_err(|_| RelayMapError::BadSignature)?;
        Ok(map)
    }

    /// Checks a signed map under the admin key it names itself. For relays and `map show`,
    /// which pin no admin key; nodes pin theirs and use [`RelayMap::verify`].
    pub fn verify_self_signed(signed: &SignedRelayMap) -> Result<RelayMap, RelayMapError> {
        let (claimed, _): (RelayMap, &[u8]) = postcard::take_from_bytes(&signed.body)
            .map_err(|_| RelayMapError::Malformed("not a relay map"))?;
        RelayMap::verify(signed, &claimed.admin)
    }

    /// Whether `newer` may replace `self`: a higher version only. The same version with the
    /// same content is `Ok(false)` (nothing to do); anything else is refused.
    pub fn accepts(&self, newer: &RelayMap) -> Result<bool, RelayMapError> {
        if newer.version > self.version {
            Ok(true)
        } else if newer == self {
            Ok(false)
        } else {
            Err(RelayMapError::Stale {
                got: newer.version,
                held: self.version,
            })
        }
    }

    /// The entry of relay `id`, if the map lists it.
    pub fn relay(&self, id: &NodeId) -> Option<&RelayEntry> {
        self.relays.iter().find(|r| r.node_id == *id)
    }

    /// The relays in `node`'s rendezvous order: its home first, then where it goes if that
    /// one is lost (see [`rendezvous_order`]).
    pub fn order_for(&self, node: &NodeId) -> Vec<&RelayEntry> {
        rendezvous_order(node, &self.relays)
    }

    fn check(&self) -> Result<(), RelayMapError> {
        if self.relays.is_empty() {
            return Err(RelayMapError::Malformed("no relays"));
        }
        if self.relays.len() > MAX_RELAYS {
            return Err(RelayMapError::Malformed("more than 64 relays"));
        }
        for pair in self.relays.windows(2) {
            if pair[0].node_id.as_bytes() >= pair[1].node_id.as_bytes() {
                return Err(RelayMapError::Malformed("relays not sorted or repeated"));
            }
        }
        for relay in &self.relays {
            if relay.addrs.is_empty() || relay.addrs.len() > MAX_ADDRS {
                return Err(RelayMapError::Malformed("a relay needs 1 to 4 addresses"));
            }
            if relay.addrs.iter().any(|a| !valid_hostport(a)) {
                return Err(RelayMapError::Malformed("an address is not host:port"));
            }
            if relay.region.as_ref().is_some_and(|r| {
                r.is_empty() || r.len() > MAX_NAME || r.chars().any(char::is_control)
            }) {
                return Err(RelayMapError::Malformed(
                    "a region name is empty, long or has control characters",
                ));
            }
        }
        Ok(())
    }
}

/// `host:port` with a non-empty host (IPv6 in brackets), a port 1-65535, no spaces or control
/// characters, at most [`MAX_NAME`] bytes.
fn valid_hostport(text: &str) -> bool {
    if text.len() > MAX_NAME || text.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return false;
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return false;
    };
    let bracketed = host.starts_with('[') && host.ends_with(']');
    !host.is_empty()
        && (!host.contains(':') || bracketed)
        && port.parse::<u16>().is_ok_and(|p| p != 0)
        && port.chars().all(|c| c.is_ascii_digit())
}

/// The weight of `relay` for `node`: the first 8 bytes of
/// `SHA-256("nullport-hrw-v1" 0x00 node relay)`, big endian.
pub fn rendezvous_weight(node: &NodeId, relay: &NodeId) -> u64 {
    let mut h = Sha256::new();
    h.update(b"nullport-hrw-v1\0");
    h.update(node.as_bytes());
    h.update(relay.as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// `relays` in highest-random-weight order for `node` (ties, which need a SHA-256 collision in
/// 64 bits, broken by relay key). Removing a relay from the map moves only the nodes whose
/// first choice it was; adding one takes roughly `1/n` of the nodes, all to the new relay.
pub fn rendezvous_order<'a>(node: &NodeId, relays: &'a [RelayEntry]) -> Vec<&'a RelayEntry> {
    let mut order: Vec<(u64, &RelayEntry)> = relays
        .iter()
        .map(|r| (rendezvous_weight(node, &r.node_id), r))
        .collect();
    order.sort_by(|a, b| {
        b.0.cmp(&a.0)
            .then_with(|| a.1.node_id.as_bytes().cmp(b.1.node_id.as_bytes()))
    });
    order.into_iter().map(|(_, r)| r).collect()
}

/// How a node joins a fleet: the admin key to pin and one relay to fetch the map from.
/// Text form `fleet:<admin NodeId>/<relay NodeId>@<host>:<port>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetBootstrap {
    /// The network admin key (signs the relay map).
    pub admin: NodeId,
    /// The first relay's key.
    pub relay: NodeId,
    /// The first relay's `host:port`.
    pub addr: String,
}

impl fmt::Display for FleetBootstrap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{BOOTSTRAP_PREFIX}{}/{}@{}",
            self.admin, self.relay, self.addr
        )
    }
}

impl FromStr for FleetBootstrap {
    type Err = RelayMapError;

    fn from_str(text: &str) -> Result<Self, RelayMapError> {
        let bad = |problem: &str| RelayMapError::Bootstrap {
            text: text.to_owned(),
            problem: problem.to_owned(),
        };
        let rest = text
            .trim()
            .strip_prefix(BOOTSTRAP_PREFIX)
            .ok_or_else(|| bad("no fleet: prefix"))?;
        let (admin, rest) = rest.split_once('/').ok_or_else(|| bad("no '/'"))?;
        let (relay, addr) = rest.split_once('@').ok_or_else(|| bad("no '@'"))?;
        let admin: NodeId = admin.parse().map_err(|e| bad(&format!("admin key: {e}")))?;
        let relay: NodeId = relay.parse().map_err(|e| bad(&format!("relay key: {e}")))?;
        if !valid_hostport(addr) {
            return Err(bad("the address is not host:port"));
        }
        Ok(FleetBootstrap {
            admin,
            relay,
            addr: addr.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests;
