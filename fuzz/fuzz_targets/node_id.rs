//! NodeId parsing: text and bytes. Anything that parses must print back identically.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nullport_protocol::NodeId;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(id) = text.parse::<NodeId>()
    {
        assert_eq!(id.to_string(), text);
    }
    if let Ok(id) = NodeId::from_slice(data) {
        assert_eq!(&id.as_bytes()[..], data);
    }
});
