//! The caller side's receipts as an embedder gets them: one per call this side made, never
//! the ones a callee sends unasked.

use std::sync::Arc;

use nullport_protocol::Identity;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream, Lines};

use super::*;
use crate::mcp::receipt::Receipt;

struct Pipe {
    caller: Arc<Identity>,
    callee: Identity,
    handshake: [u8; 32],
    /// The local MCP client's end.
    client: DuplexStream,
    /// The callee's end of the channel, read line by line.
    peer: Lines<BufReader<DuplexStream>>,
    receipts: tokio::sync::mpsc::UnboundedReceiver<CheckedReceipt>,
    /// The caller's audit log.
    audit: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Pipe {
    /// The receipt events in the caller's audit log.
    fn audited_receipts(&self) -> usize {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"receipt\""))
            .count()
    }
}

fn start() -> Pipe {
    let caller = Arc::new(Identity::generate().unwrap());
    let callee = Identity::generate().unwrap();
    let handshake = [7u8; 32];
    let session = Session {
        caller: caller.node_id(),
        service: "files".into(),
        handshake,
        signer: caller.clone(),
        caller_alias: None,
    };
    let (local, client) = tokio::io::duplex(1 << 20);
    let (channel, peer) = tokio::io::duplex(1 << 20);
    let (sink, receipts) = tokio::sync::mpsc::unbounded_channel();
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.log");
    let log = Audit::open(&audit, &caller, Default::default()).unwrap();
    tokio::spawn(caller_pipe_with(
        local,
        channel,
        session,
        callee.node_id(),
        log,
        None,
        Some(sink),
    ));
    Pipe {
        caller,
        callee,
        handshake,
        client,
        peer: BufReader::new(peer).lines(),
        receipts,
        audit,
        _dir: dir,
    }
}

/// Sends `line` from the callee, then a notification, and waits until the client has the
/// notification: everything before it has been handled by then.
async fn from_callee_then_sync(p: &mut Pipe, line: &[u8]) {
    let peer = p.peer.get_mut().get_mut();
    peer.write_all(line).await.unwrap();
    peer.write_all(b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{}}\n")
        .await
        .unwrap();
    let mut client = BufReader::new(&mut p.client);
    loop {
        let mut got = String::new();
        client.read_line(&mut got).await.unwrap();
        assert!(!got.is_empty(), "the pipe ended");
        if got.contains("notifications/message") {
            return;
        }
    }
}

#[tokio::test]
async fn receipts_nobody_asked_for_never_reach_the_embedder() {
    let mut p = start();
    // 200 correctly signed receipts, for calls this side never made.
    let mut unasked = Vec::new();
    for i in 0..200 {
        let r = Receipt::sign(
            &p.callee,
            &p.handshake,
            &p.caller.node_id(),
            &json!(i),
            "00",
            "allowed",
            "00",
        );
        assert!(r.verify());
        unasked.extend_from_slice(&r.notification());
    }
    from_callee_then_sync(&mut p, &unasked).await;
    assert!(p.receipts.try_recv().is_err());
    assert_eq!(p.audited_receipts(), 0);
}

#[tokio::test]
async fn the_receipt_of_a_call_made_reaches_the_embedder_checked() {
    let mut p = start();
    let call = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"read\"}}\n";
    p.client.write_all(call).await.unwrap();
    // The callee sees the request signature, then the call.
    let signature = p.peer.next_line().await.unwrap().unwrap();
    assert!(signature.contains("signature"), "{signature}");
    let sent = p.peer.next_line().await.unwrap().unwrap();
    assert!(sent.contains("tools/call"), "{sent}");
    let answer = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"content\":[]}}\n";
    // A receipt for that call whose digests are wrong: handed over, marked invalid.
    let r = Receipt::sign(
        &p.callee,
        &p.handshake,
        &p.caller.node_id(),
        &json!(1),
        "00",
        "allowed",
        "00",
    );
    let mut lines = answer.to_vec();
    lines.extend_from_slice(&r.notification());
    from_callee_then_sync(&mut p, &lines).await;
    let got = p.receipts.try_recv().unwrap();
    assert_eq!(got.receipt, r);
    assert!(!got.valid);
    assert!(p.receipts.try_recv().is_err());
    assert_eq!(p.audited_receipts(), 1);
}
