//! A fleet's signed relay map on arbitrary bytes: `RelayMap::verify_self_signed` on a
//! travelling `SignedRelayMap`, or the map-file reader of `run --map` and `map show`.
//! Property: what verifies is canonical, bounded, bound to the admin it names, and reads
//! back the same from its file form. The body lives in `nullport_tests::fuzz::relay_map`
//! so the committed corpus replays as a test.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| nullport_tests::fuzz::relay_map(data));
