//! The key-file loader on arbitrary file contents.
//! The body lives in `nullport_tests::fuzz::key_file` so the committed corpus replays as a test.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| nullport_tests::fuzz::key_file(data));
