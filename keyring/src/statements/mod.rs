//! Signed statements that travel through the relay and are checked by whoever receives them:
//! revocation lists, key rotations, and relay invites.

pub mod invite;
pub mod revocation;
pub mod rotation;
