//! The caller side of an MCP session (`nullport mcp bridge`): a local MCP client's lines
//! over the channel, each `tools/call` signed, each receipt checked.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use nullport_protocol::NodeId;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

use super::firewall::{MAX_MESSAGE, loose_id_key, respelled_answer};
use super::pins::Pins;
use super::receipt;
use super::session::*;
use crate::audit::Audit;

/// The JSON-RPC error code a pending request gets when the channel ends under it (in the
/// range JSON-RPC leaves to implementations).
pub const CHANNEL_ENDED: i64 = -32003;

/// A callee's receipt as the caller side received it, and whether it checked out: signed
/// by the callee, for this caller and channel, over the request this side sent and the
/// answer it received.
#[derive(Debug, Clone)]
pub struct CheckedReceipt {
    /// The receipt.
    pub receipt: receipt::Receipt,
    /// Whether every check passed.
    pub valid: bool,
}

/// Where an embedder receives the receipts [`caller_pipe_with`] checked.
pub type ReceiptSink = tokio::sync::mpsc::UnboundedSender<CheckedReceipt>;

/// The caller's side of an MCP session (`nullport mcp bridge`): relays lines between the
/// local MCP client and the channel, signs each `tools/call` it sends (announced just before
/// it), and checks the callee's receipts (audited, not passed to the client).
pub async fn caller_pipe<L, C>(
    local: L,
    channel: C,
    session: Session,
    callee: NodeId,
    audit: Audit,
    pins: Option<(Arc<Pins>, String)>,
) -> std::io::Result<()>
where
    L: AsyncRead + AsyncWrite + Unpin,
    C: AsyncRead + AsyncWrite + Unpin,
{
    caller_pipe_with(local, channel, session, callee, audit, pins, None).await
}

