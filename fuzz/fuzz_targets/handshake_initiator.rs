//! The initiator side of the handshake: message 2 and the verdict frame from an attacker.
//! The body lives in `nullport_tests::fuzz::handshake_initiator` so the committed corpus replays as a test.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| nullport_tests::fuzz::handshake_initiator(data));
