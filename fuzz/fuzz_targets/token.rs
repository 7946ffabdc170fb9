//! Capability token decoding and chain verification on arbitrary bytes. Property: a chain
//! that verifies allows nothing its root did not (here the trusted root is fixed and narrow).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nullport_keyring::token::Token;
use nullport_protocol::Identity;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = Token::from_bytes(data) else { return };
    let issuer = Identity::from_seed([1; 32]).node_id();
    let presenter = token.last().body.holder;
    let callee = Identity::from_seed([9; 32]).node_id();
    if let Ok(scope) = token.verify(&presenter, &callee, "files", &[issuer], 1_800_000_000, 60) {
        // Only a chain signed by the fixed root key can verify; the fuzzer cannot forge one,
        // so reaching here means a signature check is broken.
        panic!("a forged chain verified: {scope:?}");
    }
    let _ = token.to_text();
});
