//! JSON-RPC ids and message kinds between a caller and a server: exact ids as map keys,
//! the loose matching the SDKs do (to recognise a respelled answer), and the strict
//! classification of what a server sends.

use serde_json::{Map, Value};

/// An id as the MCP SDKs match answers to requests, loosely (`"1"`, `1` and `1.0` alike):
/// how an answer under a respelled id is recognised (and refused) instead of left waiting.
pub(crate) fn loose_id_key(id: &serde_json::Value) -> Option<String> {
    let number = match id {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => js_number(s),
        _ => return None,
    };
    match (number, id) {
        (Some(n), _) if n.is_finite() => Some(format!("n:{n}")),
        (_, serde_json::Value::String(s)) => Some(format!("s:{s}")),
        _ => None,
    }
}

/// A string as JavaScript's `Number()` reads it (the TypeScript SDK matches answers with it):
/// trimmed, empty is 0, `0x`/`0o`/`0b` prefixes, decimal otherwise.
fn js_number(s: &str) -> Option<f64> {
    let t = s.trim();
    if t.is_empty() {
        return Some(0.0);
    }
    let radix = |prefix: [&str; 2], radix| {
        prefix
            .iter()
            .find_map(|p| t.strip_prefix(p))
            .and_then(|digits| u64::from_str_radix(digits, radix).ok())
            .map(|n| n as f64)
    };
    radix(["0x", "0X"], 16)
        .or_else(|| radix(["0o", "0O"], 8))
        .or_else(|| radix(["0b", "0B"], 2))
        .or_else(|| t.parse::<f64>().ok())
}

/// The error a client gets for a request the other side answered under a respelled id (the
/// answer itself is dropped: it would pass unchecked).
pub(crate) fn respelled_answer(original: &serde_json::Value, sent: &serde_json::Value) -> Vec<u8> {
    let answer = serde_json::json!({
        "jsonrpc": "2.0",
        "id": original,
        "error": {
            "code": -32603,
            "message": format!("nullport: the MCP server answered under another id ({sent} for {original}); the answer was dropped"),
        },
    });
    let mut line = serde_json::to_vec(&answer).unwrap_or_default();
    line.push(b'\n');
    line
}

/// Id of a request, exactly as sent (`1`, `"1"` and `1.0` differ), as a map key.
pub(crate) fn id_key(id: &Value) -> Option<String> {
    match id {
        Value::String(s) => Some(format!("s:{s}")),
        Value::Number(n) => Some(format!("n:{n}")),
        _ => None,
    }
}

/// A caller request the server may answer: its id as sent, and whether the server has it
/// yet (a call waiting for a person does not: an answer to it is a forgery).
#[derive(Debug)]
pub(super) struct InFlight {
    pub(super) id: Value,
    pub(super) sent: bool,
}

/// What a message from the server is, classified strictly: anything else is dropped.
pub(super) enum FromServer {
    /// A request or notification: `method` a string, no `result` or `error`.
    Request,
    /// An answer: no `method`, exactly one of `result` and `error`.
    Answer,
}

pub(super) fn classify(msg: &Map<String, Value>) -> Option<FromServer> {
    let (result, error) = (msg.contains_key("result"), msg.contains_key("error"));
    match msg.get("method") {
        Some(Value::String(_)) if !result && !error => Some(FromServer::Request),
        None if result != error => Some(FromServer::Answer),
        _ => None,
    }
}
