//! Capability token decoding and chain verification on arbitrary bytes. Property: a chain
//! that verifies allows nothing its root did not (here the trusted root is fixed and narrow).
//! The body lives in `nullport_tests::fuzz::token` so the committed corpus replays as a test.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| nullport_tests::fuzz::token(data));
