//! The deframer and an established channel's reader on arbitrary bytes, split arbitrarily.
//! The body lives in `nullport_tests::fuzz::frame_decoder` so the committed corpus replays as a test.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| nullport_tests::fuzz::frame_decoder(data));
