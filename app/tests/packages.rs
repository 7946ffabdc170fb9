//! The Debian packages (`scripts/package --install`, which `scripts/test` runs as root):
//! installed where they say, and the installed binaries run a relay and a node that talk.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::Command;

const NODE: &str = "/usr/bin/nullport";
const RELAY: &str = "/usr/bin/nullport-relay";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installed_packages_run_from_their_paths() {
    let test = "installed_packages_run_from_their_paths";
    if !Path::new(NODE).exists() || !Path::new(RELAY).exists() {
        nullport_tests::skip::not_run(
            test,
            "the Debian packages are not installed (scripts/package --install, as root)",
        );
        return;
    }
    // The installed packages are this build's version, with their units, completions and
    // man pages where Debian keeps them.
    let query = std::process::Command::new("dpkg-query")
        .args([
            "-W",
            "-f",
            "${Package} ${Version}\n",
            "nullport",
            "nullport-relay",
        ])
        .output()
        .unwrap();
    let versions = String::from_utf8_lossy(&query.stdout);
    for pkg in ["nullport", "nullport-relay"] {
        assert!(
            versions.contains(&format!("{pkg} {}", env!("CARGO_PKG_VERSION"))),
            "{versions}"
        );
    }
    for file in [
        "/lib/systemd/system/nullport.service",
        "/lib/systemd/system/nullport-relay.service",
        "/lib/systemd/system/nullport-relay-fleet.service",
        "/usr/lib/systemd/user/nullport.service",
        "/usr/share/bash-completion/completions/nullport",
        "/usr/share/bash-completion/completions/nullport-relay",
        "/usr/share/man/man1/nullport.1.gz",
        "/usr/share/man/man1/nullport-up.1.gz",
        "/usr/share/man/man1/nullport-relay.1.gz",
    ] {
        assert!(Path::new(file).exists(), "{file} is not installed");
    }
    let version = Command::new(NODE).arg("version").output().await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!(
            "nullport {} (relay link version 2)",
            env!("CARGO_PKG_VERSION")
        )
    );
    // A relay and a node, both from /usr/bin: the node comes online.
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("relay.key");
    let init = Command::new(RELAY)
        .args([
            "init",
            "--insecure-plaintext-key",
            "--public",
            "127.0.0.1",
            "--key",
        ])
        .arg(&key)
        .output()
        .await
        .unwrap();
    assert!(init.status.success());
    let port = common::free_port();
    let address = String::from_utf8_lossy(&init.stdout)
        .trim()
        .replace(":7443", &format!(":{port}"));
    let _relay = Command::new(RELAY)
        .args([
            "run",
            "--open",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--key",
        ])
        .arg(&key)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let home = dir.path().join("node");
    let node = |args: &[&str]| {
        let mut c = Command::new(NODE);
        c.arg("--home").arg(&home).args(args).stdin(Stdio::null());
        c
    };
    assert!(
        node(&["init", "--insecure-plaintext-key"])
            .status()
            .await
            .unwrap()
            .success()
    );
    let _daemon = node(&["up", "--relay", &address])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        let status = node(&["status"]).output().await.unwrap();
        if String::from_utf8_lossy(&status.stdout).contains("link     online") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(node(&["down"]).status().await.unwrap().success());
}
