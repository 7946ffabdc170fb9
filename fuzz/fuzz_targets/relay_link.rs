//! Relay-link message decoding (both directions). Property: whatever decodes re-encodes to
//! a message that decodes to the same value.
//! The body lives in `nullport_tests::fuzz::relay_link` so the committed corpus replays as a test.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| nullport_tests::fuzz::relay_link(data));
