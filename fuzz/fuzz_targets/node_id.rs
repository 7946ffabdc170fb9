//! NodeId parsing: text and bytes. Anything that parses must print back identically.
//! The body lives in `nullport_tests::fuzz::node_id` so the committed corpus replays as a test.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| nullport_tests::fuzz::node_id(data));