/// [`caller_pipe`], handing each checked receipt to `receipts` as well (for an embedder that
/// shows them to its caller; the local client still never sees them).
pub async fn caller_pipe_with<L, C>(
    local: L,
    channel: C,
    session: Session,
    callee: NodeId,
    audit: Audit,
    pins: Option<(Arc<Pins>, String)>,
    receipts: Option<ReceiptSink>,
) -> std::io::Result<()>
where
    L: AsyncRead + AsyncWrite + Unpin,
    C: AsyncRead + AsyncWrite + Unpin,
{
    let (local_r, local_w) = tokio::io::split(local);
    // Written by both directions: answers from the channel, and refusals of calls to tools
    // held by this side's pins.
    let local_w = tokio::sync::Mutex::new(local_w);
    // `tools/list` requests in flight, whose answers this side's pins check.
    let listing: Mutex<HashSet<String>> = Mutex::new(HashSet::new());
    let (channel_r, mut channel_w) = tokio::io::split(channel);
    let pending: Mutex<HashMap<String, (String, Option<String>)>> = Mutex::new(HashMap::new());
    // Requests sent and not answered yet: if the channel ends, each gets an error answer
    // (the client sees why at once instead of waiting forever).
    let awaiting: Mutex<HashMap<String, serde_json::Value>> = Mutex::new(HashMap::new());
    // Set once a receipt nobody asked for was dropped (warned about once per session).
    let unasked_warned = AtomicBool::new(false);
    let handshake_hex: String = session
        .handshake
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let up = async {
        let mut input = BufReader::new(local_r);
        loop {
            match read_line(&mut input, MAX_MESSAGE).await? {
                Line::Message(line) => {
                    let request = serde_json::from_slice::<serde_json::Value>(&line)
                        .ok()
                        .filter(|v| v.get("method").is_some());
                    if let Some((pins, scope)) = &pins
                        && let Some(v) = &request
                        && let Some(refusal) = held_call(pins, scope, v)
                    {
                        let mut w = local_w.lock().await;
                        w.write_all(refusal.as_bytes()).await?;
                        w.flush().await?;
                        continue;
                    }
                    if let Some(v) = &request
                        && let Some(id) = v.get("id")
                        && let Some(key) = id_key(id)
                    {
                        if pins.is_some()
                            && v["method"] == "tools/list"
                            && let Ok(mut l) = listing.lock()
                        {
                            l.insert(key.clone());
                        }
                        if let Ok(mut a) = awaiting.lock() {
                            a.insert(key, id.clone());
                        }
                    }
                    if let Some(id) = raw_tool_call_id(&line) {
                        let sha = receipt::digest(&line);
                        let sig = receipt::RequestSignature::sign(
                            &session.signer,
                            &session.handshake,
                            &sha,
                        );
                        audit.record(signature_event(&session, Some(&sig), true));
                        channel_w.write_all(&sig.notification()).await?;
                        if let (Some(key), Ok(mut p)) = (id_key(&id), pending.lock()) {
                            p.insert(key, (sha, None));
                        }
                    }
                    channel_w.write_all(&line).await?;
                    channel_w.write_all(b"\n").await?;
                }
                Line::TooLong => {
                    // Let the callee's firewall answer it, as it would for any oversize line.
                    channel_w.write_all(&vec![b' '; MAX_MESSAGE + 1]).await?;
                    channel_w.write_all(b"\n").await?;
                }
                Line::End => {
                    channel_w.shutdown().await?;
                    return Ok::<(), std::io::Error>(());
                }
            }
        }
    };
    // Answers every request still waiting, with the reason the channel ended (the client sees
    // why at once instead of waiting forever).
    let answer_waiting = |reason: String| {
        let waiting: Vec<serde_json::Value> = awaiting
            .lock()
            .map(|mut a| a.drain().map(|(_, id)| id).collect())
            .unwrap_or_default();
        waiting
            .into_iter()
            .map(|id| {
                let answer = serde_json::json!({
                    "jsonrpc": "2.0",
                    "id": id,
                    "error": {"code": CHANNEL_ENDED, "message": format!("nullport: {reason}")},
                });
                format!("{answer}\n")
            })
            .collect::<String>()
    };
    let down = async {
        let mut input = BufReader::new(channel_r);
        loop {
            let next = match read_line(&mut input, 64 << 20).await {
                Ok(next) => next,
                Err(e) => {
                    // The channel broke, or the callee took access away.
                    let answers = answer_waiting(e.to_string());
                    let mut w = local_w.lock().await;
                    let _ = w.write_all(answers.as_bytes()).await;
                    let _ = w.shutdown().await;
                    return Err(e);
                }
            };
            match next {
                Line::Message(line) => {
                    if line
                        .windows(receipt::RECEIPT_METHOD.len())
                        .any(|w| w == receipt::RECEIPT_METHOD.as_bytes())
                        && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&line)
                        && v["method"] == receipt::RECEIPT_METHOD
                    {
                        if let Ok(r) =
                            serde_json::from_value::<receipt::Receipt>(v["params"].clone())
                        {
                            let expected = serde_json::from_str::<serde_json::Value>(&r.id)
                                .ok()
                                .and_then(|id| id_key(&id))
                                .and_then(|k| pending.lock().ok()?.remove(&k));
                            // A receipt answers one call this side sent, once: only those
                            // are audited and handed to the embedder, so a callee cannot
                            // grow the audit log or the embedder's list without bound by
                            // sending receipts nobody asked for (dropped, warned once).
                            if expected.is_none() {
                                if !unasked_warned.swap(true, Ordering::Relaxed) {
                                    tracing::warn!(peer = %callee.fmt_short(), "dropping MCP receipts for calls this side did not make (or already has a receipt for)");
                                }
                                continue;
                            }
                            let valid = r.verify()
                                && r.callee == callee.to_string()
                                && r.caller == session.signer.node_id().to_string()
                                && r.handshake == handshake_hex
                                && expected.is_some_and(|(req, res)| {
                                    req == r.request_sha256
                                        && res.as_deref() == Some(r.result_sha256.as_str())
                                });
                            if !valid {
                                tracing::warn!(peer = %callee.fmt_short(), "MCP receipt does not match what was sent and received");
                            }
                            audit.record(receipt_event(&r, "received", valid));
                            if let Some(sink) = &receipts {
                                let _ = sink.send(CheckedReceipt { receipt: r, valid });
                            }
                        }
                        continue;
                    }
                    // Only well-formed messages, classified strictly, reach the client, and
                    // as this side encodes them (a line this side cannot read, a `method`
                    // that is not a string, an answer with both or neither of result and
                    // error: an SDK might read them otherwise than the checks here do).
                    let Some(parsed) = serde_json::from_slice::<serde_json::Value>(&line)
                        .ok()
                        .filter(serde_json::Value::is_object)
                    else {
                        tracing::warn!(peer = %callee.fmt_short(), "dropping an unreadable message from the peer");
                        continue;
                    };
                    let (result, error) = (
                        parsed.get("result").is_some(),
                        parsed.get("error").is_some(),
                    );
                    let is_request = parsed
                        .get("method")
                        .is_some_and(serde_json::Value::is_string)
                        && !result
                        && !error;
                    let is_answer = parsed.get("method").is_none() && result != error;
                    if !is_request && !is_answer {
                        tracing::warn!(peer = %callee.fmt_short(), "dropping an ambiguous message from the peer");
                        continue;
                    }
                    let received = line;
                    let mut line = serde_json::to_vec(&parsed).unwrap_or_default();
                    let answer = is_answer.then_some(&parsed);
                    let key = answer.and_then(|v| v.get("id")).and_then(id_key);
                    let asked = key
                        .as_ref()
                        .is_some_and(|k| awaiting.lock().is_ok_and(|mut a| a.remove(k).is_some()));
                    // (An error about a line that could not be read has id null: it passes.)
                    let unreadable = answer.is_some_and(|v| {
                        v.get("id") == Some(&serde_json::Value::Null) && v.get("result").is_none()
                    });
                    if answer.is_some() && !asked && !unreadable {
                        // An answer to nothing the client asked, or a second one: the client's
                        // SDK might take it anyway. Dropped; if it answers a request in flight
                        // under another spelling of its id (`"1"` for `1`), that request gets
                        // an error instead of waiting forever.
                        tracing::warn!(peer = %callee.fmt_short(), "dropping an answer to no request in flight");
                        let sent = answer
                            .and_then(|v| v.get("id"))
                            .cloned()
                            .unwrap_or_default();
                        let original = loose_id_key(&sent).and_then(|loose| {
                            let mut a = awaiting.lock().ok()?;
                            let key = a
                                .iter()
                                .find(|(_, id)| loose_id_key(id).as_ref() == Some(&loose))
                                .map(|(k, _)| k.clone())?;
                            a.remove(&key)
                        });
                        if let Some(original) = original {
                            let mut w = local_w.lock().await;
                            w.write_all(&respelled_answer(&original, &sent)).await?;
                            w.flush().await?;
                        }
                        continue;
                    }
                    if let (Some(v), Some(key)) = (answer.cloned(), key) {
                        if let Ok(mut p) = pending.lock()
                            && let Some(entry) = p.get_mut(&key)
                        {
                            entry.1 = Some(receipt::digest(&received));
                        }
                        let listed = listing.lock().is_ok_and(|mut l| l.remove(&key));
                        if listed && let Some((pins, scope)) = &pins {
                            line = checked_list(pins, scope, v);
                        }
                    }
                    let mut w = local_w.lock().await;
                    w.write_all(&line).await?;
                    w.write_all(b"\n").await?;
                    w.flush().await?;
                }
                Line::TooLong => tracing::warn!("dropping an oversize message from the peer"),
                Line::End => {
                    // The tool host closed the session (its MCP server exited).
                    let answers = answer_waiting(
                        "the tool host closed the session before answering (its MCP server ended)"
                            .into(),
                    );
                    let mut w = local_w.lock().await;
                    let _ = w.write_all(answers.as_bytes()).await;
                    let _ = w.shutdown().await;
                    return Ok::<(), std::io::Error>(());
                }
            }
        }
    };
    // The client may stop sending and still wait for answers; once the channel has ended
    // there is nothing more to send it.
    tokio::pin!(up, down);
    tokio::select! {
        sent = &mut up => {
            let received = down.await;
            sent.and(received)
        }
        received = &mut down => received,
    }
}

/// The refusal of a `tools/call` to a tool this side's pins hold (changed or new at the
/// tool host since it was pinned here), if it is one.
fn held_call(pins: &Pins, scope: &str, request: &serde_json::Value) -> Option<String> {
    if request["method"] != "tools/call" {
        return None;
    }
    let tool = request["params"]["name"].as_str()?;
    let refusal = pins.call_allowed(scope, tool).err()?;
    let id = request.get("id")?;
    let answer = serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {
            "code": super::firewall::DENIED,
            "message": format!("nullport (this side's pins): {refusal}; see `nullport mcp pins`"),
        },
    });
    Some(format!("{answer}\n"))
}

/// A `tools/list` answer with the tools this side's pins hold taken out (the first list
/// pins them all).
fn checked_list(pins: &Pins, scope: &str, mut answer: serde_json::Value) -> Vec<u8> {
    if let Some(tools) = answer
        .get_mut("result")
        .and_then(|r| r.get_mut("tools"))
        .and_then(serde_json::Value::as_array_mut)
    {
        pins.check_list(scope, tools);
    }
    serde_json::to_vec(&answer).unwrap_or_default()
}

#[cfg(test)]
#[path = "caller_tests.rs"]
mod tests;
