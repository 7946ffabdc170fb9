//! Message 2's plaintext behind the AEAD (the identity proof's place), encrypted by a real responder.
//! The body lives in `nullport_tests::fuzz::handshake_msg2_plaintext` so the committed corpus replays as a test.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| nullport_tests::fuzz::handshake_msg2_plaintext(data));
