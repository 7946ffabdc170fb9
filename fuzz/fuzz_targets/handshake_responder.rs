//! The responder side of the handshake: message 1 and message 3 from an attacker, and the
//! message 3 payload decoder behind the AEAD.
//! The body lives in `nullport_tests::fuzz::handshake_responder` so the committed corpus replays as a test.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| nullport_tests::fuzz::handshake_responder(data));
