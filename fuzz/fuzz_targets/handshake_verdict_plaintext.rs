//! The verdict frame's plaintext behind the AEAD, after a real handshake.
//! The body lives in `nullport_tests::fuzz::handshake_verdict_plaintext` so the committed corpus replays as a test.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| nullport_tests::fuzz::handshake_verdict_plaintext(data));
