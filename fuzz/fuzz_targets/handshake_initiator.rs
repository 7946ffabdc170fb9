//! The initiator side of the handshake: message 2 and the verdict frame from an attacker.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nullport_protocol::fuzzing;

fuzz_target!(|data: &[u8]| {
    fuzzing::initiator_messages(data);
});
