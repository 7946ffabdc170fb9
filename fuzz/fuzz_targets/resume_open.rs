//! Resumed opens: R1 and R2 from an attacker, and the request behind R1's AEAD.
//! The body lives in `nullport_tests::fuzz::resume_open` so the committed corpus replays as a test.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| nullport_tests::fuzz::resume_open(data));
