//! Relay-link message decoding (both directions). Property: whatever decodes re-encodes to
//! a message that decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nullport_protocol::relay_link::{self, NodeToRelay, RelayToNode};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = relay_link::decode::<NodeToRelay>(data) {
        let mut out = Vec::new();
        relay_link::encode(&m, &mut out);
        assert_eq!(relay_link::decode::<NodeToRelay>(&out[2..]).ok(), Some(m));
    }
    if let Ok(m) = relay_link::decode::<RelayToNode>(data) {
        let mut out = Vec::new();
        relay_link::encode(&m, &mut out);
        assert_eq!(relay_link::decode::<RelayToNode>(&out[2..]).ok(), Some(m));
    }
    if data.len() >= 2 {
        let _ = relay_link::decode_len([data[0], data[1]], relay_link::MAX_LINK_MESSAGE);
    }
});
