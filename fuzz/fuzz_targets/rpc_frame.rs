//! The typed-RPC frame decoder on arbitrary bytes: never panics, every accepted frame
//! re-encodes to exactly the bytes read, and no oversize frame is awaited.
//! The body lives in `nullport_tests::fuzz::rpc_frame` so the committed corpus replays as a test.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| nullport_tests::fuzz::rpc_frame(data));
