//! Signed statements that travel through the relay and are checked by whoever receives them:
//! revocation lists, key rotations, relay invites, and a fleet's relay map.

pub mod invite;
pub mod relay_map;
pub mod revocation;
pub mod rotation;
