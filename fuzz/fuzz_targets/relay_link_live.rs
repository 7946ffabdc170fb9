//! Relay-link bytes inside a live, admitted connection to a real relay (one per process).
//! The body lives in `nullport_tests::fuzz::relay_link_live` so the committed corpus replays as a test.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| nullport_tests::fuzz::relay_link_live(data));
