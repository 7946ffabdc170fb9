//! Message 3's plaintext behind the AEAD (proof, service, blob), encrypted by a real initiator.
//! The body lives in `nullport_tests::fuzz::handshake_msg3_plaintext` so the committed corpus replays as a test.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| nullport_tests::fuzz::handshake_msg3_plaintext(data));
