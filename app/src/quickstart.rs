//! `nullport quickstart`: the whole system on loopback, in a temporary directory, narrated.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use nullport::config_file::{NodeFile, Service, ServiceSpec};
use nullport::control::{self, ControlRequest};
use nullport::daemon::Daemon;
use nullport::home::Home;
use nullport::tasks::OwnedTask;
use nullport_keyring::{Policy, Protection, TrustStore, key_file};
use nullport_node::{NodeConfig, NodeLimits, RelayAddr};
use nullport_protocol::Identity;
use nullport_relay::{Admission, Relay, RelayConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BODY: &str = "hello from the tool host: this reply crossed the relay end-to-end encrypted\n";

fn step(n: u32, text: &str) {
    println!("\n[{n}] {text}");
}

/// A real (if tiny) HTTP server on loopback: the "tool service" the agent will call.
/// It serves until the returned task is dropped (with every connection it is serving).
async fn http_server() -> anyhow::Result<(SocketAddr, OwnedTask<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = OwnedTask::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let mut s = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((s, _)) => s,
                    Err(_) => return,
                },
                Some(_) = connections.join_next() => continue,
            };
            connections.spawn(async move {
                let mut buf = [0u8; 4096];
                let mut req = Vec::new();
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
                    BODY.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    Ok((addr, server))
}

fn make_home(root: &std::path::Path, name: &str) -> anyhow::Result<(Home, Arc<Identity>)> {
    let home = Home::at(root.join(name));
    home.create()?;
    let identity = Identity::generate().map_err(|e| anyhow!("randomness: {e}"))?;
    key_file::store(
        &home.key(),
        &identity,
        &Protection::InsecurePlaintext,
        false,
    )?;
    Ok((home, Arc::new(identity)))
}

pub async fn run() -> anyhow::Result<()> {
    let root = std::env::temp_dir().join(format!("nullport-quickstart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let result = demo(&root).await;
    let _ = std::fs::remove_dir_all(&root);
    if result.is_ok() {
        println!(
            "\nDone. Everything ran in {} (now removed).",
            root.display()
        );
        println!(
            "Next: docs/relay.md to run a relay on a VPS; `nullport --help` for the commands."
        );
    }
    result
}

async fn demo(root: &std::path::Path) -> anyhow::Result<()> {
    println!(
        "nullport quickstart: a relay and two nodes on this machine's loopback, in {}",
        root.display()
    );

    step(
        1,
        "Start a relay (the only listener in a nullport network).",
    );
    let relay_identity = Arc::new(Identity::generate().map_err(|e| anyhow!("randomness: {e}"))?);
    let relay = Relay::bind(RelayConfig::new(
        relay_identity.clone(),
        "127.0.0.1:0".parse()?,
        Arc::new(Admission::open()),
    ))
    .await?;
    let relay_addr: RelayAddr = relay.address().parse()?;
    println!(
        "    relay {} on udp {}",
        relay.node_id().fmt_short(),
        relay.local_addr()
    );
    println!("    nodes pin its key through its address: {relay_addr}");

    step(
        2,
        "Create two node identities (Ed25519): a tool host and an agent.",
    );
    let (tool_home, tool_id) = make_home(root, "tool-host")?;
    let (agent_home, agent_id) = make_home(root, "agent")?;
    println!("    tool-host  {}", tool_id.node_id());
    println!("    agent      {}", agent_id.node_id());

    step(
        3,
        "On the tool host: a real HTTP service on loopback, exposed as `web`, allowed for the agent only.",
    );
    let (web, _web_server) = http_server().await?;
    let mut config = NodeFile::default();
    config.services.insert(
        "web".into(),
        Service::new(ServiceSpec::Tcp(web.to_string())),
    );
    config.save(&tool_home.config())?;
    let mut trust = TrustStore::load(&tool_home.trust())?;
    trust.add("agent", agent_id.node_id(), false)?;
    trust.save()?;
    let mut policy = Policy::load(&tool_home.policy())?;
    policy.allow("agent", "web");
    policy.save()?;
    let mut agent_trust = TrustStore::load(&agent_home.trust())?;
    agent_trust.add("tool-host", tool_id.node_id(), false)?;
    agent_trust.save()?;
    println!(
        "    nullport expose tcp web {web}   ->  HTTP server on {web}, reachable from loopback only"
    );
    println!("    nullport allow agent web");

    step(
        4,
        "Start both daemons. Each dials OUT to the relay; neither opens a listening port.",
    );
    let tool = Daemon::start(
        tool_home.clone(),
        tool_id.clone(),
        nullport_node::RelaySpec::Single(relay_addr.clone()),
        NodeLimits::default(),
    )
    .await?;
    let agent = Daemon::start(
        agent_home.clone(),
        agent_id.clone(),
        nullport_node::RelaySpec::Single(relay_addr.clone()),
        NodeLimits::default(),
    )
    .await?;
    for (name, d) in [("tool-host", &tool), ("agent", &agent)] {
        d.node()
            .wait_online(Duration::from_secs(5))
            .await
            .with_context(|| format!("{name} did not come online"))?;
        println!(
            "    {name:<10} online: authenticated to the relay by its Ed25519 key (TLS 1.3, raw public keys), relay key pinned"
        );
    }

    step(
        5,
        "The agent calls tool-host/web: `nullport pipe tool-host/web`, then an HTTP GET.",
    );
    let started = Instant::now();
    let (response, mut stream) = control::request(
        &agent_home.socket(),
        &ControlRequest::Pipe {
            peer: "tool-host".into(),
            service: "web".into(),
            mcp: false,
            pin: false,
            token: None,
        },
    )
    .await?;
    if !response.ok {
        bail!("the call failed: {}", response.error.unwrap_or_default());
    }
    println!(
        "    Noise XX handshake through the relay: both sides proved their NodeIds end to end;"
    );
    println!(
        "    the service name travelled encrypted; the tool host checked its policy and accepted."
    );
    let request = "GET / HTTP/1.1\r\nHost: tool-host\r\nConnection: close\r\n\r\n";
    stream.get_mut().write_all(request.as_bytes()).await?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await?;
    let reply = String::from_utf8_lossy(&reply);
    let status_line = reply.lines().next().unwrap_or("");
    if !status_line.starts_with("HTTP/1.1 200") || !reply.ends_with(BODY) {
        bail!("unexpected reply: {reply:?}");
    }
    println!(
        "    {status_line}  ({} bytes up, {} bytes down, {:.1} ms incl. channel setup)",
        request.len(),
        reply.len(),
        started.elapsed().as_secs_f64() * 1e3
    );
    println!("    body: {}", BODY.trim_end());

    step(
        6,
        "Least privilege: a third node, not in the tool host's policy, tries the same service.",
    );
    let stranger_identity = Arc::new(Identity::generate().map_err(|e| anyhow!("randomness: {e}"))?);
    let stranger =
        nullport_node::Node::start(NodeConfig::new(stranger_identity, relay_addr.clone())).await?;
    stranger.wait_online(Duration::from_secs(5)).await?;
    match stranger.dial(tool_id.node_id(), "web").await {
        Err(e) => println!(
            "    refused by the tool host: {}",
            nullport::daemon::explain(&e, "tool-host", "web", &stranger.node_id())
        ),
        Ok(_) => bail!("the stranger was let in"),
    }
    match stranger.dial(agent_id.node_id(), "web").await {
        Err(e) => println!(
            "    and the agent, which exposes nothing: {}",
            nullport::daemon::explain(&e, "agent", "web", &stranger.node_id())
        ),
        Ok(_) => bail!("the agent accepted a service it does not expose"),
    }

    step(7, "What the relay saw.");
    let metrics = relay.metrics();
    let spliced = metrics
        .bytes_spliced
        .load(std::sync::atomic::Ordering::Relaxed);
    let dials = metrics.dials_ok.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "    {dials} dials spliced, {spliced} bytes forwarded: Noise ciphertext only. It never held a key,"
    );
    println!(
        "    never saw the service name, and could not have altered a byte without the channel failing."
    );

    stranger.shutdown().await;
    agent.shutdown().await;
    tool.shutdown().await;
    relay.shutdown().await;
    Ok(())
}
