//! MCP `tools/call` latency through nullport vs the same server over direct stdio.
//!
//! `cargo bench -p nullport-node --bench mcp` (2,000 calls each; `-- --quick`: 200). Needs
//! the reference servers from `scripts/install-peers`. The nullport path is complete: caller
//! daemon -> relay -> callee daemon -> JSON-RPC firewall -> server-everything's `echo`, all in
//! this process on loopback except the server itself.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nullport::config_file::{NodeFile, Service, ServiceSpec};
use nullport::control::{self, ControlRequest};
use nullport::daemon::Daemon;
use nullport::home::Home;
use nullport_keyring::{McpRules, Policy, Protection, TrustStore, key_file};
use nullport_node::{NodeLimits, RelayAddr};
use nullport_protocol::Identity;
use nullport_relay::{Admission, Relay, RelayConfig};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

async fn rpc<R: AsyncBufRead + Unpin, W: AsyncWrite + Unpin>(
    r: &mut R,
    w: &mut W,
    id: u64,
    method: &str,
    params: serde_json::Value,
) -> Res<serde_json::Value> {
    let mut line = serde_json::to_vec(
        &serde_json::json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }),
    )?;
    line.push(b'\n');
    w.write_all(&line).await?;
    w.flush().await?;
    loop {
        let mut answer = String::new();
        if r.read_line(&mut answer).await? == 0 {
            return Err("server closed".into());
        }
        let v: serde_json::Value = serde_json::from_str(&answer)?;
        if v["id"] == id {
            return Ok(v);
        }
    }
}

async fn session<R: AsyncBufRead + Unpin, W: AsyncWrite + Unpin>(
    mut r: R,
    mut w: W,
    calls: usize,
) -> Res<Vec<Duration>> {
    rpc(&mut r, &mut w, 0, "initialize", serde_json::json!({ "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": { "name": "bench", "version": "1" } })).await?;
    w.write_all(b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n")
        .await?;
    let mut samples = Vec::with_capacity(calls);
    for i in 0..calls {
        let t = Instant::now();
        let v = rpc(
            &mut r,
            &mut w,
            i as u64 + 1,
            "tools/call",
            serde_json::json!({ "name": "echo", "arguments": { "message": "ping" } }),
        )
        .await?;
        if v.get("error").is_some() {
            return Err(format!("call failed: {v}").into());
        }
        samples.push(t.elapsed());
    }
    samples.sort();
    Ok(samples)
}

fn pct(s: &[Duration], p: f64) -> f64 {
    s[((s.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e6
}

fn make_home(root: &Path, name: &str) -> Res<(Home, Arc<Identity>)> {
    let home = Home::at(root.join(name));
    home.create()?;
    let identity = Identity::generate()?;
    key_file::store(
        &home.key(),
        &identity,
        &Protection::InsecurePlaintext,
        false,
    )?;
    Ok((home, Arc::new(identity)))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Res<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let calls = if quick { 200 } else { 2_000 };
    let pkg = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/mcp-peers/node_modules/@modelcontextprotocol/server-everything");
    let entry = ["dist/index.js", "dist/stdio.js"]
        .iter()
        .map(|p| pkg.join(p))
        .find(|p| p.exists());
    let Some(entry) = entry else {
        return Err(
            "needs @modelcontextprotocol/server-everything: run scripts/install-peers first".into(),
        );
    };
    let command = vec![
        "node".to_owned(),
        entry.display().to_string(),
        "stdio".to_owned(),
    ];

    // Direct stdio.
    let mut child = tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let (stdin, stdout) = (
        child.stdin.take().ok_or("stdin")?,
        child.stdout.take().ok_or("stdout")?,
    );
    let direct = session(BufReader::new(stdout), stdin, calls).await?;
    drop(child);

    // Through nullport.
    let root = std::env::temp_dir().join(format!("nullport-mcp-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let relay = Relay::bind(RelayConfig::new(
        Arc::new(Identity::generate()?),
        "127.0.0.1:0".parse()?,
        Arc::new(Admission::open()),
    ))
    .await?;
    let relay_addr: RelayAddr = relay.address().parse()?;
    let (tool_home, tool_id) = make_home(&root, "tool")?;
    let (agent_home, agent_id) = make_home(&root, "agent")?;
    let mut config = NodeFile::default();
    config
        .services
        .insert("everything".into(), Service::new(ServiceSpec::Mcp(command)));
    config.save(&tool_home.config())?;
    let mut policy = Policy::load(&tool_home.policy())?;
    policy.set_mcp_rules(
        &agent_id.node_id().to_string(),
        "everything",
        McpRules {
            tools: vec!["echo".into()],
            ..McpRules::default()
        },
    );
    policy.save()?;
    let mut trust = TrustStore::load(&agent_home.trust())?;
    trust.add("tool", tool_id.node_id(), false)?;
    trust.save()?;
    let tool = Daemon::start(
        tool_home,
        tool_id,
        nullport_node::RelaySpec::Single(relay_addr.clone()),
        NodeLimits::default(),
    )
    .await?;
    let agent = Daemon::start(
        agent_home.clone(),
        agent_id,
        nullport_node::RelaySpec::Single(relay_addr),
        NodeLimits::default(),
    )
    .await?;
    tool.node().wait_online(Duration::from_secs(5)).await?;
    agent.node().wait_online(Duration::from_secs(5)).await?;
    let (response, stream) = control::request(
        &agent_home.socket(),
        &ControlRequest::Pipe {
            peer: "tool".into(),
            service: "everything".into(),
            mcp: true,
            pin: false,
            token: None,
        },
    )
    .await?;
    if !response.ok {
        return Err(format!("pipe refused: {:?}", response.error).into());
    }
    let (r, w) = tokio::io::split(stream);
    let through = session(BufReader::new(r), w, calls).await?;
    agent.shutdown().await;
    tool.shutdown().await;
    let _ = std::fs::remove_dir_all(&root);

    println!("MCP tools/call (server-everything echo), {calls} sequential calls each, loopback");
    println!();
    println!("| path | p50 us | p99 us |");
    println!("| --- | --- | --- |");
    println!(
        "| direct stdio | {:.0} | {:.0} |",
        pct(&direct, 0.5),
        pct(&direct, 0.99)
    );
    println!(
        "| nullport (bridge -> relay -> firewall -> stdio) | {:.0} | {:.0} |",
        pct(&through, 0.5),
        pct(&through, 0.99)
    );
    println!(
        "| ratio | {:.2} | {:.2} |",
        pct(&through, 0.5) / pct(&direct, 0.5),
        pct(&through, 0.99) / pct(&direct, 0.99)
    );
    Ok(())
}
