//! The embedded MCP service over a real relay and two real nodes: an in-process server behind
//! the firewall, the caller side with its receipts, refusals, and access taken away live.

use std::sync::Arc;
use std::time::Duration;

use nullport_node::Node;
use nullport_protocol::{DenyReason, Identity};
use nullport_tests::TestNet;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream};
use tokio::sync::mpsc;

use super::*;
use crate::mcp::{CheckedReceipt, Embedded, Session, caller_pipe_with};

/// A minimal MCP server (one tool list, an `echo` tool), serving one stream until it ends.
async fn tiny_server(stream: DuplexStream, events: mpsc::UnboundedSender<String>) {
    let (r, mut w) = tokio::io::split(stream);
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let (Some(id), Some(method)) = (v.get("id"), v["method"].as_str()) else {
            continue;
        };
        let result = match method {
            "initialize" => json!({
                "protocolVersion": "2025-06-18",
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "tiny", "version": "1"},
            }),
            "tools/list" => json!({"tools": [
                {"name": "echo", "inputSchema": {"type": "object"}},
                {"name": "secret", "inputSchema": {"type": "object"}},
            ]}),
            // A call that never gets its answer (to have one in flight).
            "tools/call" if v["params"]["arguments"]["text"] == "hang" => {
                let _ = events.send("hang".into());
                continue;
            }
            "tools/call" => json!({"content": [{
                "type": "text",
                "text": format!("{}:{}", v["params"]["name"].as_str().unwrap_or(""), v["params"]["arguments"]["text"].as_str().unwrap_or("")),
            }]}),
            _ => json!({}),
        };
        let answer = json!({"jsonrpc": "2.0", "id": id, "result": result});
        if w.write_all(format!("{answer}\n").as_bytes()).await.is_err() {
            return;
        }
    }
}

/// An upstream that runs [`tiny_server`] per session, telling `events` the caller alias of
/// each session it opens (and each call it holds).
fn tiny_upstream(opened: mpsc::UnboundedSender<String>) -> UpstreamSpec {
    UpstreamSpec::Embedded(Embedded::new(move |session: &Session| {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        let _ = opened.send(session.caller_alias.clone().unwrap_or_default());
        tokio::spawn(tiny_server(theirs, opened.clone()));
        Ok(Box::new(ours) as Box<dyn crate::mcp::EmbeddedIo>)
    }))
}

struct Setup {
    _net: TestNet,
    _dir: tempfile::TempDir,
    home: Home,
    tool: Arc<Node>,
    agent: Node,
    agent_id: Arc<Identity>,
    service: EmbeddedMcp,
    opened: mpsc::UnboundedReceiver<String>,
    _running: crate::tasks::OwnedTask<()>,
}

const POLICY: &str = "[mcp.tools.allow.\"agent\"]\ntools = [\"echo\"]\n";

