//! Frame plaintexts on an established channel, encrypted by the peer's real transport state.
//! The body lives in `nullport_tests::fuzz::channel_plaintext` so the committed corpus replays as a test.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| nullport_tests::fuzz::channel_plaintext(data));
