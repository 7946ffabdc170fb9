//! The audit log verifier on arbitrary file contents: never panics, and never reports a log
//! as intact unless it holds a valid signed checkpoint (which the fuzzer cannot forge).
//! The body lives in `nullport_tests::fuzz::audit_verify` so the committed corpus replays as a test.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| nullport_tests::fuzz::audit_verify(data));
