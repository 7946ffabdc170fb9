//! The policy and trust-store parsers on arbitrary text (input: `policy \0 trust`). Property:
//! never panics, and a policy that parses renders to text that parses back to the same
//! decisions (so `nullport allow` / `mcp allow` rewriting the file never changes meaning).
//! The body lives in `nullport_tests::fuzz::policy` so the committed corpus replays as a test.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| nullport_tests::fuzz::policy(data));
