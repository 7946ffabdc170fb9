//! The audit log verifier on arbitrary file contents: never panics, and never reports a log
//! as intact unless it holds a valid signed checkpoint (which the fuzzer cannot forge).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nullport_keyring::audit::verify;
use nullport_protocol::Identity;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("np-fuzz-audit-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("audit.log");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let node = Identity::from_seed([7; 32]).node_id();
    if let Ok(report) = verify(&path, &node, None) {
        assert!(!report.ok(), "an unsigned log verified: {report:?}");
    }
});
