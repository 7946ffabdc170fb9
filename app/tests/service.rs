//! The node as a service: `nullport down`, SIGHUP, a configuration that fails to load, a
//! background start with an encrypted key, systemd credentials, a dial while the relay link
//! is down, and the systemd units themselves.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use tokio::process::Command;

/// Sends `signal` (a `kill -s` name) to `pid`.
async fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .status()
        .await
        .unwrap();
    assert!(status.success());
}

/// Waits until `status` output satisfies `check`, or fails after 10 s with the last output.
async fn status_until(home: &Path, check: impl Fn(&str) -> bool) -> String {
    let started = Instant::now();
    loop {
        let out = nullport(home, &["status"]).await;
        if out.ok && check(&out.stdout) {
            return out.stdout;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "status never matched: {} {}",
            out.stdout,
            out.stderr
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_stops_the_daemon_cleanly() {
    let mut net = Net::start().await;
    let (home, _) = net.node("a").await;
    net.up(&home).await;
    let said = ok(&home, &["down"]).await;
    assert_eq!(
        said.trim(),
        format!("stopped the nullport daemon for {}", home.display())
    );
    let mut daemon = net.daemons.remove(0);
    let exit = tokio::time::timeout(Duration::from_secs(5), daemon.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    assert!(!home.join("nullport.sock").exists());
    let e = fails(&home, &["status"]).await;
    assert!(e.contains("the nullport daemon is not running"), "{e}");
    // With no daemon, `down` says so and fails.
    let e = fails(&home, &["down"]).await;
    assert!(e.contains("the nullport daemon is not running"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_a_broken_file_keeps_the_previous_configuration() {
    let (net, tool, agent) = pair().await;
    let pid = net.daemons[0].id().unwrap();
    ok(&tool, &["expose", "exec", "hello", "--", "echo", "hi"]).await;
    // The operator edits the policy by hand and breaks it, then sends SIGHUP.
    let policy = tool.join("policy.toml");
    let good = std::fs::read_to_string(&policy).unwrap_or_default();
    std::fs::write(&policy, "[services.hello\nallow = [").unwrap();
    signal(pid, "HUP").await;
    let status = status_until(&tool, |s| s.contains("NOT IN FORCE")).await;
    assert!(
        status.contains(&format!("config   NOT IN FORCE: {}", policy.display())),
        "{status}"
    );
    // The daemon lives on with what it had.
    assert!(nullport(&tool, &["status"]).await.ok);
    // The operator fixes it and grants the agent the service by hand: SIGHUP applies it.
    let agent_id = ok(&agent, &["id"]).await;
    std::fs::write(
        &policy,
        format!(
            "{good}\n[services.hello]\nallow = [\"{}\"]\n",
            agent_id.trim()
        ),
    )
    .unwrap();
    signal(pid, "HUP").await;
    status_until(&tool, |s| !s.contains("NOT IN FORCE")).await;
    assert_eq!(pipe_output(&agent, "tool/hello").await, "hi\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_key_never_blocks_a_background_start() {
    let net = Net::start().await;
    let home = net.dir.path().join("enc");
    let pass = net.dir.path().join("pass");
    std::fs::write(&pass, "correct horse battery staple\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    ok(
        &home,
        &["init", "--passphrase-file", pass.to_str().unwrap()],
    )
    .await;
    // Started with no terminal (as `&`, a supervisor or a unit would): a clear error at
    // once, naming every way to give the passphrase.
    let started = Instant::now();
    let e = fails(&home, &["up", "--relay", &net.relay_address()]).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        e.contains("the key is encrypted and there is no terminal in the foreground to ask for its passphrase (stdin is not a terminal); give it with --passphrase-file FILE, $NULLPORT_PASSPHRASE, or a systemd credential named nullport-passphrase"),
        "{e}"
    );
    // A systemd credential (LoadCredential=nullport-passphrase:...) is read without a prompt.
    let credentials = net.dir.path().join("credentials");
    std::fs::create_dir_all(&credentials).unwrap();
    std::fs::copy(&pass, credentials.join("nullport-passphrase")).unwrap();
    let mut daemon = Command::new(NULLPORT)
        .arg("--home")
        .arg(&home)
        .args(["up", "--relay", &net.relay_address()])
        .env("CREDENTIALS_DIRECTORY", &credentials)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    status_until(&home, |s| s.contains("link     online")).await;
    daemon.start_kill().unwrap();
    let _ = daemon.wait().await;
    // The passphrase in the environment (the documented unattended way) opens the key, and
    // is gone from the daemon's environment once read.
    let mut daemon = Command::new(NULLPORT)
        .arg("--home")
        .arg(&home)
        .args(["up", "--relay", &net.relay_address()])
        .env("NULLPORT_PASSPHRASE", "correct horse battery staple")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    status_until(&home, |s| s.contains("link     online")).await;
    let environ = std::fs::read(format!("/proc/{}/environ", daemon.id().unwrap())).unwrap();
    assert!(!String::from_utf8_lossy(&environ).contains("correct horse"));
    daemon.start_kill().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_passphrases_are_checked() {
    let net = Net::start().await;
    let pass = net.dir.path().join("short");
    std::fs::write(&pass, "1234567\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let home = net.dir.path().join("n");
    let e = fails(
        &home,
        &["init", "--passphrase-file", pass.to_str().unwrap()],
    )
    .await;
    assert!(
        e.contains("passphrase too short: use at least 8 characters (or --insecure-plaintext-key to store the key unencrypted)"),
        "{e}"
    );
    assert!(!home.join("identity.key").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_while_the_link_is_down_fails_at_once_with_the_reason() {
    let (mut net, tool, agent) = pair().await;
    ok(&tool, &["expose", "exec", "hello", "--", "echo", "hi"]).await;
    ok(&tool, &["allow", "agent", "hello"]).await;
    assert_eq!(pipe_output(&agent, "tool/hello").await, "hi\n");
    // The relay goes away: the agent's daemon knows at once, and says so to a dial.
    if let Some(relay) = net.relay.relay.take() {
        relay.shutdown().await;
    }
    status_until(&agent, |s| s.contains("link     connecting")).await;
    let started = Instant::now();
    let e = fails(&agent, &["pipe", "tool/hello"]).await;
    let took = started.elapsed();
    eprintln!("a dial while the link is down failed after {took:?}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(
        e.contains("cannot reach tool: the relay link is down (connecting (attempt"),
        "{e}"
    );
    assert!(e.contains("see `nullport status`"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mistyped_node_id_says_what_is_wrong() {
    let (_net, _tool, agent) = pair().await;
    let id = ok(&agent, &["id"]).await;
    let typo = format!("{}x", id.trim());
    let e = fails(&agent, &["pipe", &format!("{typo}/ssh")]).await;
    assert!(
        e.contains(&format!("{typo:?} is not a valid NodeId")),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_allowed_names_the_callers_node_id() {
    let (_net, tool, agent) = pair().await;
    ok(&tool, &["expose", "exec", "hello", "--", "echo", "hi"]).await;
    let agent_id = ok(&agent, &["id"]).await;
    let e = fails(&agent, &["pipe", "tool/hello"]).await;
    assert!(
        e.contains(&format!(
            "tool refused \"hello\": not allowed (its operator can run `nullport allow {} hello`)",
            agent_id.trim()
        )),
        "{e}"
    );
}

/// The units in `dist/` pass `systemd-analyze verify` (ExecStart is `/usr/bin/env nullport`,
/// so the same unit serves the .deb in /usr/bin and `cargo install` in /usr/local/bin).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_units_verify() {
    if !require("systemd_units_verify", &["systemd-analyze"]) {
        return;
    }
    let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist");
    for unit in [
        "nullport.service",
        "nullport-user.service",
        "nullport-relay.service",
        "nullport-relay-fleet.service",
    ] {
        let path = dist.join(unit);
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&path)
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        // verify reports problems on stderr; lines about the host's own units are not ours.
        let ours: Vec<&str> = stderr.lines().filter(|l| l.contains(unit)).collect();
        assert!(out.status.success() && ours.is_empty(), "{unit}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expose_and_trust_add_replace_only_when_asked() {
    let net = Net::start().await;
    let (home, _) = net.node("a").await;
    ok(&home, &["expose", "tcp", "web", "127.0.0.1:8080"]).await;
    let again = ok(&home, &["expose", "tcp", "web", "127.0.0.1:8080"]).await;
    assert_eq!(again.trim(), "web is already exposed: tcp 127.0.0.1:8080");
    let e = fails(&home, &["expose", "tcp", "web", "127.0.0.1:8081"]).await;
    assert!(
        e.contains("a service named \"web\" is already exposed (tcp 127.0.0.1:8080); pass --replace to make it tcp 127.0.0.1:8081"),
        "{e}"
    );
    ok(
        &home,
        &["expose", "tcp", "web", "127.0.0.1:8081", "--replace"],
    )
    .await;
    let config = std::fs::read_to_string(home.join("config.toml")).unwrap();
    assert!(config.contains("127.0.0.1:8081") && !config.contains("127.0.0.1:8080"));
    let (first, second) = (
        nullport_protocol::Identity::from_seed([1; 32]).node_id(),
        nullport_protocol::Identity::from_seed([2; 32]).node_id(),
    );
    ok(&home, &["trust", "add", "peer", &first.to_string()]).await;
    let e = fails(&home, &["trust", "add", "peer", &second.to_string()]).await;
    assert!(
        e.contains(&format!(
            "alias \"peer\" already names {first} (pass --replace to point it at the new NodeId)"
        )),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_completions_and_man_pages_come_from_the_commands() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("h");
    let version: serde_json::Value =
        serde_json::from_str(&ok(&home, &["version", "--json"]).await).unwrap();
    assert_eq!(version["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(version["relay_link_version"], 2);
    for shell in ["bash", "zsh", "fish"] {
        let script = ok(&home, &["completions", shell]).await;
        // Every command is in the completions (they come from the clap definitions).
        for command in ["up", "down", "pipe", "expose", "audit", "version"] {
            assert!(script.contains(command), "{shell}: {command}");
        }
    }
    let man = dir.path().join("man1");
    ok(&home, &["man", "--dir", man.to_str().unwrap()]).await;
    for page in [
        "nullport.1",
        "nullport-up.1",
        "nullport-down.1",
        "nullport-audit-export.1",
    ] {
        let text = std::fs::read_to_string(man.join(page)).unwrap();
        assert!(
            text.starts_with(".ie \\n(.g") || text.contains(".TH"),
            "{page}"
        );
    }
    let e = fails(&home, &["completions", "tcsh"]).await;
    assert!(e.contains("invalid value 'tcsh'"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_and_daemon_never_silently_disagree() {
    let (_net, tool, _agent) = pair().await;
    let policy = tool.join("policy.toml");
    std::fs::write(&policy, "[services.web\n").unwrap();
    // A command that edits another file: written, but the daemon cannot load the set, and
    // the command says so and fails.
    let other = nullport_protocol::Identity::from_seed([9; 32]).node_id();
    let e = fails(&tool, &["trust", "add", "other", &other.to_string()]).await;
    assert!(
        e.contains("the change is written, but the running daemon cannot load the configuration and keeps the previous one:"),
        "{e}"
    );
    assert!(e.contains(&policy.display().to_string()), "{e}");
    let status = ok(&tool, &["status"]).await;
    assert!(status.contains("config   NOT IN FORCE"), "{status}");
    // A command that edits the broken file refuses before writing anything.
    let before = std::fs::read_to_string(&policy).unwrap();
    let e = fails(&tool, &["allow", "other", "web"]).await;
    assert!(e.contains(&policy.display().to_string()), "{e}");
    assert_eq!(std::fs::read_to_string(&policy).unwrap(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_metrics_and_json_logs() {
    let mut net = Net::start().await;
    let (tool, tool_id) = net.node("tool").await;
    let (agent, agent_id) = net.node("agent").await;
    ok(&tool, &["trust", "add", "agent", &agent_id]).await;
    ok(&agent, &["trust", "add", "tool", &tool_id]).await;
    ok(&tool, &["expose", "exec", "hello", "--", "echo", "hi"]).await;
    let port = free_port();
    let metrics = format!("127.0.0.1:{port}");
    // A non-loopback metrics address is refused.
    let e = fails(
        &tool,
        &[
            "up",
            "--relay",
            &net.relay_address(),
            "--metrics",
            "0.0.0.0:9478",
        ],
    )
    .await;
    assert!(
        e.contains(
            "metrics listen on loopback only (127.0.0.1:PORT or [::1]:PORT), not 0.0.0.0:9478"
        ),
        "{e}"
    );
    let mut daemon = Command::new(NULLPORT)
        .arg("--home")
        .arg(&tool)
        .args([
            "--log-format",
            "json",
            "up",
            "--relay",
            &net.relay_address(),
        ])
        .args(["--metrics", &metrics])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    status_until(&tool, |s| s.contains("link     online")).await;
    net.up(&agent).await;
    // One refused channel (not allowed), then one accepted.
    fails(&agent, &["pipe", "tool/hello"]).await;
    ok(&tool, &["allow", "agent", "hello"]).await;
    assert_eq!(pipe_output(&agent, "tool/hello").await, "hi\n");
    let scrape = || async {
        let mut stream = tokio::net::TcpStream::connect(&metrics).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut stream, b"GET /metrics HTTP/1.0\r\n\r\n")
            .await
            .unwrap();
        let mut text = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut text)
            .await
            .unwrap();
        text
    };
    let text = scrape().await;
    for line in [
        "nullport_node_link_up 1\n",
        "nullport_node_incoming_channels_total{outcome=\"accepted\"} 1\n",
        "nullport_node_incoming_channels_total{outcome=\"denied\"} 1\n",
        "nullport_node_channel_bytes_total{direction=\"out\"} 3\n",
    ] {
        assert!(text.contains(line), "{line} not in {text}");
    }
    // JSON logs: every line an object.
    daemon.start_kill().unwrap();
    let out = daemon.wait_with_output().await.unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    let json_lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(json_lines.len() >= 3, "{log}");
    // Every line, the daemon's own announcements included.
    for l in json_lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert!(v["level"].is_string() && v["fields"].is_object(), "{l}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_edits_are_never_lost() {
    let net = Net::start().await;
    let (home, _) = net.node("a").await;
    let (b, c) = (
        nullport_protocol::Identity::from_seed([2; 32]).node_id(),
        nullport_protocol::Identity::from_seed([3; 32]).node_id(),
    );
    ok(&home, &["trust", "add", "bnode", &b.to_string()]).await;
    ok(&home, &["trust", "add", "cnode", &c.to_string()]).await;
    for round in 0..8 {
        let policy = home.join("policy.toml");
        let _ = std::fs::remove_file(&policy);
        ok(&home, &["allow", "bnode", "echo"]).await;
        // A deny and an allow of other things at the same moment: both land.
        let (denied, allowed) = tokio::join!(
            nullport(&home, &["deny", "bnode", "echo"]),
            nullport(&home, &["allow", "cnode", "web"]),
        );
        assert!(
            denied.ok && allowed.ok,
            "{} {}",
            denied.stderr,
            allowed.stderr
        );
        let text = std::fs::read_to_string(&policy).unwrap();
        assert!(
            !text.contains(&b.to_string()) && !text.contains("bnode"),
            "round {round}: {text}"
        );
        assert!(text.contains("cnode"), "round {round}: {text}");
    }
    // A service name that is not one is refused before anything is written.
    let e = fails(&home, &["allow", "bnode", "../../x"]).await;
    assert!(e.contains("invalid service name \"../../x\""), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_is_safe_from_sighup_and_checks_metrics_first() {
    let net = Net::start().await;
    let home = net.dir.path().join("enc");
    let pass = net.dir.path().join("pass");
    std::fs::write(&pass, "correct horse battery staple\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    ok(
        &home,
        &["init", "--passphrase-file", pass.to_str().unwrap()],
    )
    .await;
    // A metrics port that is taken: the start fails before the daemon runs (no socket left).
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let e = fails(
        &home,
        &[
            "up",
            "--relay",
            &net.relay_address(),
            "--passphrase-file",
            pass.to_str().unwrap(),
            "--metrics",
            &format!("127.0.0.1:{port}"),
        ],
    )
    .await;
    assert!(
        e.contains(&format!("metrics listener 127.0.0.1:{port}: ")),
        "{e}"
    );
    assert!(!home.join("nullport.sock").exists());
    // SIGHUP while the key is being decrypted (a reload right after a start): the daemon
    // lives and comes online.
    let mut daemon = Command::new(NULLPORT)
        .arg("--home")
        .arg(&home)
        .args(["up", "--relay", &net.relay_address(), "--passphrase-file"])
        .arg(&pass)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    signal(daemon.id().unwrap(), "HUP").await;
    status_until(&home, |s| s.contains("link     online")).await;
    assert!(
        daemon.try_wait().unwrap().is_none(),
        "the daemon died of SIGHUP"
    );
    // A relay change on disk is applied at the next start, and status says so.
    let config = home.join("config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let other = format!(
        "{}@127.0.0.1:9",
        nullport_protocol::Identity::from_seed([5; 32]).node_id()
    );
    std::fs::write(&config, text.replace(&net.relay_address(), &other)).unwrap();
    ok(&home, &["reload"]).await;
    let status = ok(&home, &["status"]).await;
    assert!(
        status.contains(
            "config   relay changed in config.toml: takes effect when the daemon restarts"
        ),
        "{status}"
    );
    // `down` returns once the daemon is done: it exits right after.
    ok(&home, &["down"]).await;
    let exit = tokio::time::timeout(Duration::from_secs(1), daemon.wait()).await;
    assert!(matches!(exit, Ok(Ok(s)) if s.success()), "{exit:?}");
}
