//! nullport's integration tests: one test binary, a module per area.
#![allow(missing_docs)]

mod exhaustion;
mod faults;
mod full_disk;
mod fuzz_replay;
mod key_and_handshake;
mod netns;
mod relay;
