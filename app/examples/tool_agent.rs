//! A custom agent that exposes a tool, and another that calls it, with the `nullport_node`
//! library (no daemon). Runs a relay in-process so it works on its own:
//!
//! ```sh
//! cargo run -p nullport-node --example tool_agent
//! ```
//!
//! Against a real relay, start the tool side with `tool_agent serve <relay address>` (it
//! prints its NodeId) and the caller with `tool_agent call <relay address> <tool NodeId>`.

use std::sync::Arc;
use std::time::Duration;

use nullport_node::{Handlers, Node, NodeConfig, RelayAddr};
use nullport_protocol::{Identity, NodeId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The tool: reads a line of text, answers with its word count.
async fn word_count(mut channel: nullport_node::Channel) {
    let mut input = Vec::new();
    if channel.read_to_end(&mut input).await.is_err() {
        return;
    }
    let words = String::from_utf8_lossy(&input).split_whitespace().count();
    let _ = channel
        .write_all(format!("{words} words\n").as_bytes())
        .await;
    let _ = channel.shutdown().await;
}

async fn start(relay: &RelayAddr) -> Result<Arc<Node>, Box<dyn std::error::Error>> {
    let identity = Arc::new(Identity::generate()?);
    let node = Node::start(NodeConfig::new(identity, relay.clone())).await?;
    node.wait_online(Duration::from_secs(5)).await?;
    Ok(Arc::new(node))
}

async fn serve(
    relay: RelayAddr,
    only: Option<NodeId>,
) -> Result<Arc<Node>, Box<dyn std::error::Error>> {
    let tool = start(&relay).await?;
    println!("tool agent {} serving `wc`", tool.node_id());
    let server = tool.clone();
    tokio::spawn(async move {
        let handlers = Handlers::new().add("wc", word_count);
        // Least privilege at the callee: only the given caller (or anyone, if none given).
        server
            .serve(handlers, move |peer, _service| {
                only.is_none_or(|o| o == peer)
            })
            .await;
    });
    Ok(tool)
}

async fn call(node: &Node, tool: NodeId, text: &str) -> Result<String, Box<dyn std::error::Error>> {
    let mut channel = node.dial(tool, "wc").await?;
    channel.write_all(text.as_bytes()).await?;
    channel.shutdown().await?;
    let mut answer = String::new();
    channel.read_to_string(&mut answer).await?;
    Ok(answer)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["serve", relay] => {
            let _tool = serve(relay.parse()?, None).await?;
            std::future::pending::<()>().await;
            Ok(())
        }
        ["call", relay, tool] => {
            let caller = start(&relay.parse()?).await?;
            print!(
                "{}",
                call(&caller, tool.parse()?, "the quick brown fox").await?
            );
            Ok(())
        }
        [] => {
            // Self-contained: an in-process relay on loopback.
            let relay_identity = Arc::new(Identity::generate()?);
            let relay = nullport_relay::Relay::bind(nullport_relay::RelayConfig::new(
                relay_identity,
                "127.0.0.1:0".parse()?,
                Arc::new(nullport_relay::Admission::open()),
            ))
            .await?;
            let relay_addr: RelayAddr = relay.address().parse()?;
            let caller = start(&relay_addr).await?;
            let tool = serve(relay_addr.clone(), Some(caller.node_id())).await?;
            println!(
                "caller agent {} asks: the quick brown fox jumps",
                caller.node_id()
            );
            print!(
                "answer: {}",
                call(&caller, tool.node_id(), "the quick brown fox jumps").await?
            );
            let stranger = start(&relay_addr).await?;
            match call(&stranger, tool.node_id(), "let me in").await {
                Err(e) => println!("a stranger is refused: {e}"),
                Ok(a) => println!("unexpected: stranger got {a}"),
            }
            Ok(())
        }
        _ => {
            eprintln!("usage: tool_agent [serve <relay> | call <relay> <tool NodeId>]");
            std::process::exit(2);
        }
    }
}