async fn setup(policy: &str) -> Setup {
    let net = TestNet::start().await;
    let tool_id = Arc::new(Identity::generate().unwrap());
    let agent_id = Arc::new(Identity::generate().unwrap());
    let tool = Arc::new(
        net.node_unchecked(tool_id.clone(), nullport_tests::fast_limits())
            .await,
    );
    let agent = net
        .node_unchecked(agent_id.clone(), nullport_tests::fast_limits())
        .await;
    for n in [&*tool, &agent] {
        n.wait_online(Duration::from_secs(5)).await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let home = Home::at(dir.path());
    std::fs::write(
        home.trust(),
        format!("[peers]\nagent = \"{}\"\n", agent_id.node_id()),
    )
    .unwrap();
    std::fs::write(home.policy(), policy).unwrap();
    let (tx, opened) = mpsc::unbounded_channel();
    let audit = Audit::open(&home.audit(), &tool_id, Default::default()).unwrap();
    let service = EmbeddedMcp::new(tool_id, "tools", tiny_upstream(tx), &home, audit).unwrap();
    // Route the node's incoming channels to the service, as an embedder does.
    let (route, incoming) = mpsc::channel(8);
    let running = {
        let (service, tool) = (service.clone(), tool.clone());
        crate::tasks::OwnedTask::spawn(async move {
            let feed = async {
                while let Some(next) = tool.accept().await {
                    if route.send(next).await.is_err() {
                        return;
                    }
                }
            };
            tokio::join!(feed, service.run(incoming));
        })
    };
    Setup {
        _net: net,
        _dir: dir,
        home,
        tool,
        agent,
        agent_id,
        service,
        opened,
        _running: running,
    }
}

/// The caller side: caller_pipe over a dialled channel, with a local end to talk through.
struct Client {
    lines: tokio::io::Lines<BufReader<tokio::io::ReadHalf<DuplexStream>>>,
    write: tokio::io::WriteHalf<DuplexStream>,
    receipts: mpsc::UnboundedReceiver<CheckedReceipt>,
    pipe: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Client {
    async fn connect(s: &Setup) -> Client {
        let channel = s.agent.dial(s.tool.node_id(), "tools").await.unwrap();
        let session = Session {
            caller: s.agent.node_id(),
            service: "tools".into(),
            handshake: *channel.handshake_hash(),
            signer: s.agent_id.clone(),
            caller_alias: None,
        };
        let (local, ours) = tokio::io::duplex(1 << 16);
        let (tx, receipts) = mpsc::unbounded_channel();
        let callee = s.tool.node_id();
        let pipe = tokio::spawn(caller_pipe_with(
            local,
            channel,
            session,
            callee,
            Audit::disabled(),
            None,
            Some(tx),
        ));
        let (r, write) = tokio::io::split(ours);
        Client {
            lines: BufReader::new(r).lines(),
            write,
            receipts,
            pipe,
        }
    }

    async fn send(&mut self, v: Value) {
        self.write
            .write_all(format!("{v}\n").as_bytes())
            .await
            .unwrap();
    }

    async fn next(&mut self) -> Option<Value> {
        let line = self.lines.next_line().await.unwrap()?;
        Some(serde_json::from_str(&line).unwrap())
    }

    async fn call(&mut self, id: u64, method: &str, params: Value) -> Value {
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        self.next().await.unwrap()
    }

    async fn initialize(&mut self) {
        let init = self
            .call(
                1,
                "initialize",
                json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}),
            )
            .await;
        assert_eq!(init["result"]["serverInfo"]["name"], "tiny", "{init}");
        self.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_process_server_behind_the_firewall_with_receipts() {
    let mut s = setup(POLICY).await;
    let mut c = Client::connect(&s).await;
    c.initialize().await;
    assert_eq!(s.opened.recv().await.as_deref(), Some("agent"));
    let list = c.call(2, "tools/list", json!({})).await;
    assert_eq!(
        list["result"]["tools"].as_array().map(Vec::len),
        Some(1),
        "{list}"
    );
    assert_eq!(list["result"]["tools"][0]["name"], "echo");
    let echo = c
        .call(
            3,
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "hi"}}),
        )
        .await;
    assert_eq!(echo["result"]["content"][0]["text"], "echo:hi", "{echo}");
    let secret = c
        .call(4, "tools/call", json!({"name": "secret", "arguments": {}}))
        .await;
    assert_eq!(
        secret["error"]["code"],
        crate::mcp::firewall::DENIED,
        "{secret}"
    );
    // One checked receipt per call, allowed and denied, both valid, in order.
    for (id, decision) in [("3", "allowed"), ("4", "denied")] {
        let r = c.receipts.recv().await.unwrap();
        assert!(r.valid, "{r:?}");
        assert_eq!(
            (r.receipt.id.as_str(), r.receipt.decision.as_str()),
            (id, decision)
        );
        assert_eq!(r.receipt.callee, s.tool.node_id().to_string());
    }
    // The caller closes: the session ends at both ends, and the in-process server's stream
    // is shut (its task ends), nothing left open.
    c.write.shutdown().await.unwrap();
    assert!(c.next().await.is_none());
    c.pipe.await.unwrap().unwrap();
    let audit = std::fs::read_to_string(s.home.audit()).unwrap();
    assert!(
        audit.contains("\"outcome\":\"denied\"") && audit.contains("\"role\":\"issued\""),
        "{audit}"
    );
    for _ in 0..100 {
        if s.service.open_sessions() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.service.open_sessions(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_without_a_rule_is_refused_with_the_daemons_reason() {
    let mut s = setup("[mcp.tools.allow.\"someone-else\"]\ntools = [\"*\"]\n").await;
    let err = s.agent.dial(s.tool.node_id(), "tools").await.unwrap_err();
    assert!(
        matches!(
            err,
            nullport_node::Error::Denied {
                reason: DenyReason::NotAllowed,
                ..
            }
        ),
        "{err}"
    );
    // Another service name than the one served: unknown, as at the daemon.
    let err = s.agent.dial(s.tool.node_id(), "other").await.unwrap_err();
    assert!(
        matches!(
            err,
            nullport_node::Error::Denied {
                reason: DenyReason::UnknownService,
                ..
            }
        ),
        "{err}"
    );
    assert!(s.opened.try_recv().is_err(), "no session was opened");
    let audit = std::fs::read_to_string(s.home.audit()).unwrap();
    assert!(
        audit.contains("no policy rule allows this caller"),
        "{audit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_rule_ends_the_live_session() {
    let mut s = setup(POLICY).await;
    let mut c = Client::connect(&s).await;
    c.initialize().await;
    let echo = c
        .call(
            2,
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "a"}}),
        )
        .await;
    assert_eq!(echo["result"]["content"][0]["text"], "echo:a");
    // A request in flight when access goes: it is answered with the channel's end.
    c.send(json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "hang"}}}))
        .await;
    assert_eq!(s.opened.recv().await.as_deref(), Some("agent"));
    assert_eq!(s.opened.recv().await.as_deref(), Some("hang"));
    assert_eq!(s.service.open_sessions(), 1);
    std::fs::write(s.home.policy(), "").unwrap();
    s.service.reload().unwrap();
    let mut ended = None;
    let drained = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(v) = c.next().await {
            if v["id"] == 3 {
                ended = Some(v);
            }
        }
    })
    .await;
    assert!(drained.is_ok(), "the session was not ended by the reload");
    let ended = ended.unwrap_or_default();
    assert_eq!(ended["error"]["code"], crate::mcp::CHANNEL_ENDED, "{ended}");
    let err = c.pipe.await.unwrap().unwrap_err();
    let aborted = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<nullport_protocol::Error>())
        .cloned();
    assert!(
        matches!(
            aborted,
            Some(nullport_protocol::Error::Aborted {
                reason: DenyReason::NotAllowed,
                ..
            })
        ),
        "{err}"
    );
    // The sweep ends the channel, then audits why: the caller may see the end first.
    let closed = |a: &str| a.contains("\"outcome\":\"closed\"") && a.contains("no policy rule");
    let mut audit = String::new();
    for _ in 0..200 {
        audit = std::fs::read_to_string(s.home.audit()).unwrap();
        if closed(&audit) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(closed(&audit), "{audit}");
    // And a new channel is refused.
    let err = s.agent.dial(s.tool.node_id(), "tools").await.unwrap_err();
    assert!(matches!(
        err,
        nullport_node::Error::Denied {
            reason: DenyReason::NotAllowed,
            ..
        }
    ));
}
