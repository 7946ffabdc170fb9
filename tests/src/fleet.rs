//! [`TestFleet`]: several test relays ([`crate::TestNet`]) under one relay map signed by a
//! network admin key, and nodes of that fleet.

use std::sync::Arc;

use nullport_keyring::relay_map::{FleetBootstrap, RelayEntry, RelayMap, rendezvous_order};
use nullport_node::{Node, NodeConfig, NodeLimits};
use nullport_protocol::relay_link::SignedRelayMap;
use nullport_protocol::{Identity, NodeId};
use nullport_relay::testing::TestHooks;

use crate::{RelayOptions, TestNet};

/// Relays on loopback and the admin key of their map.
pub struct TestFleet {
    /// The relays (take one out to stop it).
    pub relays: Vec<TestNet>,
    /// The network admin key that signs their map.
    pub admin: Identity,
}

impl TestFleet {
    /// `n` open relays on loopback serving one map (version 1).
    pub async fn start(n: usize) -> TestFleet {
        TestFleet::start_with(n, |_| TestHooks::default()).await
    }

    /// A fleet whose relay `i` runs with `hooks(i)` (a tampering or tapping relay).
    pub async fn start_with(n: usize, hooks: impl Fn(usize) -> TestHooks) -> TestFleet {
        let mut relays = Vec::new();
        for i in 0..n {
            relays.push(
                TestNet::start_with(RelayOptions {
                    hooks: hooks(i),
                    ..RelayOptions::default()
                })
                .await,
            );
        }
        let admin = Identity::generate().unwrap();
        let fleet = TestFleet { relays, admin };
        let signed = fleet.map(1, &fleet.admin);
        for r in &fleet.relays {
            r.relay().handle().set_relay_map(signed.clone()).unwrap();
        }
        fleet
    }

    /// The map's relay entries, in the order of `relays`.
    pub fn entries(&self) -> Vec<RelayEntry> {
        self.relays
            .iter()
            .map(|r| RelayEntry {
                node_id: r.relay_identity.node_id(),
                addrs: vec![r.addr.to_string()],
                region: None,
            })
            .collect()
    }

    /// This fleet's map at `version`, signed by `signer` (the admin, or a forger).
    pub fn map(&self, version: u64, signer: &Identity) -> SignedRelayMap {
        RelayMap {
            admin: signer.node_id(),
            version,
            issued: 1,
            relays: self.entries(),
        }
        .sign(signer)
        .unwrap()
    }

    /// The index of `node`'s relays in its rendezvous order.
    pub fn order(&self, node: &NodeId) -> Vec<usize> {
        let entries = self.entries();
        rendezvous_order(node, &entries)
            .iter()
            .map(|e| {
                self.relays
                    .iter()
                    .position(|r| r.relay_identity.node_id() == e.node_id)
                    .unwrap()
            })
            .collect()
    }

    /// The bootstrap through relay `via`.
    pub fn bootstrap(&self, via: usize) -> FleetBootstrap {
        FleetBootstrap {
            admin: self.admin.node_id(),
            relay: self.relays[via].relay_identity.node_id(),
            addr: self.relays[via].addr.to_string(),
        }
    }

    /// Relay `i`'s NodeId.
    pub fn relay_id(&self, i: usize) -> NodeId {
        self.relays[i].relay_identity.node_id()
    }

    /// A node of this fleet (bootstrapped through relay `via`) with `limits`, not yet
    /// waited for.
    pub async fn node(&self, identity: Identity, via: usize, limits: NodeLimits) -> Node {
        let mut config = NodeConfig::fleet(Arc::new(identity), &self.bootstrap(via)).unwrap();
        config.limits = limits;
        Node::start(config).await.unwrap()
    }

    /// Identities whose home is relay `home` (the first `count` found).
    pub fn homed_on(&self, home: usize, count: usize) -> Vec<Identity> {
        let mut found = Vec::new();
        while found.len() < count {
            let id = Identity::generate().unwrap();
            if self.order(&id.node_id())[0] == home {
                found.push(id);
            }
        }
        found
    }
}
