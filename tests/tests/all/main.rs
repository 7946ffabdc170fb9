//! nullport's integration tests: one test binary, a module per area.
// A failed unwrap is how a test reports a failure (clippy.toml allows it inside #[test]
// functions; the helpers of an integration test need it too).
#![allow(missing_docs, clippy::unwrap_used)]

mod exhaustion;
mod faults;
mod first_bytes;
mod fleet;
mod fleet_netns;
mod fleet_store;
mod full_disk;
mod fuzz_replay;
mod grpc;
mod key_and_handshake;
mod netns;
mod relay;
mod resume;
mod rpc;
mod rpc_attacks;
mod rpc_policy;
