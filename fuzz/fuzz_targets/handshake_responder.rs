//! The responder side of the handshake: message 1 and message 3 from an attacker, and the
//! message 3 payload decoder behind the AEAD.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nullport_protocol::fuzzing;

fuzz_target!(|data: &[u8]| {
    if let Some((&selector, rest)) = data.split_first() {
        if selector & 1 == 0 {
            fuzzing::responder_messages(rest);
        } else {
            let _ = fuzzing::decode_msg3_payload(rest);
        }
    }
});
