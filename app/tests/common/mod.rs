//! The harness the `nullport` binary tests share: a relay on loopback, daemons with their own
//! homes (`nullport up`), running `nullport` commands, and the real peers' paths.
#![allow(dead_code, missing_docs, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nullport_protocol::Identity;
use nullport_tests::{RelayOptions, TestNet, fast_limits};
use tokio::process::{Child, Command};

pub const NULLPORT: &str = env!("CARGO_BIN_EXE_nullport");

pub struct Out {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

pub async fn nullport(home: &Path, args: &[&str]) -> Out {
    let out = Command::new(NULLPORT)
        .arg("--home")
        .arg(home)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("running nullport: {e}"));
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub async fn ok(home: &Path, args: &[&str]) -> String {
    let out = nullport(home, args).await;
    assert!(out.ok, "nullport {args:?} failed: {}", out.stderr);
    out.stdout
}

pub async fn fails(home: &Path, args: &[&str]) -> String {
    let out = nullport(home, args).await;
    assert!(
        !out.ok,
        "nullport {args:?} should fail; said {}",
        out.stdout
    );
    out.stderr
}

/// Daemons (`nullport up`, each with its own home) on the shared test relay
/// ([`nullport_tests::TestNet`]: the same harness as the library's integration tests).
pub struct Net {
    pub dir: tempfile::TempDir,
    pub relay: TestNet,
    pub daemons: Vec<Child>,
}

impl Net {
    /// An open relay on loopback and an empty directory for homes.
    pub async fn start() -> Net {
        Net {
            dir: tempfile::tempdir().unwrap(),
            relay: TestNet::start().await,
            daemons: Vec::new(),
        }
    }

    /// The relay address daemons use (`<relay NodeId>@127.0.0.1:<port>`).
    pub fn relay_address(&self) -> String {
        self.relay.relay_addr().to_string()
    }

    /// Stops the relay and starts a new one with the same key and port (and no state).
    pub async fn restart_relay(&mut self) {
        self.relay.restart(RelayOptions::default()).await;
    }

    /// A node of the test itself (the `nullport-node` library), online.
    pub async fn library_node(&self) -> (nullport_node::Node, Arc<Identity>) {
        let identity = Arc::new(Identity::generate().unwrap());
        let node = self
            .relay
            .node_unchecked(identity.clone(), fast_limits())
            .await;
        node.wait_online(Duration::from_secs(5)).await.unwrap();
        (node, identity)
    }

    /// A new node home with an identity; returns (home, NodeId text).
    pub async fn node(&self, name: &str) -> (PathBuf, String) {
        let home = self.dir.path().join(name);
        let id = ok(&home, &["init", "--insecure-plaintext-key"])
            .await
            .trim()
            .to_owned();
        assert!(id.starts_with("np") && id.len() == 54, "{id}");
        (home, id)
    }

    /// Runs `nullport up` for `home` and waits until its link is online.
    pub async fn up(&mut self, home: &Path) {
        self.up_with(home, &[]).await;
    }

    /// Runs `nullport up` for `home` and waits until its link says it is refused for `why`.
    pub async fn up_refused(&mut self, home: &Path, why: &str) {
        let child = Command::new(NULLPORT)
            .arg("--home")
            .arg(home)
            .args(["up", "--relay", &self.relay_address()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.daemons.push(child);
        let started = Instant::now();
        loop {
            let out = nullport(home, &["status"]).await;
            if out.ok && out.stdout.contains("link     refused") && out.stdout.contains(why) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "daemon not refused for {why:?}: {} {}",
                out.stdout,
                out.stderr
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The same, with extra environment variables for the daemon.
    pub async fn up_with(&mut self, home: &Path, env: &[(&str, &str)]) {
        let child = Command::new(NULLPORT)
            .arg("--home")
            .arg(home)
            .args(["up", "--relay", &self.relay_address()])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.daemons.push(child);
        let started = Instant::now();
        loop {
            let out = nullport(home, &["status"]).await;
            if out.ok && out.stdout.contains("link     online") {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "daemon not online: {} {}",
                out.stdout,
                out.stderr
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Two daemons, `tool` (callee) and `agent` (caller), each trusting the other by alias.
pub async fn pair() -> (Net, PathBuf, PathBuf) {
    let mut net = Net::start().await;
    let (tool, tool_id) = net.node("tool").await;
    let (agent, agent_id) = net.node("agent").await;
    ok(&tool, &["trust", "add", "agent", &agent_id]).await;
    ok(&agent, &["trust", "add", "tool", &tool_id]).await;
    net.up(&tool).await;
    net.up(&agent).await;
    (net, tool, agent)
}

/// True when every tool is present; otherwise the test is reported as not run.
pub fn require(test: &str, tools: &[&str]) -> bool {
    nullport_tests::skip::require(test, tools)
}

/// The Python of the venv `scripts/install-peers` makes (with the official MCP SDK).
pub fn peers_python() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/py-peers/bin/python")
}

/// Starts `nullport pipe TARGET` with its standard streams piped; returns it and its stdin.
pub fn spawn_pipe(
    home: &Path,
    target: &str,
) -> (tokio::process::Child, tokio::process::ChildStdin) {
    let mut child = Command::new(NULLPORT)
        .arg("--home")
        .arg(home)
        .args(["pipe", target])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap_or_else(|| panic!("stdin"));
    (child, stdin)
}

pub async fn pipe_output(home: &Path, target: &str) -> String {
    let out = Command::new(NULLPORT)
        .arg("--home")
        .arg(home)
        .args(["pipe", target])
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

pub async fn wait_tcp(port: u16) {
    let started = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "nothing listens on {port}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn mcp_peers(test: &str) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/mcp-peers/node_modules/@modelcontextprotocol");
    let sdk = std::process::Command::new(peers_python())
        .args(["-c", "import mcp.client.stdio"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if dir.join("server-filesystem/dist/index.js").exists()
        && dir.join("server-everything").exists()
        && sdk
        && nullport_tests::skip::have("node")
    {
        return Some(dir);
    }
    nullport_tests::skip::not_run(
        test,
        "MCP peers missing: run scripts/install-peers (npm MCP servers, Python mcp SDK in target/py-peers)",
    );
    None
}

/// Runs the Python SDK client through `nullport mcp bridge` and returns its JSON report.
pub async fn sdk_client(home: &Path, target: &str, calls: serde_json::Value) -> serde_json::Value {
    sdk_client_with(home, &[target], calls).await
}

/// [`sdk_client`], with more arguments for `nullport mcp bridge` (the target among them).
pub async fn sdk_client_with(
    home: &Path,
    bridge_args: &[&str],
    calls: serde_json::Value,
) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp_client.py");
    let mut bridge = vec![
        serde_json::json!(NULLPORT),
        serde_json::json!("--home"),
        serde_json::json!(home),
        serde_json::json!("mcp"),
        serde_json::json!("bridge"),
    ];
    bridge.extend(bridge_args.iter().map(|a| serde_json::json!(a)));
    let bridge = serde_json::Value::Array(bridge);
    let out = Command::new(peers_python())
        .arg(&script)
        .arg(bridge.to_string())
        .arg(calls.to_string())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "SDK client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

pub async fn pipe_output_with(home: &Path, target: &str, token: &str) -> Option<String> {
    let out = Command::new(NULLPORT)
        .arg("--home")
        .arg(home)
        .args(["pipe", target, "--token", token])
        .stdin(Stdio::null())
        .output()
        .await
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}
