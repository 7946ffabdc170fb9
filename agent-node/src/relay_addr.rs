//! Relay addresses: `<relay NodeId>@<host>:<port>` (the NodeId pins the relay's key), and
//! [`RelaySpec`]: such an address, or a fleet's `fleet:<admin>/<relay>@<host>:<port>`.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use nullport_protocol::NodeId;

use crate::error::{AddressProblem, Error, Unreachable};

/// Where a relay is and which key it must present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayAddr {
    /// The relay's NodeId (pinned).
    pub node_id: NodeId,
    /// Host name or IP literal (IPv6 in brackets in text form).
    pub host: String,
    /// UDP port.
    pub port: u16,
}

impl RelayAddr {
    /// Resolves the host (DNS if needed) to socket addresses.
    pub async fn resolve(&self) -> Result<Vec<SocketAddr>, Error> {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, self.port))
            .await
            .map_err(|e| {
                Error::RelayUnreachable(Unreachable::Resolve {
                    host: self.host.clone(),
                    kind: e.kind(),
                })
            })?
            .collect();
        if addrs.is_empty() {
            return Err(Error::RelayUnreachable(Unreachable::NoAddress {
                host: self.host.clone(),
            }));
        }
        Ok(addrs)
    }
}

impl fmt::Display for RelayAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}:{}", self.node_id, self.host, self.port)
    }
}

impl FromStr for RelayAddr {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        let bad = |problem: AddressProblem| Error::InvalidRelayAddress {
            address: text.to_owned(),
            problem,
        };
        let (id, hostport) = text.split_once('@').ok_or(bad(AddressProblem::NoAt))?;
        let node_id: NodeId = id.parse().map_err(|e| bad(AddressProblem::NodeId(e)))?;
        let (host, port) = hostport
            .rsplit_once(':')
            .ok_or(bad(AddressProblem::NoPort))?;
        if host.is_empty() {
            return Err(bad(AddressProblem::EmptyHost));
        }
        if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
            return Err(bad(AddressProblem::UnbracketedIpv6));
        }
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad(AddressProblem::BadPort(port.to_owned())))?;
        Ok(Self {
            node_id,
            host: host.to_owned(),
            port,
        })
    }
}

/// Where a node finds its relay: one relay pinned by its key (`<relay NodeId>@host:port`), or
/// a fleet (`fleet:<admin NodeId>/<relay NodeId>@host:port`: the network admin key pinned,
/// and one relay to ask for the signed relay map).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelaySpec {
    /// A lone relay.
    Single(RelayAddr),
    /// A fleet of relays.
    Fleet(nullport_keyring::relay_map::FleetBootstrap),
}

impl RelaySpec {
    /// The relay the node dials first (the lone relay, or the fleet's bootstrap relay).
    pub fn first_relay(&self) -> Result<RelayAddr, Error> {
        match self {
            RelaySpec::Single(addr) => Ok(addr.clone()),
            RelaySpec::Fleet(b) => format!("{}@{}", b.relay, b.addr).parse(),
        }
    }

    /// The admin key a fleet node pins (none for a lone relay).
    pub fn admin(&self) -> Option<NodeId> {
        match self {
            RelaySpec::Single(_) => None,
            RelaySpec::Fleet(b) => Some(b.admin),
        }
    }
}

impl fmt::Display for RelaySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RelaySpec::Single(addr) => addr.fmt(f),
            RelaySpec::Fleet(b) => b.fmt(f),
        }
    }
}

impl FromStr for RelaySpec {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        if text
            .trim()
            .starts_with(nullport_keyring::relay_map::BOOTSTRAP_PREFIX)
        {
            let bootstrap =
                text.parse()
                    .map_err(|e: nullport_keyring::relay_map::RelayMapError| {
                        Error::InvalidRelayAddress {
                            address: text.to_owned(),
                            problem: AddressProblem::Fleet(e.to_string()),
                        }
                    })?;
            Ok(RelaySpec::Fleet(bootstrap))
        } else {
            text.parse().map(RelaySpec::Single)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nullport_protocol::Identity;

    #[test]
    fn parses_and_prints() {
        let id = Identity::from_seed([1; 32]).node_id();
        for hp in ["relay.example.net:7443", "127.0.0.1:1", "[::1]:7443"] {
            let text = format!("{id}@{hp}");
            let addr: RelayAddr = text.parse().unwrap();
            assert_eq!(addr.to_string(), text);
        }
    }

    #[test]
    fn specs_are_a_lone_relay_or_a_fleet() {
        let id = Identity::from_seed([1; 32]).node_id();
        let admin = Identity::from_seed([2; 32]).node_id();
        let single: RelaySpec = format!("{id}@h:1").parse().unwrap();
        assert!(matches!(single, RelaySpec::Single(_)));
        assert_eq!(single.admin(), None);
        let text = format!("fleet:{admin}/{id}@h:1");
        let fleet: RelaySpec = text.parse().unwrap();
        assert_eq!(fleet.admin(), Some(admin));
        assert_eq!(fleet.first_relay().unwrap().node_id, id);
        assert_eq!(fleet.to_string(), text);
        assert!(matches!(
            format!("fleet:{admin}@h:1").parse::<RelaySpec>(),
            Err(Error::InvalidRelayAddress {
                problem: AddressProblem::Fleet(_),
                ..
            })
        ));
    }

    #[test]
    fn rejects_malformed() {
        let id = Identity::from_seed([1; 32]).node_id();
        for bad in [
            "relay.example.net:7443".to_owned(),
            format!("{id}@relay.example.net"),
            format!("{id}@:7443"),
            format!("{id}@host:0"),
            format!("{id}@host:99999"),
            format!("{id}@::1:7443"),
            "npabc@host:1".to_owned(),
        ] {
            assert!(
                matches!(
                    bad.parse::<RelayAddr>(),
                    Err(Error::InvalidRelayAddress { .. })
                ),
                "{bad}"
            );
        }
    }
}
