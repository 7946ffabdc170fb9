//! The README's deployment walkthrough, run as written on three network-namespace hosts by
//! `scripts/walkthrough` (which reads the commands from README.md).
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::*;

#[test]
fn the_readme_walkthrough_runs_as_written() {
    if !require(
        "the_readme_walkthrough_runs_as_written",
        &[
            "ip",
            "nft",
            "unshare",
            "ssh",
            "ssh-keygen",
            "curl",
            "python3",
        ],
    ) {
        return;
    }
    let root = std::process::Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&root.stdout).trim() != "0" {
        nullport_tests::skip::not_run("the_readme_walkthrough_runs_as_written", "needs root");
        return;
    }
    let bin = Path::new(NULLPORT).parent().unwrap();
    assert!(
        bin.join("nullport-relay").exists(),
        "build the workspace first (nullport-relay is not in {})",
        bin.display()
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/walkthrough");
    let out = std::process::Command::new(script)
        .arg(bin)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(
            "walkthrough: all 5 blocks ran; the laptop reached the server's ssh and web with no inbound port open"
        ),
        "{stdout}"
    );
}
